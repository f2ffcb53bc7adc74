// io/atomic_file.h -- replacing a file atomically and durably: the bytes go to
// a temporary file beside it (name suffixed with the process id), which is
// fsync'd and renamed over the target, then the folder is fsync'd. Readers
// see the old file or the new one, never a mix; on any failure (a short
// write, a full disk, a file-size limit) the temporary file is removed, the
// old file is untouched, and an npid::Error (kIo) names the file and why.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace npid {

struct ByteRange {
  const void* data;
  std::size_t size;
};

// Writes the ranges, in order, as the new contents of `path`.
void write_file_atomic(const std::string& path, const std::vector<ByteRange>& pieces);
// A small text file (JSON, SVG, ...).
void write_text_atomic(const std::string& path, const std::string& text);

}  // namespace npid

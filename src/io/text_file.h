// io/text_file.h -- writing a small text file (JSON, SVG, ...) atomically:
// a temporary file beside it, then rename, so readers see the old file or the
// new one. Errors are npid::Error (kIo) naming the file.
#pragma once

#include <string>

namespace npid {

void write_text_atomic(const std::string& path, const std::string& text);

}  // namespace npid

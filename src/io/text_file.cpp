#include "io/text_file.h"

#include <cstdio>
#include <fstream>

#include "npid/error.h"

namespace npid {

void write_text_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp);
    f << text;
    if (!f) throw Error(ErrorKind::kIo, path + ": cannot write");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error(ErrorKind::kIo, path + ": cannot rename the temporary file into place");
  }
}

}  // namespace npid

// The CIFAR-10 binary format: records of <1 label byte><3072 bytes: R, G, B
// planes of 32x32>, 10,000 per file.
#include <filesystem>
#include <fstream>

#include "npid/data.h"
#include "npid/error.h"

namespace npid {
namespace fs = std::filesystem;

bool is_cifar10_binary_dir(const std::string& dir) {
  std::error_code ec;
  return fs::is_regular_file(fs::path(dir) / "data_batch_1.bin", ec) ||
         fs::is_regular_file(fs::path(dir) / "test_batch.bin", ec);
}

ImageSet load_cifar10_binary(const std::string& dir, Split split) {
  constexpr std::int64_t kSide = 32, kRecord = 1 + 3 * kSide * kSide;
  std::vector<std::string> names;
  if (split == Split::kTrain) {
    for (int i = 1; i <= 5; ++i) names.push_back("data_batch_" + std::to_string(i) + ".bin");
  } else {
    names.push_back("test_batch.bin");
  }
  std::vector<std::string> classes = {"airplane", "automobile", "bird",  "cat",  "deer",
                                      "dog",      "frog",       "horse", "ship", "truck"};
  {
    std::ifstream meta(fs::path(dir) / "batches.meta.txt");
    std::vector<std::string> read;
    for (std::string line; std::getline(meta, line);) {
      if (!line.empty()) read.push_back(line);
    }
    if (read.size() == classes.size()) classes = read;
  }
  ImageSetBuilder builder;
  std::vector<std::uint8_t> record(kRecord), hwc(3 * kSide * kSide);
  for (const std::string& name : names) {
    const std::string path = (fs::path(dir) / name).string();
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in) throw Error(ErrorKind::kIo, path + ": cannot open (expected the CIFAR-10 binary version)");
    const std::int64_t size = static_cast<std::int64_t>(in.tellg());
    if (size <= 0 || size % kRecord != 0) {
      throw Error(ErrorKind::kIo, path + ": size " + std::to_string(size) +
                                      " is not a positive multiple of the 3073-byte record");
    }
    in.seekg(0);
    for (std::int64_t r = 0; r < size / kRecord; ++r) {
      if (!in.read(reinterpret_cast<char*>(record.data()), kRecord)) {
        throw Error(ErrorKind::kIo, path + ": read failed at record " + std::to_string(r));
      }
      const std::int64_t label = record[0];
      if (label >= static_cast<std::int64_t>(classes.size())) {
        throw Error(ErrorKind::kIo, path + ": record " + std::to_string(r) + " has label " +
                                        std::to_string(label) + ", expected 0..9");
      }
      for (std::int64_t p = 0; p < kSide * kSide; ++p) {
        for (int c = 0; c < 3; ++c) hwc[3 * p + c] = record[1 + c * kSide * kSide + p];
      }
      builder.add(hwc.data(), kSide, kSide, label);
    }
  }
  return builder.finish(classes);
}

}  // namespace npid

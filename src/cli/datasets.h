// cli/datasets.h -- what `--data` names: "synthetic[:TRAIN[:TEST]]" (the
// built-in procedural set), a CIFAR-10 binary directory, or a directory with
// train/ and test/ image folders.
#pragma once

#include <string>

#include "npid/data.h"

namespace npid::cli {

struct DataSplits {
  ImageSet train, test;
  std::string description;
};

// image_size: the synthetic set's resolution; threads: decoding threads.
DataSplits load_data(const std::string& spec, std::int64_t image_size, std::uint64_t seed, int threads);

}  // namespace npid::cli

// cli/datasets.h -- what `--data` names: "synthetic[:TRAIN[:TEST]]" (the
// built-in procedural set), a CIFAR-10 binary directory, a directory with
// train/ and test/ image folders, or one image folder (a seeded tenth of it
// held out as the test split).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "npid/data.h"

namespace npid::cli {

struct DataSplits {
  ImageSet train, test;                   // decoded (resident)
  ImageFolderIndex train_index, test_index;  // image folders read on demand (streaming)
  bool streaming = false;
  std::string description;
  DataSource train_source() const { return streaming ? DataSource(train_index) : DataSource(train); }
  DataSource test_source() const { return streaming ? DataSource(test_index) : DataSource(test); }
  // Keeps n_train / n_test images (0: all), spread evenly over each split
  // (rows floor(i * N / n)): image folders list their images class by class,
  // so a prefix would keep only the first classes. train_rows: the train rows
  // kept (empty: all), e.g. to pick the matching memory-bank rows.
  void limit(std::int64_t n_train, std::int64_t n_test);
  std::vector<std::int64_t> train_rows;
};

// Image folders with more than this many training images are streamed.
constexpr std::size_t kMaxResidentImages = 300000;
// Synthetic sets: at most this many images per split and bytes in all.
constexpr std::int64_t kMaxSyntheticImages = 10000000;
constexpr std::int64_t kMaxSyntheticBytes = std::int64_t(64) << 30;

// image_size: the synthetic set's resolution; threads: decoding threads;
// stream: read image folders batch by batch instead of decoding them up front
// (automatic above kMaxResidentImages training images).
DataSplits load_data(const std::string& spec, std::int64_t image_size, std::uint64_t seed, int threads,
                     bool stream = false);

}  // namespace npid::cli

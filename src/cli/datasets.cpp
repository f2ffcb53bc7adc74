#include "cli/datasets.h"

#include <filesystem>

#include "cli/options.h"
#include "npid/error.h"

namespace npid::cli {

void DataSplits::limit(std::int64_t n_train, std::int64_t n_test) {
  auto cut = [](ImageFolderIndex& idx, std::int64_t n) {
    if (n > 0 && n < static_cast<std::int64_t>(idx.files.size())) {
      idx.files.resize(static_cast<std::size_t>(n));
      idx.labels.resize(static_cast<std::size_t>(n));
    }
  };
  if (streaming) {
    cut(train_index, n_train);
    cut(test_index, n_test);
    return;
  }
  if (n_train > 0 && n_train < train.size()) train = train.slice(0, n_train);
  if (n_test > 0 && n_test < test.size()) test = test.slice(0, n_test);
}

DataSplits load_data(const std::string& spec, std::int64_t image_size, std::uint64_t seed, int threads,
                     bool stream) {
  DataSplits d;
  if (spec.rfind("synthetic", 0) == 0) {
    std::int64_t n_train = 10000, n_test = 2000;
    if (spec.size() > 9) {
      if (spec[9] != ':') throw OptionError("--data synthetic expects synthetic[:TRAIN[:TEST]], got '" + spec + "'");
      const std::string rest = spec.substr(10);
      const auto colon = rest.find(':');
      try {
        n_train = std::stoll(rest.substr(0, colon));
        if (colon != std::string::npos) n_test = std::stoll(rest.substr(colon + 1));
      } catch (const std::exception&) {
        throw OptionError("--data synthetic expects synthetic[:TRAIN[:TEST]] with integer counts, got '" + spec + "'");
      }
      if (n_train < 10 || n_test < 10)
        throw OptionError("--data synthetic expects at least 10 train and 10 test images, got '" + spec + "'");
    }
    SyntheticConfig sc;
    sc.image_size = image_size;
    sc.threads = threads;
    sc.count = n_train;
    sc.seed = seed;
    d.train = make_synthetic(sc);
    sc.count = n_test;
    sc.seed = seed ^ 0x7e57da7aULL;  // disjoint draws for the test split
    d.test = make_synthetic(sc);
    d.description = "synthetic shapes " + std::to_string(image_size) + "x" + std::to_string(image_size) + " (" +
                    std::to_string(n_train) + " train, " + std::to_string(n_test) + " test)";
    return d;
  }
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(spec, ec)) {
    throw OptionError("--data expects synthetic[:N[:M]], a CIFAR-10 binary directory, a directory with train/ and "
                      "test/ image folders, or one image folder, got '" + spec + "' (not a directory)");
  }
  if (is_cifar10_binary_dir(spec)) {
    d.train = load_cifar10_binary(spec, Split::kTrain);
    d.test = load_cifar10_binary(spec, Split::kTest);
    d.description = "CIFAR-10 binary " + spec;
    return d;
  }
  if (fs::is_directory(fs::path(spec) / "train", ec) && fs::is_directory(fs::path(spec) / "test", ec)) {
    const fs::path tr = fs::path(spec) / "train", te = fs::path(spec) / "test";
    d.train_index = scan_image_folder(tr.string());
    if (stream || d.train_index.files.size() > kMaxResidentImages) {
      d.test_index = scan_image_folder(te.string());
      d.streaming = true;
      d.description = "image folders " + spec + "/{train,test}, streamed (" +
                      std::to_string(d.train_index.files.size()) + " + " +
                      std::to_string(d.test_index.files.size()) + " images)";
      return d;
    }
    d.train_index = ImageFolderIndex();
    ImageFolderOptions o;
    o.threads = threads;
    d.train = load_image_folder((fs::path(spec) / "train").string(), o);
    d.test = load_image_folder((fs::path(spec) / "test").string(), o);
    d.description = "image folders " + spec + "/{train,test}";
    return d;
  }
  // One image folder (root/<class>/<files>): a seeded tenth is the test split.
  ImageFolderIndex all;
  try {
    all = scan_image_folder(spec);
  } catch (const Error&) {
    throw OptionError("--data " + spec + ": expected data_batch_*.bin (CIFAR-10 binary), train/ and test/ image "
                      "folders, or one image folder (<class>/<image files>)");
  }
  auto [train_index, test_index] = split_image_folder(all, 0.1, seed);
  d.description = "image folder " + spec + " (" + std::to_string(train_index.files.size()) + " train + " +
                  std::to_string(test_index.files.size()) + " held-out test images)";
  if (stream || train_index.files.size() > kMaxResidentImages) {
    d.train_index = std::move(train_index);
    d.test_index = std::move(test_index);
    d.streaming = true;
    d.description += ", streamed";
    return d;
  }
  ImageFolderOptions o;
  o.threads = threads;
  d.train = load_image_folder(train_index, o);
  d.test = load_image_folder(test_index, o);
  return d;
}

}  // namespace npid::cli

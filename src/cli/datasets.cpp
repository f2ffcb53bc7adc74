#include "cli/datasets.h"

#include <filesystem>

#include "cli/options.h"
#include "npid/error.h"

namespace npid::cli {

DataSplits load_data(const std::string& spec, std::int64_t image_size, std::uint64_t seed, int threads) {
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
    throw OptionError("--data expects synthetic[:N[:M]], a CIFAR-10 binary directory or a directory with train/ and "
                      "test/ image folders, got '" + spec + "' (not a directory)");
  }
  if (is_cifar10_binary_dir(spec)) {
    d.train = load_cifar10_binary(spec, Split::kTrain);
    d.test = load_cifar10_binary(spec, Split::kTest);
    d.description = "CIFAR-10 binary " + spec;
    return d;
  }
  if (fs::is_directory(fs::path(spec) / "train", ec) && fs::is_directory(fs::path(spec) / "test", ec)) {
    // The trainer and the evaluation keep the decoded set in memory (and on
    // the GPU as uint8); ImageNet-size folders need the streaming loader wired
    // into them, which is not done yet.
    constexpr std::size_t kMaxResident = 300000;
    const std::size_t files = scan_image_folder((fs::path(spec) / "train").string()).files.size();
    if (files > kMaxResident) {
      throw OptionError("--data " + spec + ": " + std::to_string(files) + " training images; the trainer keeps the "
                        "decoded set resident and supports up to " + std::to_string(kMaxResident) +
                        " (streaming training is not implemented yet)");
    }
    ImageFolderOptions o;
    o.threads = threads;
    d.train = load_image_folder((fs::path(spec) / "train").string(), o);
    d.test = load_image_folder((fs::path(spec) / "test").string(), o);
    d.description = "image folders " + spec + "/{train,test}";
    return d;
  }
  throw OptionError("--data " + spec + ": expected data_batch_*.bin (CIFAR-10 binary) or train/ and test/ image folders");
}

}  // namespace npid::cli

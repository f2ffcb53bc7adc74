#include "cli/datasets.h"

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "cli/options.h"
#include "npid/error.h"

namespace npid::cli {
namespace {

// train/ and test/ must name the same classes: each folder labels its sorted
// class directories 0..C-1, so a class missing from one shifts the labels.
void require_same_classes(const std::string& spec, const std::vector<std::string>& train,
                          const std::vector<std::string>& test) {
  if (train == test) return;
  std::string diff;
  for (const std::string& c : train)
    if (std::find(test.begin(), test.end(), c) == test.end()) diff += " '" + c + "' only in train/;";
  for (const std::string& c : test)
    if (std::find(train.begin(), train.end(), c) == train.end()) diff += " '" + c + "' only in test/;";
  diff.pop_back();
  throw OptionError("--data " + spec + ": expected train/ and test/ to hold the same class directories (their " +
                    "sorted names are the labels), got" + diff);
}

// A whole decimal count in [lo, hi] (no sign, no trailing characters).
std::int64_t count_of(const std::string& text, const std::string& spec, std::int64_t lo, std::int64_t hi) {
  const bool digits = !text.empty() && text.size() <= 18 &&
                      std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isdigit(c) != 0; });
  const std::int64_t v = digits ? std::stoll(text) : -1;
  if (!digits || v < lo || v > hi)
    throw OptionError("--data synthetic expects synthetic[:TRAIN[:TEST]] with counts in [" + std::to_string(lo) +
                      ", " + std::to_string(hi) + "], got '" + spec + "'");
  return v;
}

}  // namespace

void DataSplits::limit(std::int64_t n_train, std::int64_t n_test) {
  // Rows floor(i * N / n), i < n: evenly spread, increasing, distinct.
  auto spread = [](std::int64_t N, std::int64_t n) {
    std::vector<std::int64_t> rows;
    if (n <= 0 || n >= N) return rows;
    for (std::int64_t i = 0; i < n; ++i) rows.push_back(i * N / n);
    return rows;
  };
  auto cut = [](ImageFolderIndex& idx, const std::vector<std::int64_t>& rows) {
    if (rows.empty()) return;
    ImageFolderIndex out;
    out.root = idx.root;
    out.class_names = idx.class_names;
    for (std::int64_t r : rows) {
      out.files.push_back(idx.files[static_cast<std::size_t>(r)]);
      out.labels.push_back(idx.labels[static_cast<std::size_t>(r)]);
    }
    idx = std::move(out);
  };
  train_rows = spread(train_source().size(), n_train);
  const std::vector<std::int64_t> test_rows = spread(test_source().size(), n_test);
  if (streaming) {
    cut(train_index, train_rows);
    cut(test_index, test_rows);
    return;
  }
  if (!train_rows.empty()) train = train.select(train_rows);
  if (!test_rows.empty()) test = test.select(test_rows);
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
      // At most kMaxSyntheticImages per split (memory: count x S x S x 3 bytes).
      n_train = count_of(rest.substr(0, colon), spec, 10, kMaxSyntheticImages);
      if (colon != std::string::npos) n_test = count_of(rest.substr(colon + 1), spec, 10, kMaxSyntheticImages);
    }
    const double bytes = 3.0 * double(n_train + n_test) * double(image_size) * double(image_size);
    if (bytes > double(kMaxSyntheticBytes))
      throw OptionError("--data " + spec + ": expected at most " + std::to_string(kMaxSyntheticBytes >> 30) +
                        " GiB of synthetic pixels, got " + std::to_string(static_cast<long long>(bytes / (1 << 30))) +
                        " GiB at " + std::to_string(image_size) + "x" + std::to_string(image_size));
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
    d.test_index = scan_image_folder(te.string());
    require_same_classes(spec, d.train_index.class_names, d.test_index.class_names);
    if (stream || d.train_index.files.size() > kMaxResidentImages) {
      d.streaming = true;
      d.description = "image folders " + spec + "/{train,test}, streamed (" +
                      std::to_string(d.train_index.files.size()) + " + " +
                      std::to_string(d.test_index.files.size()) + " images)";
      return d;
    }
    ImageFolderOptions o;
    o.threads = threads;
    d.train = load_image_folder(d.train_index, o);
    d.test = load_image_folder(d.test_index, o);
    d.train_index = ImageFolderIndex();
    d.test_index = ImageFolderIndex();
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

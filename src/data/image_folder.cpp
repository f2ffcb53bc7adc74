// Image folder scanning and parallel decoding.
#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <thread>

#include "augment.h"  // epoch_permutation_cpu: the seeded split
#include "common/parallel.h"
#include "npid/data.h"
#include "npid/error.h"

namespace npid {
namespace fs = std::filesystem;
namespace {

bool has_image_extension(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

// The entries of `dir` (a filesystem failure -- no permission, a symlink loop
// -- is kIo naming the path, not std::filesystem_error).
std::vector<fs::directory_entry> entries_of(const fs::path& dir) {
  std::vector<fs::directory_entry> out;
  std::error_code ec;
  fs::directory_iterator it(dir, ec), end;
  for (; !ec && it != end; it.increment(ec)) out.push_back(*it);
  if (ec) throw Error(ErrorKind::kIo, dir.string() + ": cannot list the directory: " + ec.message());
  return out;
}

bool is_dir(const fs::directory_entry& e) {
  std::error_code ec;
  return e.is_directory(ec);
}

bool is_file(const fs::directory_entry& e) {
  std::error_code ec;
  return e.is_regular_file(ec);
}

}  // namespace

ImageFolderIndex scan_image_folder(const std::string& root) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    throw Error(ErrorKind::kIo, root + ": not a directory (expected root/<class>/<image files>)");
  }
  ImageFolderIndex index;
  index.root = root;
  for (const auto& entry : entries_of(root))
    if (is_dir(entry)) index.class_names.push_back(entry.path().filename().string());
  // Every class directory is a class, with or without images (torchvision's
  // find_classes): labels follow the sorted names, so that a train/ and a
  // test/ folder with the same class directories label them alike.
  std::sort(index.class_names.begin(), index.class_names.end());
  for (std::size_t label = 0; label < index.class_names.size(); ++label) {
    const std::string& cls = index.class_names[label];
    std::vector<std::string> names;
    for (const auto& entry : entries_of(fs::path(root) / cls)) {
      if (is_file(entry) && has_image_extension(entry.path())) names.push_back(entry.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    for (const std::string& n : names) {
      index.files.push_back(cls + "/" + n);
      index.labels.push_back(static_cast<std::int64_t>(label));
    }
  }
  if (index.files.empty()) {
    throw Error(ErrorKind::kIo, root +
                                    ": no images found (expected root/<class>/<file>.jpg|jpeg|png)");
  }
  return index;
}

ImageSet load_image_folder(const std::string& root, const ImageFolderOptions& options) {
  return load_image_folder(scan_image_folder(root), options);
}

std::pair<ImageFolderIndex, ImageFolderIndex> split_image_folder(const ImageFolderIndex& index, double test_fraction,
                                                                 std::uint64_t seed) {
  const auto n = static_cast<std::int64_t>(index.files.size());
  NPID_CHECK_ARG(n >= 2, "split_image_folder", "index", "expected at least 2 images, got " << n);
  NPID_CHECK_ARG(test_fraction > 0.0 && test_fraction < 1.0, "split_image_folder", "test_fraction",
                 "expected a fraction in (0, 1), got " << test_fraction);
  const std::int64_t n_test = std::clamp<std::int64_t>(std::llround(test_fraction * n), 1, n - 1);
  std::vector<std::int64_t> perm(static_cast<std::size_t>(n));
  epoch_permutation_cpu(seed, 0, n, perm.data());
  std::vector<char> is_test(static_cast<std::size_t>(n), 0);
  for (std::int64_t i = 0; i < n_test; ++i) is_test[perm[i]] = 1;
  ImageFolderIndex train, test;
  for (ImageFolderIndex* part : {&train, &test}) {
    part->root = index.root;
    part->class_names = index.class_names;
  }
  for (std::int64_t i = 0; i < n; ++i) {
    ImageFolderIndex& part = is_test[i] ? test : train;
    part.files.push_back(index.files[i]);
    part.labels.push_back(index.labels[i]);
  }
  return {std::move(train), std::move(test)};
}

ImageSet load_image_folder(const ImageFolderIndex& index, const ImageFolderOptions& options) {
  NPID_CHECK_ARG(options.limit >= 0, "load_image_folder", "options.limit",
                 "expected >= 0, got " << options.limit);
  NPID_CHECK_ARG(!index.files.empty() && index.files.size() == index.labels.size(), "load_image_folder", "index",
                 "expected files with one label each, got " << index.files.size() << " files and "
                                                             << index.labels.size() << " labels");
  const std::string& root = index.root;
  std::int64_t n = static_cast<std::int64_t>(index.files.size());
  if (options.limit > 0) n = std::min(n, options.limit);

  std::vector<DecodedImage> images(static_cast<std::size_t>(n));
  std::vector<std::string> errors(static_cast<std::size_t>(n));
  // Dynamic scheduling: files differ in size, so workers take the next file.
  std::atomic<std::int64_t> next{0};
  const int threads = resolve_threads(options.threads);
  parallel_for(threads, threads, [&](std::int64_t) {
    for (std::int64_t i = next++; i < n; i = next++) {
      try {
        images[i] = decode_image_file((fs::path(root) / index.files[i]).string());
      } catch (const Error& e) {
        errors[i] = e.what();
        if (errors[i].empty()) errors[i] = "unreadable";
      }
    }
  });
  std::vector<char> bad(static_cast<std::size_t>(n), 0);
  std::int64_t num_bad = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    bad[i] = !errors[i].empty();
    num_bad += bad[i];
  }
  if (options.on_bad_file == OnBadFile::kFail && num_bad > 0) {
    // The first bad file in instance order, whatever thread met it first.
    const auto first = std::find(bad.begin(), bad.end(), 1) - bad.begin();
    throw Error(ErrorKind::kIo, errors[first] + (num_bad > 1 ? " (and " + std::to_string(num_bad - 1) +
                                                                  " more unreadable files)"
                                                            : std::string()));
  }

  ImageSetBuilder builder;
  std::vector<std::string> skipped;
  for (std::int64_t i = 0; i < n; ++i) {
    if (bad[i]) {
      skipped.push_back(index.files[i]);
      continue;
    }
    builder.add(images[i].pixels.data(), images[i].height, images[i].width, index.labels[i],
                index.files[i]);
    images[i] = DecodedImage();
  }
  ImageSet set = builder.finish(index.class_names);
  set.skipped_files = std::move(skipped);
  if (set.size() == 0) {
    throw Error(ErrorKind::kIo, root + ": every image file failed to decode");
  }
  return set;
}

std::int64_t DataSource::size() const {
  return streaming() ? static_cast<std::int64_t>(folder->files.size()) : images->size();
}

const std::vector<std::int64_t>& DataSource::labels() const { return streaming() ? folder->labels : images->labels; }

std::int64_t DataSource::num_classes() const {
  return streaming() ? static_cast<std::int64_t>(folder->class_names.size()) : images->num_classes();
}

ImageSet load_folder_images(const ImageFolderIndex& index, const std::vector<std::int64_t>& rows) {
  ImageSetBuilder b;
  for (std::int64_t r : rows) {
    NPID_CHECK_ARG(r >= 0 && r < static_cast<std::int64_t>(index.files.size()), "load_folder_images", "rows",
                   "expected rows in [0, " << index.files.size() << "), got " << r);
    const DecodedImage img = decode_image_file((fs::path(index.root) / index.files[r]).string());
    b.add(img.pixels.data(), img.height, img.width, index.labels[r], index.files[r]);
  }
  return b.finish(index.class_names);
}

}  // namespace npid

// npid/data.h -- image data sets: image folders (JPEG/PNG), the CIFAR-10
// binary format, a procedural synthetic set, and GPU-resident copies.
//
// An ImageSet holds N RGB images as uint8 HWC, packed one after another in one
// buffer, with a descriptor row (byte offset, height, width) per image, so
// images of different sizes share one layout. The instance index of an image
// is its position in the set. Labels, class names and file names stay on the
// host; `to(ctx)` makes a copy whose pixels and descriptors live on the
// context's device -- the resident data set the augmentation kernels gather
// batches from (npid/augment.h).
//
// Image folder order: classes are the sub-directories of root sorted by name
// (byte order) -> labels 0..C-1; files within a class sorted by name; the
// instance index is the position in that order, so it is stable across runs
// and machines. Decoding runs on a thread pool; JPEG through libjpeg-turbo,
// PNG through libpng.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "npid/context.h"
#include "npid/tensor.h"

namespace npid {

struct ImageSet {
  Tensor pixels;  // uint8 (total bytes), each image HWC RGB
  Tensor descs;   // int64 (N, 3): byte offset into pixels, height, width
  std::vector<std::int64_t> labels;       // N, in [0, classes)
  std::vector<std::string> class_names;   // C
  std::vector<std::string> files;         // N paths relative to the root, or empty
  std::vector<std::string> skipped_files; // unreadable files left out (skip policy)

  std::int64_t size() const { return static_cast<std::int64_t>(labels.size()); }
  std::int64_t num_classes() const { return static_cast<std::int64_t>(class_names.size()); }
  Device device() const { return pixels.device(); }
  // Height and width of image i (host copy of the descriptors).
  std::int64_t height(std::int64_t i) const;
  std::int64_t width(std::int64_t i) const;
  // True when every image is h x w (writes h, w; false for an empty set).
  bool uniform_size(std::int64_t* h, std::int64_t* w) const;
  // A copy whose pixels and descriptors live on ctx's device (labels, names,
  // files copied as they are). Blocks until the upload is done.
  ImageSet to(Context& ctx) const;
  // Images [begin, begin + count) as a new host set (labels, files kept).
  ImageSet slice(std::int64_t begin, std::int64_t count) const;
  // Images rows[0], rows[1], ... (each in [0, size())) as a new host set.
  ImageSet select(const std::vector<std::int64_t>& rows) const;

 private:
  friend class ImageSetBuilder;
  std::vector<std::int64_t> host_descs_;  // always on the host
};

// Packs decoded images into an ImageSet (used by every loader; public so host
// code can build sets from its own images).
class ImageSetBuilder {
 public:
  void add(const std::uint8_t* hwc, std::int64_t height, std::int64_t width,
           std::int64_t label, std::string file = {});
  ImageSet finish(std::vector<std::string> class_names);

 private:
  std::vector<std::uint8_t> bytes_;
  std::vector<std::int64_t> descs_, labels_;
  std::vector<std::string> files_;
};

// One decoded image, HWC RGB.
struct DecodedImage {
  std::int64_t height = 0, width = 0;
  std::vector<std::uint8_t> pixels;
};

// Decodes a JPEG or PNG held in memory (format from its signature); gray and
// RGBA images become RGB. Throws npid::Error (kIo) naming `name` when the
// bytes are not a readable image.
DecodedImage decode_image(const std::uint8_t* bytes, std::size_t size, const std::string& name);
DecodedImage decode_image_file(const std::string& path);

// Encodes HWC RGB as PNG and writes it atomically (temp file, fsync, rename).
void write_png(const std::string& path, const std::uint8_t* hwc, std::int64_t height,
               std::int64_t width);

enum class OnBadFile {
  kFail,  // throw npid::Error naming the file
  kSkip,  // leave it out, list it in ImageSet::skipped_files
};

struct ImageFolderIndex {
  std::string root;
  std::vector<std::string> class_names;
  std::vector<std::string> files;   // relative to root, in instance order
  std::vector<std::int64_t> labels;
};

// Lists root/<class>/<file>.{jpg,jpeg,png} (case-insensitive extension) in
// instance order without decoding. Every class directory is a class, labelled
// by its place in the sorted names, also when it holds no image (so that two
// folders with the same class directories label alike). Throws kIo when root
// is not a directory, cannot be listed, or holds no image at all.
ImageFolderIndex scan_image_folder(const std::string& root);

struct ImageFolderOptions {
  int threads = 0;                    // 0 = std::thread::hardware_concurrency()
  OnBadFile on_bad_file = OnBadFile::kFail;
  std::int64_t limit = 0;             // > 0: only the first `limit` files
};

ImageSet load_image_folder(const std::string& root, const ImageFolderOptions& options = {});
// The same for the files an index lists (e.g. a subset of a folder).
ImageSet load_image_folder(const ImageFolderIndex& index, const ImageFolderOptions& options = {});

// Splits an index into (train, test): a seeded `test_fraction` of the images
// (at least one, at most all but one) becomes the test split; both keep the
// folder's order and its class names.
std::pair<ImageFolderIndex, ImageFolderIndex> split_image_folder(const ImageFolderIndex& index, double test_fraction,
                                                                 std::uint64_t seed);

// A split of a data set as the trainer and the evaluation take it: decoded in
// memory (an ImageSet), or an image folder decoded batch by batch as it is
// read (streaming; for sets too large to keep). A non-owning view: the set
// or index must outlive it.
struct DataSource {
  const ImageSet* images = nullptr;
  const ImageFolderIndex* folder = nullptr;
  DataSource(const ImageSet& set) : images(&set) {}                // NOLINT: implicit
  DataSource(const ImageFolderIndex& index) : folder(&index) {}    // NOLINT: implicit
  bool streaming() const { return folder != nullptr; }
  std::int64_t size() const;
  const std::vector<std::int64_t>& labels() const;
  std::int64_t num_classes() const;
};

// Decodes the listed images of a folder (e.g. the few a retrieval picture
// shows) into an ImageSet, labels kept, in the order given.
ImageSet load_folder_images(const ImageFolderIndex& index, const std::vector<std::int64_t>& rows);

// CIFAR-10 binary version: dir/data_batch_{1..5}.bin (train) or
// dir/test_batch.bin (test); 10,000 records of 1 label byte + 3072 bytes
// (R, G, B planes of 32x32). Class names from batches.meta.txt when present.
enum class Split { kTrain, kTest };
ImageSet load_cifar10_binary(const std::string& dir, Split split);

// True when `dir` looks like the CIFAR-10 binary version (has data_batch_1.bin
// or test_batch.bin).
bool is_cifar10_binary_dir(const std::string& dir);

// Procedural data set with learnable classes: each image is one of ten shapes
// (disc, square, triangle, ring, cross, horizontal bars, vertical bars,
// diamond, checkerboard, X) in a random colour, position and scale over a
// noisy random background. Image i has label i % num_classes and depends only
// on (seed, i): any prefix of a larger set equals the smaller set.
struct SyntheticConfig {
  std::int64_t count = 10000;
  std::int64_t image_size = 32;
  std::int64_t num_classes = 10;  // 1..10
  std::uint64_t seed = 0;
  int threads = 0;
};
ImageSet make_synthetic(const SyntheticConfig& config);

}  // namespace npid

// npid/loader.h -- epoch loops over a data set: augmented batches in a seeded
// per-epoch order, on the context's device.
//
// Two modes behind one interface:
//  * resident: the whole ImageSet is uploaded once (uint8, CIFAR-10 is 150 MB);
//    each epoch's order comes from epoch_permutation on the device, and a
//    batch is one augment_batch launch gathering straight from the resident
//    set on the context's stream.
//  * streaming: for image folders too large to keep. CPU threads decode the
//    files of the next `prefetch` batches into pinned staging buffers while
//    the caller computes; a batch's bytes are uploaded and augmented on the
//    loader's own CUDA stream, and the caller's stream waits on an event, so
//    upload and augmentation overlap the caller's work. On a CPU context the
//    decode still runs ahead on background threads.
// Both modes yield the same images for the same (seed, epoch): the order is
// epoch_permutation(seed, epoch) and the augmentation of an image is keyed by
// its instance index.
//
// A Batch's views stay valid until the next call of next() or start_epoch();
// work the caller enqueues on ctx's stream before that call may still read
// them. A Loader is not thread-safe; the Context it was made with must
// outlive it (its destructor waits for that context's stream).
#pragma once

#include <cstdint>
#include <memory>

#include "npid/augment.h"
#include "npid/context.h"
#include "npid/data.h"
#include "npid/tensor.h"

namespace npid {

struct LoaderConfig {
  std::int64_t batch_size = 256;
  AugmentConfig augment;          // out size, train/eval transform
  std::uint64_t seed = 0;         // order and augmentation
  bool shuffle = true;            // false: instance order 0..N-1 every epoch
  bool drop_last = true;          // drop the last partial batch
  int threads = 0;                // streaming decode threads (0 = all cores)
  int prefetch = 3;               // streaming: batches decoded ahead
  OnBadFile on_bad_file = OnBadFile::kFail;  // streaming: a skipped file is replaced by
                                             // a black image and counted
};

struct Batch {
  TensorView images;                      // float32 (b, H, W, 3) on ctx's device
  TensorView indices;                     // int64 (b) instance indices, on ctx's device
  const std::int64_t* host_indices = nullptr;  // the same on the host
  std::int64_t size = 0;                  // b
  std::int64_t epoch = 0, index = 0;      // batch `index` of `epoch`
};

class Loader {
 public:
  // Uploads `set` to ctx's device (a copy; `set` may be on the host or there).
  static Loader resident(Context& ctx, const ImageSet& set, const LoaderConfig& config);
  // Decodes files of `index` on demand.
  static Loader streaming(Context& ctx, const ImageFolderIndex& index, const LoaderConfig& config);

  ~Loader();
  Loader(Loader&&) noexcept;
  Loader& operator=(Loader&&) noexcept;

  std::int64_t size() const;               // images in the data set
  std::int64_t batches_per_epoch() const;
  const std::vector<std::int64_t>& labels() const;
  // Positions the loader at batch 0 of `epoch`.
  void start_epoch(std::int64_t epoch);
  // The next batch of the epoch; false after the last one.
  bool next(Batch* batch);
  // Streaming: files replaced by a black image so far (OnBadFile::kSkip).
  std::int64_t bad_files() const;

  struct Impl;

 private:
  explicit Loader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace npid

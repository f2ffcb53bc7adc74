// Loader: resident and streaming epoch loops (contract in npid/loader.h).
//
// Streaming pipeline, per batch k of an epoch:
//   producer thread: decode the b files (thread pool) -> host slot k % S
//     (pinned on CUDA), after the slot's previous upload has completed;
//   next(): upload slot -> device slot k % 2 and augment there on the loader's
//     own stream (after the caller's stream has finished with batch k - 2),
//     then make the caller's stream wait for it.
#include "npid/loader.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <filesystem>
#include <mutex>
#include <numeric>
#include <thread>

#include "augment.h"
#include "common/parallel.h"
#include "core/check.h"
#include "core/context_impl.h"
#include "npid/error.h"

namespace npid {
namespace {

constexpr const char* kOp = "Loader";

void check_config(const LoaderConfig& c, std::int64_t n) {
  NPID_CHECK_ARG(c.batch_size >= 1 && c.batch_size <= 65536, kOp, "config.batch_size",
                 "expected 1..65536, got " << c.batch_size);
  NPID_CHECK_ARG(!c.drop_last || c.batch_size <= n, kOp, "config.batch_size",
                 "expected <= the data set size " << n << " with drop_last, got " << c.batch_size);
  NPID_CHECK_ARG(c.prefetch >= 1 && c.prefetch <= 64, kOp, "config.prefetch",
                 "expected 1..64, got " << c.prefetch);
  NPID_CHECK_ARG(c.threads >= 0, kOp, "config.threads", "expected >= 0, got " << c.threads);
  // The augmentation config is checked by draw_augment_params' validation.
  (void)draw_augment_params(c.augment, 0, 0, 0, 1, 1);
}

// Page-locked host memory on CUDA (async uploads), plain memory otherwise.
class HostBuffer {
 public:
  explicit HostBuffer(bool pinned = false) : pinned_(pinned) {}
  ~HostBuffer() { release(); }
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;
  void reserve(std::size_t bytes) {
    if (bytes <= capacity_) return;
    // Grow by half at least, so a folder of mixed image sizes re-pins rarely
    // (release() forgets the old capacity: compute first).
    const std::size_t cap = std::max(bytes, capacity_ + capacity_ / 2);
    release();
    if (pinned_) {
      NPID_CUDA_CHECK(cudaHostAlloc(&data_, cap, cudaHostAllocDefault));
    } else {
      data_ = std::malloc(cap);
      if (!data_) throw Error(ErrorKind::kIo, "Loader: out of host memory for a batch");
    }
    capacity_ = cap;
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }

 private:
  void release() noexcept {
    if (!data_) return;
    if (pinned_) {
      cudaFreeHost(data_);
    } else {
      std::free(data_);
    }
    data_ = nullptr;
    capacity_ = 0;
  }
  bool pinned_;
  void* data_ = nullptr;
  std::size_t capacity_ = 0;
};

class Event {
 public:
  Event() { NPID_CUDA_CHECK(cudaEventCreateWithFlags(&e_, cudaEventDisableTiming)); }
  ~Event() {
    if (e_) cudaEventDestroy(e_);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

}  // namespace

struct Loader::Impl {
  Context* ctx;
  LoaderConfig cfg;
  std::int64_t n = 0;
  std::vector<std::int64_t> labels;
  std::vector<std::int64_t> order;  // this epoch's instance order (host)
  std::int64_t epoch = -1, next_batch = 0;

  Impl(Context& c, const LoaderConfig& config, std::vector<std::int64_t> l)
      : ctx(&c), cfg(config), n(static_cast<std::int64_t>(l.size())), labels(std::move(l)) {}
  virtual ~Impl() = default;
  std::int64_t batches() const {
    return cfg.drop_last ? n / cfg.batch_size : (n + cfg.batch_size - 1) / cfg.batch_size;
  }
  std::int64_t batch_len(std::int64_t k) const {
    return std::min(cfg.batch_size, n - k * cfg.batch_size);
  }
  void host_order(std::int64_t e) {
    order.resize(static_cast<std::size_t>(n));
    if (cfg.shuffle) {
      epoch_permutation_cpu(cfg.seed, static_cast<std::uint64_t>(e), n, order.data());
    } else {
      std::iota(order.begin(), order.end(), std::int64_t(0));
    }
  }
  virtual void begin_epoch(std::int64_t e) = 0;
  virtual void produce(std::int64_t k, Batch* b) = 0;
  virtual std::int64_t bad_files() const { return 0; }
};

namespace {

// ---- resident ---------------------------------------------------------------
struct ResidentImpl final : Loader::Impl {
  ImageSet set;    // on ctx's device
  Tensor perm;     // (N) int64 on ctx's device
  Tensor out;      // (B, H, W, 3)

  ResidentImpl(Context& c, const ImageSet& s, const LoaderConfig& config)
      : Impl(c, config, s.labels), set(s.to(c)) {
    perm = Tensor({n}, DType::kInt64, c.device());
    out = Tensor({cfg.batch_size, cfg.augment.out_height, cfg.augment.out_width, 3},
                 DType::kFloat32, c.device());
  }
  ~ResidentImpl() override {
    // Work the caller enqueued may still read the set, the order or `out`.
    if (ctx->is_cuda()) cudaStreamSynchronize(ctx->stream());
  }
  void begin_epoch(std::int64_t e) override {
    if (cfg.shuffle) {
      epoch_permutation(*ctx, cfg.seed, static_cast<std::uint64_t>(e), perm);
      order.resize(static_cast<std::size_t>(n));
      copy(*ctx, view(order.data(), {n}), perm);  // one host sync per epoch
    } else {
      host_order(e);
      copy(*ctx, perm, view(order.data(), {n}));
    }
  }
  void produce(std::int64_t k, Batch* b) override {
    const std::int64_t len = batch_len(k), start = k * cfg.batch_size;
    AugmentProblem p;
    p.config = cfg.augment;
    p.pixels = set.pixels.data_as<const std::uint8_t>();
    p.descs = set.descs.data_as<const std::int64_t>();
    p.sources = perm.data_as<const std::int64_t>() + start;  // a permutation: in range
    p.instances = p.sources;
    p.batch = len;
    p.seed = cfg.seed;
    p.epoch = static_cast<std::uint64_t>(epoch);
    p.out = out.data_as<float>();
    if (ctx->is_cuda()) {
      launch_augment(*ctx, p);
    } else {
      augment_cpu(p, ctx->cpu_threads());
    }
    b->images = TensorView(out.data(), DType::kFloat32,
                           {len, cfg.augment.out_height, cfg.augment.out_width, 3}, ctx->device());
    b->indices = TensorView(perm.data_as<std::int64_t>() + start, DType::kInt64, {len}, ctx->device());
    b->host_indices = order.data() + start;
  }
};

// ---- streaming ------------------------------------------------------------------
struct Slot {
  explicit Slot(bool pinned) : bytes(pinned), meta(pinned) {}
  HostBuffer bytes;  // packed HWC images
  HostBuffer meta;   // int64: descs (3b), sources (b), instances (b)
  std::int64_t batch = -1, len = 0;
  std::size_t total_bytes = 0;
  bool ready = false;
  std::exception_ptr error;
  std::unique_ptr<Event> uploaded;  // CUDA: the slot's last upload
  bool upload_pending = false;
};

struct StreamingImpl final : Loader::Impl {
  ImageFolderIndex index;
  int threads;
  std::vector<std::unique_ptr<Slot>> slots;
  std::mutex mu;
  std::condition_variable cv;
  std::thread producer;
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> bad{0};
  bool failed = false;  // the producer stopped on an error (guarded by mu)
  Tensor host_out;  // CPU contexts
  // CUDA: the loader's own stream and two device slots.
  std::unique_ptr<Context> io;
  struct DeviceSlot {
    Tensor bytes, meta, out;
    Event ready, released;
    bool used = false;
  };
  std::unique_ptr<DeviceSlot> dev[2];
  std::int64_t last_dev = -1;

  StreamingImpl(Context& c, const ImageFolderIndex& idx, const LoaderConfig& config)
      : Impl(c, config, idx.labels), index(idx), threads(resolve_threads(config.threads)) {
    // Events belong to the device current at their creation: make it ctx's.
    std::unique_ptr<DeviceGuard> guard;
    if (c.is_cuda()) guard = std::make_unique<DeviceGuard>(c.device());
    for (int s = 0; s < cfg.prefetch; ++s) {
      slots.push_back(std::make_unique<Slot>(c.is_cuda()));
      if (c.is_cuda()) slots.back()->uploaded = std::make_unique<Event>();
    }
    if (c.is_cuda()) {
      ContextOptions io_options;
      io_options.sync_after_launch = c.sync_after_launch();
      io = std::make_unique<Context>(Context::cuda(c.device().index, io_options));
      for (auto& d : dev) {
        d = std::make_unique<DeviceSlot>();
        d->out = Tensor({cfg.batch_size, cfg.augment.out_height, cfg.augment.out_width, 3},
                        DType::kFloat32, c.device());
        d->meta = Tensor({5 * cfg.batch_size}, DType::kInt64, c.device());
      }
    } else {
      host_out = Tensor({cfg.batch_size, cfg.augment.out_height, cfg.augment.out_width, 3},
                        DType::kFloat32, Device::cpu());
    }
  }
  ~StreamingImpl() override {
    halt();
    if (io) {
      cudaStreamSynchronize(io->stream());
      cudaStreamSynchronize(ctx->stream());
    }
  }

  void halt() {
    {
      // Under the mutex: the producer checks `stop` and goes to sleep under
      // it, so the wake-up cannot fall between its check and its wait.
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
    }
    cv.notify_all();
    if (producer.joinable()) producer.join();
    stop = false;
  }

  void begin_epoch(std::int64_t e) override {
    halt();
    host_order(e);
    failed = false;
    for (auto& s : slots) {
      s->ready = false;
      s->batch = -1;
      s->error = nullptr;
    }
    const std::int64_t nb = batches();
    producer = std::thread([this, nb] { produce_all(nb); });
  }

  // Producer thread: fills slot k % S with batch k, in order.
  void produce_all(std::int64_t nb) {
    std::unique_ptr<DeviceGuard> guard;
    try {
      if (ctx->is_cuda()) guard = std::make_unique<DeviceGuard>(ctx->device());
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      Slot& s = *slots[0];
      s.error = std::current_exception();
      s.batch = 0;
      s.ready = true;
      failed = true;
      cv.notify_all();
      return;
    }
    for (std::int64_t k = 0; k < nb; ++k) {
      Slot& s = *slots[static_cast<std::size_t>(k % cfg.prefetch)];
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return stop.load() || !s.ready; });
        if (stop) return;
      }
      try {
        if (s.upload_pending) {  // its bytes may still be in flight to the device
          NPID_CUDA_CHECK(cudaEventSynchronize(s.uploaded->get()));
          s.upload_pending = false;
        }
        fill(k, s);
      } catch (...) {
        s.error = std::current_exception();
      }
      const bool error = static_cast<bool>(s.error);
      {
        std::lock_guard<std::mutex> lock(mu);
        s.batch = k;
        s.ready = true;
        failed = failed || error;  // never clear a failure the consumer recorded
      }
      cv.notify_all();
      if (error) return;
    }
  }

  void fill(std::int64_t k, Slot& s) {
    const std::int64_t len = batch_len(k), start = k * cfg.batch_size;
    std::vector<DecodedImage> images(static_cast<std::size_t>(len));
    std::atomic<std::int64_t> next{0};
    std::vector<std::string> errors(static_cast<std::size_t>(len));
    parallel_for(std::min<std::int64_t>(threads, len), threads, [&](std::int64_t) {
      for (std::int64_t i = next++; i < len; i = next++) {
        const std::int64_t inst = order[static_cast<std::size_t>(start + i)];
        try {
          images[i] = decode_image_file(
              (std::filesystem::path(index.root) / index.files[inst]).string());
        } catch (const Error& e) {
          errors[i] = e.what();
        }
      }
    });
    for (std::int64_t i = 0; i < len; ++i) {
      if (errors[i].empty()) continue;
      if (cfg.on_bad_file == OnBadFile::kFail) throw Error(ErrorKind::kIo, errors[i]);
      images[i].height = images[i].width = 1;  // a black stand-in
      images[i].pixels.assign(3, 0);
      ++bad;
    }
    std::size_t total = 0;
    for (const auto& im : images) total += im.pixels.size();
    s.bytes.reserve(std::max<std::size_t>(total, 1));
    s.meta.reserve(static_cast<std::size_t>(5 * len) * sizeof(std::int64_t));
    auto* meta = s.meta.as<std::int64_t>();
    std::size_t offset = 0;
    for (std::int64_t i = 0; i < len; ++i) {
      std::memcpy(s.bytes.as<std::uint8_t>() + offset, images[i].pixels.data(), images[i].pixels.size());
      meta[3 * i] = static_cast<std::int64_t>(offset);
      meta[3 * i + 1] = images[i].height;
      meta[3 * i + 2] = images[i].width;
      meta[3 * len + i] = i;                                               // sources
      meta[4 * len + i] = order[static_cast<std::size_t>(start + i)];     // instances
      offset += images[i].pixels.size();
    }
    s.len = len;
    s.total_bytes = total;
  }

  void produce(std::int64_t k, Batch* b) override {
    Slot& s = *slots[static_cast<std::size_t>(k % cfg.prefetch)];
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return (s.ready && s.batch == k) || failed; });
      if (failed && !(s.ready && s.batch == k)) {
        throw Error(ErrorKind::kIo, "Loader: an earlier batch of this epoch failed to load");
      }
    }
    if (s.error) std::rethrow_exception(s.error);
    try {
      hand_out(k, s, b);
    } catch (...) {
      // Later next() calls report the failure instead of waiting for a
      // slot that would never be handed back.
      {
        std::lock_guard<std::mutex> lock(mu);
        failed = true;
        s.ready = false;
      }
      cv.notify_all();
      throw;
    }
  }

  // Uploads and augments a ready slot (CUDA) or augments it in place (CPU).
  void hand_out(std::int64_t k, Slot& s, Batch* b) {
    const std::int64_t len = s.len;
    const auto* meta = s.meta.as<const std::int64_t>();
    AugmentProblem p;
    p.config = cfg.augment;
    p.batch = len;
    p.seed = cfg.seed;
    p.epoch = static_cast<std::uint64_t>(epoch);
    const Shape out_shape{len, cfg.augment.out_height, cfg.augment.out_width, 3};
    if (!ctx->is_cuda()) {
      p.pixels = s.bytes.as<const std::uint8_t>();
      p.descs = meta;
      p.sources = meta + 3 * len;
      p.instances = meta + 4 * len;
      p.out = host_out.data_as<float>();
      augment_cpu(p, ctx->cpu_threads());
      b->images = TensorView(host_out.data(), DType::kFloat32, out_shape, Device::cpu());
      b->host_indices = order.data() + k * cfg.batch_size;
      b->indices = TensorView(const_cast<std::int64_t*>(b->host_indices), DType::kInt64, {len}, Device::cpu());
      release(s);
      return;
    }
    DeviceGuard guard(ctx->device());
    // The caller has issued all its work on the previous batch: mark its slot.
    if (last_dev >= 0) {
      NPID_CUDA_CHECK(cudaEventRecord(dev[last_dev]->released.get(), ctx->stream()));
      dev[last_dev]->used = true;
    }
    const std::int64_t j = k % 2;
    DeviceSlot& d = *dev[j];
    cudaStream_t io_stream = io->stream();
    if (d.used) NPID_CUDA_CHECK(cudaStreamWaitEvent(io_stream, d.released.get(), 0));
    if (d.bytes.numel() < static_cast<std::int64_t>(s.total_bytes)) {
      NPID_CUDA_CHECK(cudaStreamSynchronize(io_stream));  // nothing reads the old block
      d.bytes = Tensor({static_cast<std::int64_t>(s.total_bytes + s.total_bytes / 2 + 1)},
                       DType::kUInt8, ctx->device());
    }
    try {
      NPID_CUDA_CHECK(cudaMemcpyAsync(d.bytes.data(), s.bytes.as<void>(), s.total_bytes,
                                      cudaMemcpyHostToDevice, io_stream));
      NPID_CUDA_CHECK(cudaMemcpyAsync(d.meta.data(), meta, static_cast<std::size_t>(5 * len) * 8,
                                      cudaMemcpyHostToDevice, io_stream));
      NPID_CUDA_CHECK(cudaEventRecord(s.uploaded->get(), io_stream));
    } catch (...) {
      // No event marks the copies: wait for them here, so that the pinned
      // slot is not refilled under a copy still in flight.
      cudaStreamSynchronize(io_stream);
      throw;
    }
    s.upload_pending = true;
    const auto* dmeta = d.meta.data_as<const std::int64_t>();
    p.pixels = d.bytes.data_as<const std::uint8_t>();
    p.descs = dmeta;
    p.sources = dmeta + 3 * len;
    p.instances = dmeta + 4 * len;
    p.out = d.out.data_as<float>();
    launch_augment(*io, p);
    NPID_CUDA_CHECK(cudaEventRecord(d.ready.get(), io_stream));
    NPID_CUDA_CHECK(cudaStreamWaitEvent(ctx->stream(), d.ready.get(), 0));
    last_dev = j;
    b->images = TensorView(d.out.data(), DType::kFloat32, out_shape, ctx->device());
    b->indices = TensorView(const_cast<std::int64_t*>(dmeta + 4 * len), DType::kInt64, {len}, ctx->device());
    b->host_indices = order.data() + k * cfg.batch_size;
    release(s);
  }

  void release(Slot& s) {
    {
      std::lock_guard<std::mutex> lock(mu);
      s.ready = false;
    }
    cv.notify_all();
  }

  std::int64_t bad_files() const override { return bad.load(); }
};

}  // namespace

Loader::Loader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Loader::~Loader() = default;
Loader::Loader(Loader&&) noexcept = default;
Loader& Loader::operator=(Loader&&) noexcept = default;

Loader Loader::resident(Context& ctx, const ImageSet& set, const LoaderConfig& config) {
  NPID_CHECK_ARG(set.size() >= 1, kOp, "set", "expected a non-empty image set, got 0 images");
  check_config(config, set.size());
  return Loader(std::make_unique<ResidentImpl>(ctx, set, config));
}

Loader Loader::streaming(Context& ctx, const ImageFolderIndex& index, const LoaderConfig& config) {
  NPID_CHECK_ARG(!index.files.empty() && index.files.size() == index.labels.size(), kOp, "index",
                 "expected files with one label each, got " << index.files.size() << " files and "
                                                             << index.labels.size() << " labels");
  check_config(config, static_cast<std::int64_t>(index.files.size()));
  return Loader(std::make_unique<StreamingImpl>(ctx, index, config));
}

std::int64_t Loader::size() const { return impl_->n; }
std::int64_t Loader::batches_per_epoch() const { return impl_->batches(); }
const std::vector<std::int64_t>& Loader::labels() const { return impl_->labels; }
std::int64_t Loader::bad_files() const { return impl_->bad_files(); }

void Loader::start_epoch(std::int64_t epoch) {
  NPID_CHECK_ARG(epoch >= 0, kOp, "epoch", "expected >= 0, got " << epoch);
  // No epoch in progress until it has begun: if beginning throws (memory, a
  // thread that cannot start), next() refuses instead of waiting on a
  // producer that never started.
  impl_->epoch = -1;
  impl_->next_batch = 0;
  impl_->begin_epoch(epoch);
  impl_->epoch = epoch;
}

bool Loader::next(Batch* batch) {
  NPID_CHECK_ARG(batch != nullptr, kOp, "batch", "expected a Batch to fill, got null");
  NPID_CHECK_ARG(impl_->epoch >= 0, kOp, "epoch", "expected start_epoch() before next(), got none");
  if (impl_->next_batch >= impl_->batches()) return false;
  const std::int64_t k = impl_->next_batch++;
  impl_->produce(k, batch);
  batch->size = impl_->batch_len(k);
  batch->epoch = impl_->epoch;
  batch->index = k;
  return true;
}

}  // namespace npid

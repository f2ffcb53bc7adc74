// npid/context.h -- where an op runs: device, stream, library handles, workspace.
//
// Every op takes a Context first. A CPU context runs the reference
// implementations (threaded); a CUDA context owns a non-blocking stream on one
// device, lazily created cuBLAS / cuDNN handles bound to that stream, and a
// workspace arena. All work an op enqueues goes to ctx.stream(); nothing uses
// the legacy default stream. A Context is not thread-safe: use one per thread.
//
// Debugging: ContextOptions::sync_after_launch (or the environment variable
// NPID_SYNC_AFTER_LAUNCH=1) synchronizes after every kernel launch, so an
// asynchronous fault is reported by the kernel that caused it.
#pragma once

#include <cstddef>
#include <memory>

#include "npid/device.h"
#include "npid/tensor.h"

// Same type as cudaStream_t, declared here so the public headers need no CUDA
// headers.
struct CUstream_st;

namespace npid {

using StreamHandle = CUstream_st*;

// Scratch memory for ops, sized up front: an op asks for what it needs via
// reserve(); once reserved, later ops of that size allocate nothing.
class Workspace {
 public:
  explicit Workspace(Device device) : device_(device) {}
  ~Workspace();
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  // Ensures capacity() >= bytes. Growing frees the old block after the
  // owning stream has drained, so never call it between an op's launches.
  void reserve(std::size_t bytes, StreamHandle stream);
  std::size_t capacity() const { return capacity_; }
  void* data() const { return data_; }

 private:
  void release() noexcept;
  Device device_;
  void* data_ = nullptr;
  std::size_t capacity_ = 0;
};

struct ContextOptions {
  // Synchronize the stream after every kernel launch and check for errors.
  bool sync_after_launch = false;
  // CPU reference threads; 0 = std::thread::hardware_concurrency().
  int cpu_threads = 0;
  // Workspace reserved at construction (grows on demand otherwise).
  std::size_t workspace_bytes = 0;
};

class Context {
 public:
  // Runs ops on the CPU reference backend.
  static Context cpu(ContextOptions options = {});
  // Runs ops on CUDA device `device`; throws npid::Error (kNoDevice) when
  // there is no such device.
  static Context cuda(int device = 0, ContextOptions options = {});

  ~Context();
  Context(Context&&) noexcept;
  Context& operator=(Context&&) noexcept;
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  Device device() const;
  bool is_cuda() const { return device().is_cuda(); }
  // The CUDA stream every op of this context enqueues on (nullptr on CPU).
  StreamHandle stream() const;
  // Blocks until all work enqueued on the stream is done (no-op on CPU).
  void synchronize() const;
  bool sync_after_launch() const;
  int cpu_threads() const;
  // Device properties (CUDA contexts only).
  const DeviceInfo& device_info() const;
  Workspace& workspace();

  struct Impl;
  Impl& impl() { return *impl_; }  // library internals (handles)

 private:
  explicit Context(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace npid

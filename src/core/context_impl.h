// core/context_impl.h -- what a Context holds (library-internal).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <memory>

#include "npid/context.h"

namespace npid {

struct Context::Impl {
  Device device;
  ContextOptions options;
  int cpu_threads = 1;
  DeviceInfo info;                  // CUDA only
  cudaStream_t stream = nullptr;    // CUDA only; owned
  cublasHandle_t cublas = nullptr;  // lazily created, bound to `stream`
  void* cublas_workspace = nullptr; // fixed cuBLAS workspace (no allocation under graph capture)
  cudnnHandle_t cudnn = nullptr;    // lazily created, bound to `stream`
  void* check_scratch = nullptr;    // device memory for input checks (kernels/validate.h)
  std::unique_ptr<Workspace> workspace;

  ~Impl();
};

// The one place memory is obtained and returned: cudaMalloc / cudaFree on a
// CUDA device (with the device made current), 64-byte aligned new / delete on
// the host. free_bytes never throws.
void* allocate_bytes(Device device, std::size_t bytes);
void free_bytes(Device device, void* data) noexcept;

// Lazily created library handles bound to ctx.stream().
cublasHandle_t cublas_handle(Context& ctx);
cudnnHandle_t cudnn_handle(Context& ctx);

// Makes `device` current for the guard's lifetime, restoring the previous
// device afterwards (CUDA contexts only; no-op for the CPU).
class DeviceGuard {
 public:
  explicit DeviceGuard(Device device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

}  // namespace npid

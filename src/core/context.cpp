// Context, Workspace and DeviceGuard.
#include "npid/context.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <thread>

#include "common/parallel.h"
#include "core/check.h"
#include "core/context_impl.h"

namespace npid {

// ---- DeviceGuard -----------------------------------------------------------

DeviceGuard::DeviceGuard(Device device) {
  if (!device.is_cuda()) return;
  int current = 0;
  NPID_CUDA_CHECK(cudaGetDevice(&current));
  if (current != device.index) {
    NPID_CUDA_CHECK(cudaSetDevice(device.index));
    previous_ = current;
  }
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0) cudaSetDevice(previous_);  // best effort; never throws
}

// ---- memory ------------------------------------------------------------------

void* allocate_bytes(Device device, std::size_t bytes) {
  if (bytes == 0) return nullptr;
  if (!device.is_cuda()) return ::operator new(bytes, std::align_val_t(64));
  DeviceGuard guard(device);
  void* data = nullptr;
  NPID_CUDA_CHECK(cudaMalloc(&data, bytes));
  return data;
}

void free_bytes(Device device, void* data) noexcept {
  if (data == nullptr) return;
  if (device.is_cuda()) {
    // On the owning device (never throws: a destructor path). cudaFree
    // synchronizes with work that may still use the memory.
    int previous = -1;
    if (cudaGetDevice(&previous) != cudaSuccess || previous == device.index) previous = -1;
    if (previous >= 0) cudaSetDevice(device.index);
    cudaFree(data);
    if (previous >= 0) cudaSetDevice(previous);
  } else {
    ::operator delete(data, std::align_val_t(64));
  }
}

// ---- Workspace -------------------------------------------------------------

Workspace::~Workspace() { release(); }

void Workspace::release() noexcept {
  free_bytes(device_, data_);
  data_ = nullptr;
  capacity_ = 0;
}

void Workspace::reserve(std::size_t bytes, StreamHandle stream) {
  if (bytes <= capacity_) return;
  // Round up to limit regrowth when sizes creep upward.
  const std::size_t rounded = (bytes + (std::size_t(1) << 20) - 1) & ~((std::size_t(1) << 20) - 1);
  if (device_.is_cuda() && data_ != nullptr) {
    DeviceGuard guard(device_);
    NPID_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  release();
  data_ = allocate_bytes(device_, rounded);
  capacity_ = rounded;
}

// ---- Context ---------------------------------------------------------------

Context::Impl::~Impl() {
  if (!device.is_cuda()) {
    workspace.reset();
  } else {
    int previous = -1;
    cudaGetDevice(&previous);
    cudaSetDevice(device.index);
    if (stream != nullptr) cudaStreamSynchronize(stream);  // nothing in flight uses what is freed below
    workspace.reset();
    if (cudnn != nullptr) cudnnDestroy(cudnn);
    if (cublas != nullptr) cublasDestroy(cublas);
    if (cublas_workspace != nullptr) cudaFree(cublas_workspace);
    if (check_scratch != nullptr) cudaFree(check_scratch);
    if (stream != nullptr) cudaStreamDestroy(stream);
    if (previous >= 0) cudaSetDevice(previous);
  }
}

namespace {
bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
}

}  // namespace

Context::Context(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Context::~Context() = default;
Context::Context(Context&&) noexcept = default;
Context& Context::operator=(Context&&) noexcept = default;

Context Context::cpu(ContextOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->device = Device::cpu();
  impl->options = options;
  impl->options.sync_after_launch =
      options.sync_after_launch || env_flag("NPID_SYNC_AFTER_LAUNCH");
  impl->cpu_threads = resolve_threads(options.cpu_threads);
  impl->workspace = std::make_unique<Workspace>(impl->device);
  if (options.workspace_bytes > 0) impl->workspace->reserve(options.workspace_bytes, nullptr);
  return Context(std::move(impl));
}

Context Context::cuda(int device, ContextOptions options) {
  const int count = cuda_device_count();
  if (device < 0 || device >= count) {
    throw Error(ErrorKind::kNoDevice,
                "Context::cuda: argument 'device': expected a CUDA ordinal in [0, " +
                    std::to_string(count) + "), got " + std::to_string(device) +
                    "; " + cuda_status());
  }
  auto impl = std::make_unique<Impl>();
  impl->device = Device::cuda(device);
  impl->options = options;
  impl->options.sync_after_launch =
      options.sync_after_launch || env_flag("NPID_SYNC_AFTER_LAUNCH");
  impl->cpu_threads = resolve_threads(options.cpu_threads);
  impl->info = cuda_device_info(device);
  DeviceGuard guard(impl->device);
  NPID_CUDA_CHECK(cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking));
  NPID_CUDA_CHECK(cudaMalloc(&impl->check_scratch, 256));
  impl->workspace = std::make_unique<Workspace>(impl->device);
  if (options.workspace_bytes > 0)
    impl->workspace->reserve(options.workspace_bytes, impl->stream);
  return Context(std::move(impl));
}

Device Context::device() const { return impl_->device; }
StreamHandle Context::stream() const { return impl_->stream; }
bool Context::sync_after_launch() const { return impl_->options.sync_after_launch; }
int Context::cpu_threads() const { return impl_->cpu_threads; }
Workspace& Context::workspace() { return *impl_->workspace; }

const DeviceInfo& Context::device_info() const {
  if (!impl_->device.is_cuda())
    throw Error(ErrorKind::kInvalidArgument,
                "Context::device_info: this is a CPU context");
  return impl_->info;
}

void Context::synchronize() const {
  if (!impl_->device.is_cuda()) return;
  DeviceGuard guard(impl_->device);
  NPID_CUDA_CHECK(cudaStreamSynchronize(impl_->stream));
}

cublasHandle_t cublas_handle(Context& ctx) {
  auto& impl = ctx.impl();
  if (impl.cublas == nullptr) {
    // Published only once bound to the context's stream.
    DeviceGuard guard(impl.device);
    cublasHandle_t handle = nullptr;
    NPID_CUBLAS_CHECK(cublasCreate(&handle));
    cublasStatus_t st = cublasSetStream(handle, impl.stream);
    // A workspace of our own, fixed for the handle's life: cuBLAS then never
    // allocates one itself, which a captured CUDA graph could not survive
    // (and re-captures would leak). 32 MiB covers Hopper's largest request.
    constexpr std::size_t kCublasWorkspace = std::size_t(32) << 20;
    void* ws = nullptr;
    if (st == CUBLAS_STATUS_SUCCESS && cudaMalloc(&ws, kCublasWorkspace) == cudaSuccess) {
      st = cublasSetWorkspace(handle, ws, kCublasWorkspace);
    }
    if (st != CUBLAS_STATUS_SUCCESS) {
      if (ws != nullptr) cudaFree(ws);
      cublasDestroy(handle);
      NPID_CUBLAS_CHECK(st);
    }
    cudaGetLastError();  // a failed cudaMalloc above leaves cuBLAS's own workspace in use
    impl.cublas_workspace = ws;
    impl.cublas = handle;
  }
  return impl.cublas;
}

cudnnHandle_t cudnn_handle(Context& ctx) {
  auto& impl = ctx.impl();
  if (impl.cudnn == nullptr) {
    DeviceGuard guard(impl.device);
    cudnnHandle_t handle = nullptr;
    NPID_CUDNN_CHECK(cudnnCreate(&handle));
    const cudnnStatus_t st = cudnnSetStream(handle, impl.stream);
    if (st != CUDNN_STATUS_SUCCESS) {
      cudnnDestroy(handle);
      NPID_CUDNN_CHECK(st);
    }
    impl.cudnn = handle;
  }
  return impl.cudnn;
}

namespace detail {
void check_launch(const Context& ctx, const char* kernel, const char* file, int line) {
  cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess && ctx.sync_after_launch())
    err = cudaStreamSynchronize(ctx.stream());
  if (err != cudaSuccess) {
    const std::string expr = std::string("launch of ") + kernel;
    throw_cuda(static_cast<int>(err), expr.c_str(), file, line);
  }
}
}  // namespace detail

}  // namespace npid

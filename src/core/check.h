// core/check.h -- status-check macros for CUDA, cuBLAS, cuDNN, cuRAND and
// kernel launches (library-internal). Each throws npid::Error naming the
// failed call, file:line and the library's own error string.
#pragma once

#include "npid/error.h"

namespace npid {
class Context;
namespace detail {
[[noreturn]] void throw_cuda(int status, const char* expr, const char* file, int line);
[[noreturn]] void throw_cublas(int status, const char* expr, const char* file, int line);
[[noreturn]] void throw_cudnn(int status, const char* expr, const char* file, int line);
[[noreturn]] void throw_curand(int status, const char* expr, const char* file, int line);
// cudaGetLastError() after a launch; with ctx.sync_after_launch() also
// synchronizes, so an asynchronous fault is pinned to `kernel`.
void check_launch(const Context& ctx, const char* kernel, const char* file, int line);
}  // namespace detail
}  // namespace npid

// Status 0 is success for all four libraries.
#define NPID_CUDA_CHECK(expr)                                                     \
  do {                                                                            \
    const int npid_status_ = static_cast<int>(expr);                              \
    if (npid_status_ != 0) ::npid::detail::throw_cuda(npid_status_, #expr, __FILE__, __LINE__); \
  } while (0)
#define NPID_CUBLAS_CHECK(expr)                                                   \
  do {                                                                            \
    const int npid_status_ = static_cast<int>(expr);                              \
    if (npid_status_ != 0) ::npid::detail::throw_cublas(npid_status_, #expr, __FILE__, __LINE__); \
  } while (0)
#define NPID_CUDNN_CHECK(expr)                                                    \
  do {                                                                            \
    const int npid_status_ = static_cast<int>(expr);                              \
    if (npid_status_ != 0) ::npid::detail::throw_cudnn(npid_status_, #expr, __FILE__, __LINE__); \
  } while (0)
#define NPID_CURAND_CHECK(expr)                                                   \
  do {                                                                            \
    const int npid_status_ = static_cast<int>(expr);                              \
    if (npid_status_ != 0) ::npid::detail::throw_curand(npid_status_, #expr, __FILE__, __LINE__); \
  } while (0)
// After every <<<>>>: NPID_CHECK_LAUNCH(ctx, "nce_forward_backward_kernel");
#define NPID_CHECK_LAUNCH(ctx, kernel) \
  ::npid::detail::check_launch((ctx), (kernel), __FILE__, __LINE__)

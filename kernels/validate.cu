// validate.cu -- scans for out-of-range indices and non-finite floats. The
// first offending position is found with atomicMin, so the report does not
// depend on scheduling.
#include <cuda_runtime.h>

#include <climits>

#include "common/cuda_utils.cuh"
#include "core/check.h"
#include "core/context_impl.h"
#include "validate.h"

namespace npid {
namespace {

constexpr int kThreads = 256;

__global__ void init_status_kernel(CheckStatus* status) {
  status->bad_count = 0;
  status->first_bad = LLONG_MAX;
}

template <typename T, typename Bad>
__global__ void __launch_bounds__(kThreads)
    check_kernel(const T* __restrict__ values, std::int64_t count, Bad bad, CheckStatus* status) {
  unsigned long long local = 0;
  long long first = LLONG_MAX;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x; e < count;
       e += static_cast<std::int64_t>(gridDim.x) * kThreads) {
    if (bad(values[e])) {
      ++local;
      if (first == LLONG_MAX) first = e;
    }
  }
  if (local != 0) {
    atomicAdd(&status->bad_count, local);
    atomicMin(&status->first_bad, first);
  }
}

struct OutOfRange {
  std::int64_t upper;
  __device__ bool operator()(std::int64_t v) const { return v < 0 || v >= upper; }
};
struct NotFinite {
  __device__ bool operator()(float v) const { return !isfinite(v); }
};

template <typename T, typename Bad>
void run_check(Context& ctx, const T* values, std::int64_t count, Bad bad, CheckStatus* status,
               const char* name) {
  DeviceGuard guard(ctx.device());
  init_status_kernel<<<1, 1, 0, ctx.stream()>>>(status);
  NPID_CHECK_LAUNCH(ctx, "init_status_kernel");
  if (count == 0) return;
  const unsigned blocks = std::min(cuda::ceil_div(count, kThreads),
                                   static_cast<unsigned>(ctx.device_info().multiprocessors) * 4u);
  check_kernel<<<blocks, kThreads, 0, ctx.stream()>>>(values, count, bad, status);
  NPID_CHECK_LAUNCH(ctx, name);
}

}  // namespace

void launch_check_index_range(Context& ctx, const std::int64_t* values, std::int64_t count,
                              std::int64_t upper, CheckStatus* status) {
  run_check(ctx, values, count, OutOfRange{upper}, status, "check_kernel (index range)");
}

void launch_check_finite(Context& ctx, const float* values, std::int64_t count,
                         CheckStatus* status) {
  run_check(ctx, values, count, NotFinite{}, status, "check_kernel (finite)");
}

}  // namespace npid

// sampler.cu -- NCE index sampling on CUDA: one thread per (sample, column),
// the draw itself in common/sampling.h (shared with the fused NCE kernel and
// the CPU reference).
#include <cuda_runtime.h>

#include "common/cuda_utils.cuh"
#include "common/sampling.h"
#include "core/check.h"
#include "core/context_impl.h"
#include "sampler.h"

namespace npid {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
    sample_nce_indices_kernel(const SampleProblem p) {
  const std::int64_t kp1 = p.num_negatives + 1;
  const std::int64_t total = p.batch * kp1;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x; e < total;
       e += static_cast<std::int64_t>(gridDim.x) * kThreads) {
    const std::int64_t i = e / kp1, j = e % kp1;
    p.indices[e] = nce_column_index(p.seed, p.step, i, j, p.bank_size, p.targets[i],
                                    p.exclude_positive);
  }
}

}  // namespace

void launch_sample_nce_indices(Context& ctx, const SampleProblem& p) {
  const std::int64_t total = p.batch * (p.num_negatives + 1);
  if (total == 0) return;
  DeviceGuard guard(ctx.device());
  const unsigned blocks = std::min(cuda::ceil_div(total, kThreads),
                                   static_cast<unsigned>(ctx.device_info().multiprocessors) * 16u);
  sample_nce_indices_kernel<<<blocks, kThreads, 0, ctx.stream()>>>(p);
  NPID_CHECK_LAUNCH(ctx, "sample_nce_indices_kernel");
}

}  // namespace npid

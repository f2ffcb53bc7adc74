// graph_scalars.cu -- writes the per-step scalars a captured training-step
// graph reads from device memory (the sampling step, the learning rate).
// A kernel rather than a host copy: its arguments are taken by value at
// launch, so the host may change them right after.
#include <cuda_runtime.h>

#include "core/check.h"
#include "core/context_impl.h"
#include "graph_scalars.h"

namespace npid {
namespace {

__global__ void set_step_scalars_kernel(std::uint64_t* step_out, std::uint64_t step, float* lr_out, float lr) {
  *step_out = step;
  *lr_out = lr;
}

}  // namespace

void launch_set_step_scalars(Context& ctx, std::uint64_t* step_out, std::uint64_t step, float* lr_out, float lr) {
  DeviceGuard guard(ctx.device());
  set_step_scalars_kernel<<<1, 1, 0, ctx.stream()>>>(step_out, step, lr_out, lr);
  NPID_CHECK_LAUNCH(ctx, "set_step_scalars_kernel");
}

}  // namespace npid

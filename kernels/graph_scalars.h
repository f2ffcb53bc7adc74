// kernels/graph_scalars.h -- per-step scalars of a CUDA-graph training step (internal).
#pragma once

#include <cstdint>

#include "npid/context.h"

namespace npid {

// Enqueues *step_out = step, *lr_out = lr on ctx's stream (device pointers).
void launch_set_step_scalars(Context& ctx, std::uint64_t* step_out, std::uint64_t step, float* lr_out, float lr);

}  // namespace npid

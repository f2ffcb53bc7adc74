// npid/sampler.h -- NCE index sampling (docs/math.md s.2).
//
// Column 0 of a sample's K+1 indices is its positive y_i; columns 1..K are
// negatives drawn uniformly from [0, N) by Philox-4x32-10, keyed by `seed`,
// with counter (column, sample, step, attempt). The draw for (seed, step, i, j)
// is the same on every device and for every launch shape, and it is exactly
// the draw the fused NCE kernel makes in-kernel, so this op can replay or
// inspect what a training step used.
#pragma once

#include <cstdint>

#include "npid/context.h"
#include "npid/tensor.h"

namespace npid {

// targets (B) int64 in [0, N); indices (B, K+1) int64, written.
// exclude_positive: a negative equal to y_i is redrawn (needs N >= 2).
void sample_nce_indices(Context& ctx, const TensorView& targets,
                        std::int64_t bank_size, std::int64_t num_negatives,
                        std::uint64_t seed, std::uint64_t step,
                        bool exclude_positive, const TensorView& indices);

}  // namespace npid

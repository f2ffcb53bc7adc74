// kernels/sampler.h -- standalone NCE index sampling (internal). The fused NCE
// kernel draws the same indices in-kernel; this op materializes them.
#pragma once

#include <cstdint>

#include "npid/context.h"

namespace npid {

struct SampleProblem {
  const std::int64_t* targets = nullptr;  // (B)
  std::int64_t* indices = nullptr;        // (B, K+1)
  std::int64_t batch = 0, bank_size = 0, num_negatives = 0;
  std::uint64_t seed = 0, step = 0;
  bool exclude_positive = false;
};

void launch_sample_nce_indices(Context& ctx, const SampleProblem& p);
void sample_nce_indices_cpu(const SampleProblem& p, int threads);

}  // namespace npid

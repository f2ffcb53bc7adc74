// sampler_cpu.cpp -- CPU reference of NCE index sampling.
#include "common/parallel.h"
#include "common/sampling.h"
#include "sampler.h"

namespace npid {

void sample_nce_indices_cpu(const SampleProblem& p, int threads) {
  const std::int64_t kp1 = p.num_negatives + 1;
  parallel_for(p.batch, threads, [&](std::int64_t i) {
    for (std::int64_t j = 0; j < kp1; ++j)
      p.indices[i * kp1 + j] = nce_column_index(p.seed, p.step, i, j, p.bank_size, p.targets[i],
                                                p.exclude_positive);
  });
}

}  // namespace npid

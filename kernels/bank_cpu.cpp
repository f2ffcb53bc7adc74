// bank_cpu.cpp -- CPU references of bank initialization and momentum update.
#include <cmath>
#include <vector>

#include "bank.h"
#include "common/bank_init.h"
#include "common/parallel.h"

namespace npid {

void bank_initialize_cpu(float* bank, std::int64_t rows, std::int64_t dim, BankInit init,
                         std::uint64_t seed, int threads) {
  const std::int64_t groups = (dim + 3) / 4;
  const float scale = std::sqrt(3.0f / static_cast<float>(dim));
  parallel_for(rows, threads, [&](std::int64_t r) {
    float* row = bank + r * dim;
    for (std::int64_t g = 0; g < groups; ++g) {
      float v[4];
      if (init == BankInit::kUniform) {
        bank_uniform_group(seed, r, g, scale, v);
      } else {
        bank_normal_group(seed, r, g, v);
      }
      for (int k = 0; k < 4 && 4 * g + k < dim; ++k) row[4 * g + k] = v[k];
    }
    if (init == BankInit::kUnit) {
      float ss = 0.f;
      for (std::int64_t d = 0; d < dim; ++d) ss += row[d] * row[d];
      const float inv = 1.0f / std::fmax(std::sqrt(ss), 1e-12f);
      for (std::int64_t d = 0; d < dim; ++d) row[d] *= inv;
    }
  });
}

void bank_update_cpu(const BankUpdateProblem& p) {
  const std::int64_t D = p.dim;
  const float m = p.momentum;
  std::vector<float> v(static_cast<std::size_t>(D));
  for (std::int64_t i = 0; i < p.batch; ++i) {
    const std::int64_t y = p.targets[i];
    bool later = false;  // last occurrence in batch order wins
    for (std::int64_t j = i + 1; j < p.batch && !later; ++j) later = p.targets[j] == y;
    if (later) continue;
    float* row = p.bank + y * D;
    const float* f = p.features + i * D;
    float ss = 0.f;
    for (std::int64_t d = 0; d < D; ++d) {
      v[d] = m * row[d] + (1.0f - m) * f[d];
      ss += v[d] * v[d];
    }
    const float inv = 1.0f / std::fmax(std::sqrt(ss), 1e-12f);
    for (std::int64_t d = 0; d < D; ++d) row[d] = v[d] * inv;
  }
}

}  // namespace npid

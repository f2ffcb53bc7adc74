// bank_cpu.cpp -- CPU references of bank initialization and momentum update,
// for float32 and bf16 storage (values computed in fp32, rounded once).
#include <cmath>
#include <vector>

#include "bank.h"
#include "common/bank_init.h"
#include "common/bf16.h"
#include "common/parallel.h"

namespace npid {

namespace {

template <typename T>
void initialize(T* bank, std::int64_t rows, std::int64_t dim, BankInit init, std::uint64_t seed,
                int threads) {
  const std::int64_t groups = (dim + 3) / 4;
  const float scale = std::sqrt(3.0f / static_cast<float>(dim));
  parallel_for(rows, threads, [&](std::int64_t r) {
    std::vector<float> row(static_cast<std::size_t>(groups * 4));
    for (std::int64_t g = 0; g < groups; ++g) {
      if (init == BankInit::kUniform) {
        bank_uniform_group(seed, r, g, scale, &row[4 * g]);
      } else {
        bank_normal_group(seed, r, g, &row[4 * g]);
      }
    }
    float inv = 1.0f;
    if (init == BankInit::kUnit) {
      float ss = 0.f;
      for (std::int64_t d = 0; d < dim; ++d) ss += row[d] * row[d];
      inv = 1.0f / std::fmax(std::sqrt(ss), 1e-12f);
    }
    for (std::int64_t d = 0; d < dim; ++d) bank[r * dim + d] = from_float<T>(row[d] * inv);
  });
}

template <typename T>
void update(const BankUpdateProblem& p) {
  const std::int64_t D = p.dim;
  const float m = p.momentum;
  T* bank = static_cast<T*>(p.bank);
  std::vector<float> v(static_cast<std::size_t>(D));
  for (std::int64_t i = 0; i < p.batch; ++i) {
    const std::int64_t y = p.targets[i];
    bool later = false;  // last occurrence in batch order wins
    for (std::int64_t j = i + 1; j < p.batch && !later; ++j) later = p.targets[j] == y;
    if (later) continue;
    T* row = bank + y * D;
    const float* f = p.features + i * D;
    float ss = 0.f;
    for (std::int64_t d = 0; d < D; ++d) {
      v[d] = m * to_float(row[d]) + (1.0f - m) * f[d];
      ss += v[d] * v[d];
    }
    const float inv = 1.0f / std::fmax(std::sqrt(ss), 1e-12f);
    for (std::int64_t d = 0; d < D; ++d) row[d] = from_float<T>(v[d] * inv);
  }
}

}  // namespace

void bank_initialize_cpu(void* bank, DType dtype, std::int64_t rows, std::int64_t dim,
                         BankInit init, std::uint64_t seed, int threads) {
  if (dtype == DType::kBFloat16) {
    initialize(static_cast<bf16*>(bank), rows, dim, init, seed, threads);
  } else {
    initialize(static_cast<float*>(bank), rows, dim, init, seed, threads);
  }
}

void bank_update_cpu(const BankUpdateProblem& p) {
  if (p.bank_dtype == DType::kBFloat16) {
    update<bf16>(p);
  } else {
    update<float>(p);
  }
}

}  // namespace npid

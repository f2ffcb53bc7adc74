// common/sampling.h -- which bank row is column j of sample i (docs/math.md s.2).
//
// Shared verbatim by the fused NCE kernel, the standalone sampler kernel and
// the CPU references, so all of them draw the same indices.
#pragma once

#include <cstdint>

#include "common/hostdevice.h"
#include "common/philox.h"

namespace npid {

// Redraw budget for exclude_positive; with N >= 2 the chance of needing more
// than 64 redraws is at most 2^-64. After it, the next index (mod N) is used.
constexpr std::uint32_t kMaxRedraws = 64;

// Negative j >= 1 of sample i: uniform on [0, n), counter (j, i, step, attempt),
// key = seed. With exclude_positive a draw equal to `positive` is redrawn.
NPID_HD std::int64_t nce_negative_index(std::uint64_t seed, std::uint64_t step,
                                        std::int64_t sample, std::int64_t column,
                                        std::int64_t n, std::int64_t positive,
                                        bool exclude_positive) {
  const std::uint32_t k0 = static_cast<std::uint32_t>(seed);
  const std::uint32_t k1 = static_cast<std::uint32_t>(seed >> 32);
  const std::uint32_t step_lo = static_cast<std::uint32_t>(step);
  const std::uint32_t step_hi = static_cast<std::uint32_t>(step >> 32);
  std::int64_t idx = 0;
  for (std::uint32_t attempt = 0; attempt <= kMaxRedraws; ++attempt) {
    // The attempt lives in the top byte of word 3; step's high word keeps the
    // rest (steps beyond 2^56 would alias, far past any training run).
    const Philox4 r = philox4x32_10(
        Philox4{{static_cast<std::uint32_t>(column), static_cast<std::uint32_t>(sample),
                 step_lo, step_hi ^ (attempt << 24)}},
        k0, k1);
    const std::uint64_t bits = (static_cast<std::uint64_t>(r.v[0]) << 32) | r.v[1];
    idx = uniform_below(bits, n);
    if (!exclude_positive || idx != positive) return idx;
  }
  return idx + 1 == n ? 0 : idx + 1;
}

// Column j of sample i: its positive for j == 0, else a drawn negative.
NPID_HD std::int64_t nce_column_index(std::uint64_t seed, std::uint64_t step,
                                      std::int64_t sample, std::int64_t column,
                                      std::int64_t n, std::int64_t positive,
                                      bool exclude_positive) {
  return column == 0 ? positive
                     : nce_negative_index(seed, step, sample, column, n, positive,
                                          exclude_positive);
}

}  // namespace npid

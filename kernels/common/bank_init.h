// common/bank_init.h -- memory-bank initial values (docs/math.md s.1), shared
// by the CUDA kernel and the CPU reference so both produce the same bank.
//
// Element group g (columns 4g..4g+3) of row r comes from one Philox call with
// counter (g, r_lo, r_hi, tag) and key = seed.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/hostdevice.h"
#include "common/philox.h"

namespace npid {

constexpr std::uint32_t kBankInitTag = 0x4E504944u;  // "NPID"

NPID_HD Philox4 bank_init_bits(std::uint64_t seed, std::int64_t row, std::int64_t group) {
  return philox4x32_10(Philox4{{static_cast<std::uint32_t>(group), static_cast<std::uint32_t>(row),
                                static_cast<std::uint32_t>(static_cast<std::uint64_t>(row) >> 32),
                                kBankInitTag}},
                       static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
}

// kUniform: U(-s, s), s = 1/sqrt(D/3) = sqrt(3/D).
NPID_HD void bank_uniform_group(std::uint64_t seed, std::int64_t row, std::int64_t group,
                                float scale, float out[4]) {
  const Philox4 r = bank_init_bits(seed, row, group);
  for (int k = 0; k < 4; ++k) out[k] = (2.0f * uniform_open01(r.v[k]) - 1.0f) * scale;
}

// kUnit (before normalization): four standard normals by Box-Muller.
NPID_HD void bank_normal_group(std::uint64_t seed, std::int64_t row, std::int64_t group,
                               float out[4]) {
  const Philox4 r = bank_init_bits(seed, row, group);
  constexpr float kTwoPi = 6.28318530717958647692f;
  for (int k = 0; k < 4; k += 2) {
    const float radius = sqrtf(-2.0f * logf(uniform_open01(r.v[k])));
    const float angle = kTwoPi * uniform_open01(r.v[k + 1]);
    out[k] = radius * cosf(angle);
    out[k + 1] = radius * sinf(angle);
  }
}

}  // namespace npid

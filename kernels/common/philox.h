// common/philox.h -- Philox-4x32-10 (Salmon et al., SC'11), host and device.
//
// A counter-based generator: output = bijection(counter; key). Every random
// number in the library is a pure function of (key, counter), so results do
// not depend on thread layout, launch shape or device. Verified against the
// published known-answer vectors (tests/cpu/test_philox.cpp).
#pragma once

#include <cstdint>

#include "common/hostdevice.h"

namespace npid {

struct Philox4 {
  std::uint32_t v[4];
};

NPID_HD void philox_mulhilo(std::uint32_t a, std::uint32_t b, std::uint32_t* hi,
                            std::uint32_t* lo) {
  const std::uint64_t p = static_cast<std::uint64_t>(a) * b;
  *hi = static_cast<std::uint32_t>(p >> 32);
  *lo = static_cast<std::uint32_t>(p);
}

NPID_HD Philox4 philox4x32_10(Philox4 ctr, std::uint32_t k0, std::uint32_t k1) {
  constexpr std::uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr std::uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    std::uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(kM0, ctr.v[0], &hi0, &lo0);
    philox_mulhilo(kM1, ctr.v[2], &hi1, &lo1);
    ctr = Philox4{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
    k0 += kW0;
    k1 += kW1;
  }
  return ctr;
}

// Uniform integer in [0, n) from 64 random bits: floor(x * n / 2^64).
// The bias is below n / 2^64 (< 1e-13 for any bank size).
NPID_HD std::int64_t uniform_below(std::uint64_t x, std::int64_t n) {
#if defined(__CUDA_ARCH__)
  return static_cast<std::int64_t>(__umul64hi(x, static_cast<std::uint64_t>(n)));
#else
  return static_cast<std::int64_t>(
      (static_cast<unsigned __int128>(x) * static_cast<std::uint64_t>(n)) >> 64);
#endif
}

// Uniform float in (0, 1) from the top 23 of 32 random bits: (k + 1/2) / 2^23,
// exact in fp32, so never 0 or 1 (log() of it is always finite).
NPID_HD float uniform_open01(std::uint32_t x) {
  return (static_cast<float>(x >> 9) + 0.5f) * (1.0f / 8388608.0f);
}

}  // namespace npid

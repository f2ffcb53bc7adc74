// common/bf16.h -- bfloat16 bank storage, bit-exact on host and device.
//
// The bank may be stored in bf16 (8 bits of mantissa); all arithmetic stays in
// fp32. Conversions are plain bit operations shared by the kernels and the CPU
// references, so both round identically: float -> bf16 rounds to nearest,
// ties to even (NaN stays NaN); bf16 -> float is exact.
#pragma once

#include <cstdint>
#include <cstring>

#include "common/hostdevice.h"

namespace npid {

struct bf16 {
  std::uint16_t bits;
};

NPID_HD float bf16_to_float(bf16 v) {
  const std::uint32_t u = static_cast<std::uint32_t>(v.bits) << 16;
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

NPID_HD bf16 float_to_bf16(float f) {
#if defined(__CUDA_ARCH__)
  const std::uint32_t u = __float_as_uint(f);
#else
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
#endif
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0)  // NaN: keep it quiet
    return bf16{static_cast<std::uint16_t>((u >> 16) | 0x0040u)};
  const std::uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return bf16{static_cast<std::uint16_t>((u + rounding) >> 16)};
}

// Uniform access for the templated kernels and references.
NPID_HD float to_float(float v) { return v; }
NPID_HD float to_float(bf16 v) { return bf16_to_float(v); }
NPID_HD double to_float(double v) { return v; }
template <typename T>
NPID_HD T from_float(float v);
template <>
NPID_HD float from_float<float>(float v) { return v; }
template <>
NPID_HD bf16 from_float<bf16>(float v) { return float_to_bf16(v); }

}  // namespace npid

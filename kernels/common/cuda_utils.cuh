// common/cuda_utils.cuh -- device helpers shared by the kernels: warp
// reductions and the per-lane row layout used to read bank rows.
//
// Row layout: kLanes consecutive lanes read one D-wide row (a warp reads
// 32/kLanes rows per step). Sub-lane l of a row owns elements
// (c*kLanes + l)*kVec + v for chunk c < kChunks and v < kVec; kVec = 4 uses
// 16-byte loads (needs D % 4 == 0 and 16-byte aligned rows), kVec = 1 works
// for any D. Elements at or beyond D read as 0.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/bf16.h"

namespace npid {
namespace cuda {

constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float warp_allreduce_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// Storage-type conversion for bank rows: fp32 or bf16, always widened to fp32.
template <typename T>
struct Storage;

template <>
struct Storage<float> {
  __device__ __forceinline__ static void load4(const float* p, float out[4]) {
    const float4 v = __ldg(reinterpret_cast<const float4*>(p));
    out[0] = v.x; out[1] = v.y; out[2] = v.z; out[3] = v.w;
  }
  __device__ __forceinline__ static float load1(const float* p) { return __ldg(p); }
  __device__ __forceinline__ static void store1(float* p, float v) { *p = v; }
};

template <>
struct Storage<bf16> {
  // 4 x bf16 = one 8-byte load.
  __device__ __forceinline__ static void load4(const bf16* p, float out[4]) {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
    out[0] = __uint_as_float(v.x << 16);
    out[1] = __uint_as_float(v.x & 0xffff0000u);
    out[2] = __uint_as_float(v.y << 16);
    out[3] = __uint_as_float(v.y & 0xffff0000u);
  }
  __device__ __forceinline__ static float load1(const bf16* p) {
    return __uint_as_float(static_cast<unsigned>(__ldg(reinterpret_cast<const unsigned short*>(p))) << 16);
  }
  __device__ __forceinline__ static void store1(bf16* p, float v) { *p = float_to_bf16(v); }
};

// Raw (not yet widened) storage of kVec consecutive elements: what a row
// buffer holds while its loads are in flight. bf16 stays packed (half the
// registers), so deeper prefetching costs less.
template <typename T, int kVec>
struct RawVec;
template <>
struct RawVec<float, 4> {
  using type = float4;
  __device__ __forceinline__ static type load(const float* p) { return __ldg(reinterpret_cast<const float4*>(p)); }
  __device__ __forceinline__ static type zero() { return make_float4(0.f, 0.f, 0.f, 0.f); }
  __device__ __forceinline__ static void widen(type v, float* out) {
    out[0] = v.x; out[1] = v.y; out[2] = v.z; out[3] = v.w;
  }
};
template <>
struct RawVec<bf16, 4> {
  using type = uint2;
  __device__ __forceinline__ static type load(const bf16* p) { return __ldg(reinterpret_cast<const uint2*>(p)); }
  __device__ __forceinline__ static type zero() { return make_uint2(0u, 0u); }
  __device__ __forceinline__ static void widen(type v, float* out) {
    out[0] = __uint_as_float(v.x << 16);
    out[1] = __uint_as_float(v.x & 0xffff0000u);
    out[2] = __uint_as_float(v.y << 16);
    out[3] = __uint_as_float(v.y & 0xffff0000u);
  }
};
template <typename T>
struct RawVec<T, 1> {
  using type = T;
  __device__ __forceinline__ static type load(const T* p) {
    if constexpr (sizeof(T) == 4) {
      return __ldg(p);
    } else {
      return T{__ldg(reinterpret_cast<const unsigned short*>(p))};
    }
  }
  __device__ __forceinline__ static type zero() { return T{}; }
  __device__ __forceinline__ static void widen(type v, float* out) { out[0] = to_float(v); }
};

// A row's chunks for this sub-lane, raw; chunks at or beyond D read as zero.
template <typename T, int kLanes, int kVec, int kChunks>
__device__ __forceinline__ void load_row_raw(const T* __restrict__ row, int dim, int sub,
                                             typename RawVec<T, kVec>::type out[kChunks]) {
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int e = (c * kLanes + sub) * kVec;
    out[c] = e < dim ? RawVec<T, kVec>::load(row + e) : RawVec<T, kVec>::zero();
  }
}

template <typename T, int kVec, int kChunks>
__device__ __forceinline__ void widen_row(const typename RawVec<T, kVec>::type in[kChunks],
                                          float out[kVec * kChunks]) {
#pragma unroll
  for (int c = 0; c < kChunks; ++c) RawVec<T, kVec>::widen(in[c], out + c * kVec);
}

template <typename T, int kLanes, int kVec, int kChunks>
__device__ __forceinline__ void load_row_lanes(const T* __restrict__ row, int dim, int sub,
                                               float out[kVec * kChunks]) {
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int e = (c * kLanes + sub) * kVec;
    if constexpr (kVec == 4) {
      if (e < dim) {
        Storage<T>::load4(row + e, out + c * 4);
      } else {
        out[c * 4 + 0] = out[c * 4 + 1] = out[c * 4 + 2] = out[c * 4 + 3] = 0.f;
      }
    } else {
      out[c] = e < dim ? Storage<T>::load1(row + e) : 0.f;
    }
  }
}

// Element index of slot k of sub-lane `sub` (slot k = c*kVec + v).
template <int kLanes, int kVec>
__device__ __forceinline__ int lane_element(int k, int sub) {
  return ((k / kVec) * kLanes + sub) * kVec + (k % kVec);
}

// Sum over the kLanes lanes of each aligned group; every lane gets its group's sum.
template <int kLanes>
__device__ __forceinline__ float group_allreduce_sum(float v) {
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// Workspace carving: every sub-buffer starts 256-byte aligned.
inline std::size_t align256(std::size_t n) { return (n + 255) & ~std::size_t(255); }

inline unsigned ceil_div(std::int64_t a, std::int64_t b) {
  return static_cast<unsigned>((a + b - 1) / b);
}

}  // namespace cuda
}  // namespace npid

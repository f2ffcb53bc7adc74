// bank.cu -- memory-bank initialization and momentum update on CUDA.
//
// bank_initialize_kernel: one warp per row; lane l computes element groups
//   l, l+32, ... from Philox (common/bank_init.h), for kUnit normalizes the row
//   with a warp reduction, then stores (rounding once for a bf16 bank).
// bank_update_kernel: one warp per batch sample i. The warp first checks
//   whether targets[i] occurs again later in the batch (lanes scan j > i,
//   __any_sync); if so it does nothing, so the last occurrence wins and no two
//   warps write one row. Otherwise it reads the old row and f_i, forms
//   m*v + (1-m)*f, and writes it normalized. Launch after every read of the
//   step (same stream): the update reads and writes rows in place.
#include <cuda_runtime.h>

#include "bank.h"
#include "common/bank_init.h"
#include "common/bf16.h"
#include "common/cuda_utils.cuh"
#include "core/check.h"
#include "core/context_impl.h"

namespace npid {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;

// Values in fp32; for kUnit the row is normalized before the one rounding to
// T. Lane l holds element groups l, l+32, ... (D <= 512: at most 4 groups).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    bank_initialize_kernel(T* __restrict__ bank, std::int64_t rows, int dim, int init,
                           std::uint64_t seed, float scale) {
  const std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  T* row = bank + r * dim;
  const int groups = (dim + 3) / 4;
  constexpr int kMaxGroupsPerLane = 4;
  float v[kMaxGroupsPerLane][4];
  float ss = 0.f;
#pragma unroll
  for (int q = 0; q < kMaxGroupsPerLane; ++q) {
    const int g = q * 32 + lane;
    if (g >= groups) continue;
    if (init == static_cast<int>(BankInit::kUniform)) {
      bank_uniform_group(seed, r, g, scale, v[q]);
    } else {
      bank_normal_group(seed, r, g, v[q]);
    }
#pragma unroll
    for (int k = 0; k < 4; ++k)
      if (4 * g + k < dim) ss = fmaf(v[q][k], v[q][k], ss);
  }
  float inv = 1.0f;
  if (init == static_cast<int>(BankInit::kUnit)) {
    ss = cuda::warp_allreduce_sum(ss);
    inv = 1.0f / fmaxf(sqrtf(ss), 1e-12f);
  }
#pragma unroll
  for (int q = 0; q < kMaxGroupsPerLane; ++q) {
    const int g = q * 32 + lane;
    if (g >= groups) continue;
#pragma unroll
    for (int k = 0; k < 4; ++k)
      if (4 * g + k < dim) row[4 * g + k] = from_float<T>(v[q][k] * inv);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    bank_update_kernel(T* __restrict__ bank, const float* __restrict__ features,
                       const std::int64_t* __restrict__ targets, std::int64_t batch, int dim,
                       float momentum) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (i >= batch) return;
  const std::int64_t y = targets[i];
  bool later = false;
  for (std::int64_t j = i + 1 + lane; j < batch; j += 32) later |= targets[j] == y;
  if (__any_sync(cuda::kFullMask, later)) return;

  T* row = bank + y * dim;
  const float* f = features + i * dim;
  // Up to 16 elements per lane in registers (D <= 512), then normalize.
  constexpr int kMaxPerLane = 16;
  float v[kMaxPerLane];
  float ss = 0.f;
#pragma unroll
  for (int k = 0; k < kMaxPerLane; ++k) {
    const int d = k * 32 + lane;
    v[k] = 0.f;
    if (d < dim) {
      v[k] = momentum * to_float(row[d]) + (1.0f - momentum) * f[d];
      ss = fmaf(v[k], v[k], ss);
    }
  }
  ss = cuda::warp_allreduce_sum(ss);
  const float inv = 1.0f / fmaxf(sqrtf(ss), 1e-12f);
#pragma unroll
  for (int k = 0; k < kMaxPerLane; ++k) {
    const int d = k * 32 + lane;
    if (d < dim) row[d] = from_float<T>(v[k] * inv);
  }
}

}  // namespace

void launch_bank_initialize(Context& ctx, void* bank, DType dtype, std::int64_t rows,
                            std::int64_t dim, BankInit init, std::uint64_t seed) {
  if (rows == 0) return;
  DeviceGuard guard(ctx.device());
  const float scale = sqrtf(3.0f / static_cast<float>(dim));
  const unsigned blocks = cuda::ceil_div(rows, kWarpsPerBlock);
  if (dtype == DType::kBFloat16) {
    bank_initialize_kernel<<<blocks, kThreads, 0, ctx.stream()>>>(
        static_cast<bf16*>(bank), rows, static_cast<int>(dim), static_cast<int>(init), seed, scale);
  } else {
    bank_initialize_kernel<<<blocks, kThreads, 0, ctx.stream()>>>(
        static_cast<float*>(bank), rows, static_cast<int>(dim), static_cast<int>(init), seed, scale);
  }
  NPID_CHECK_LAUNCH(ctx, "bank_initialize_kernel");
}

void launch_bank_update(Context& ctx, const BankUpdateProblem& p) {
  if (p.batch == 0) return;
  DeviceGuard guard(ctx.device());
  const unsigned blocks = cuda::ceil_div(p.batch, kWarpsPerBlock);
  if (p.bank_dtype == DType::kBFloat16) {
    bank_update_kernel<<<blocks, kThreads, 0, ctx.stream()>>>(
        static_cast<bf16*>(p.bank), p.features, p.targets, p.batch, static_cast<int>(p.dim), p.momentum);
  } else {
    bank_update_kernel<<<blocks, kThreads, 0, ctx.stream()>>>(
        static_cast<float*>(p.bank), p.features, p.targets, p.batch, static_cast<int>(p.dim), p.momentum);
  }
  NPID_CHECK_LAUNCH(ctx, "bank_update_kernel");
}

}  // namespace npid

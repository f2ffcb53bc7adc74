// nce.cu -- fused NCE forward+backward on CUDA (npid-reference s.2-4).
//
// Design. The op is a gather of B*(K+1) bank rows (537 MB at B=256, K=4096,
// D=128 in fp32) followed by O(D) arithmetic per row, so it is bound by memory
// bandwidth and the goal is to read each gathered row exactly once. Every
// NCE coefficient depends only on its own P_ij (no row-wide normalization), so
// one pass can produce the score, the loss term and the row's contribution to
// dL/df_i while the row sits in registers.
//
//   nce_forward_backward_kernel  grid (splits, B), 256 threads. Block (s, i)
//       owns a contiguous range of 32-column tiles of sample i; each warp
//       takes tiles round-robin. Per tile, lane l resolves the index of column
//       l (positive, explicit negative, or an in-kernel Philox draw), then the
//       warp walks the tile kUnroll rows at a time: all lanes issue their
//       vector loads of kUnroll rows (one row = one coalesced warp access),
//       reduce the dot products by butterfly shuffles, and accumulate
//       coef * row into per-lane gradient registers. Warps then combine
//       through shared memory in a fixed order and the block writes one
//       partial gradient / loss / sum-exp for (i, s).
//   nce_finalize_kernel          grid B: sums the partials of sample i in
//       split order, adds the proximal term, writes grad_features.
//   nce_reduce_kernel            1 block: batch loss and Z in fixed order.
//
// With ZUpdate::kInitFromBatch a score-only pass of the gather kernel runs
// first (scores and exp sums only) to set Z before the main pass; that happens
// once per run under the first_batch and ema policies.
//
// Determinism: no atomics; every reduction has a fixed order, so results are
// bitwise reproducible for a given device and shape. `splits` depends on the
// device's SM count and occupancy, so bits may differ across GPU models.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <utility>

#include "common/cuda_utils.cuh"
#include "common/sampling.h"
#include "core/check.h"
#include "core/context_impl.h"
#include "nce.h"

namespace npid {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Upper bound on column splits per sample; sizes the partial buffers.
constexpr int kMaxSplits = 32;

struct NceKernelParams {
  const float* features;
  const std::int64_t* targets;
  const void* bank;
  const std::int64_t* negatives;
  std::int64_t batch, dim, bank_size, num_negatives;
  const float* z;
  float inv_tau;
  float noise;        // a = K/N + eps
  float kpn;          // K/N = K * Pn
  float inv_batch;
  float lambda;
  bool exclude_positive;
  bool score_only;
  std::uint64_t seed, step;
  int splits;
  float* partial_grad;     // (B, splits, D)
  float* partial_loss;     // (B, splits)
  float* partial_sum_exp;  // (B, splits)
  float* probs;            // (B, K+1) or null
  std::int64_t* indices;   // (B, K+1) or null
};

// ---- kernels ----------------------------------------------------------------

// Resident blocks per SM the compiler must allow: 3 (80 registers, no spills)
// for the narrow layouts that serve D <= 128; 2 for the wide ones.
template <int kPerLane>
constexpr int kMinBlocks = kPerLane <= 4 ? 3 : 2;

template <typename T, int kVec, int kChunks>
__global__ void __launch_bounds__(kThreads, kMinBlocks<kVec * kChunks>)
    nce_forward_backward_kernel(const NceKernelParams p) {
  static_assert(kVec == 1 || kVec == 4, "rows are read as scalars or 4-vectors");
  constexpr int kPerLane = kVec * kChunks;
  // Rows in flight per warp: ~32 floats of row data per lane.
  constexpr int kUnroll = kPerLane >= 32 ? 1 : 32 / kPerLane;
  static_assert(32 % kUnroll == 0, "a tile's 32 columns split evenly into unrolled groups");

  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const std::int64_t i = blockIdx.y;
  const int split = blockIdx.x;
  const int dim = static_cast<int>(p.dim);
  const std::int64_t K = p.num_negatives;
  const std::int64_t kp1 = K + 1;
  const T* __restrict__ bank = static_cast<const T*>(p.bank);

  float f[kPerLane], g[kPerLane];
  cuda::load_row_lanes<float, kVec, kChunks>(p.features + i * dim, dim, lane, f);
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) g[k] = 0.f;

  const std::int64_t y = p.targets[i];
  const float inv_z = p.score_only ? 0.f : 1.f / *p.z;
  float loss_acc = 0.f, sum_exp_acc = 0.f;

  const std::int64_t tiles = (kp1 + 31) / 32;
  const std::int64_t t_begin = tiles * split / p.splits;
  const std::int64_t t_end = tiles * (split + 1) / p.splits;

  for (std::int64_t t = t_begin + warp; t < t_end; t += kWarps) {
    const std::int64_t col0 = t * 32;
    const int ncols = static_cast<int>(min(static_cast<std::int64_t>(32), kp1 - col0));
    // Lane l resolves column col0 + l; rows are then broadcast by shuffle.
    std::int64_t my_idx = 0;
    if (lane < ncols) {
      const std::int64_t col = col0 + lane;
      if (col == 0) {
        my_idx = y;
      } else if (p.negatives != nullptr) {
        my_idx = p.negatives[i * K + (col - 1)];
      } else {
        my_idx = nce_negative_index(p.seed, p.step, i, col, p.bank_size, y, p.exclude_positive);
      }
      if (p.indices != nullptr) p.indices[i * kp1 + col] = my_idx;
    }

    for (int u0 = 0; u0 < ncols; u0 += kUnroll) {
      float r[kUnroll][kPerLane];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const std::int64_t row = __shfl_sync(cuda::kFullMask, my_idx, u0 + u);
        if (u0 + u < ncols) {
          cuda::load_row_lanes<T, kVec, kChunks>(bank + row * dim, dim, lane, r[u]);
        } else {
#pragma unroll
          for (int k = 0; k < kPerLane; ++k) r[u][k] = 0.f;
        }
      }
      float s[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        float acc = 0.f;
#pragma unroll
        for (int k = 0; k < kPerLane; ++k) acc = fmaf(f[k], r[u][k], acc);
        s[u] = acc;
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) s[u] = cuda::warp_allreduce_sum(s[u]);

#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (u0 + u >= ncols) continue;  // warp-uniform
        const float e = expf(s[u] * p.inv_tau);
        sum_exp_acc += e;
        if (p.score_only) continue;
        const std::int64_t col = col0 + u0 + u;
        const float prob = e * inv_z;
        float coef;
        if (col == 0) {
          // -log(P/(P+a)) = log1p(a/P);  dL/ds * B * tau = -(a/(P+a))
          loss_acc += log1pf(p.noise / prob);
          coef = -p.noise / (prob + p.noise);
        } else {
          // -log((K/N)/(P+a)) = log1p((P+eps)/(K/N));  dL/ds * B * tau = P/(P+a)
          loss_acc += log1pf((prob + static_cast<float>(kNceEps)) / p.kpn);
          coef = prob / (prob + p.noise);
        }
#pragma unroll
        for (int k = 0; k < kPerLane; ++k) g[k] = fmaf(coef, r[u][k], g[k]);
        if (p.probs != nullptr && lane == 0) p.probs[i * kp1 + col] = prob;
      }
    }
  }

  // Combine the warps in a fixed order.
  __shared__ float s_grad[kWarps][kMaxDim];
  __shared__ float s_loss[kWarps], s_sum_exp[kWarps];
  if (!p.score_only) {
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int e = cuda::lane_element<kVec>(k, lane);
      if (e < dim) s_grad[warp][e] = g[k];
    }
  }
  if (lane == 0) {
    s_loss[warp] = loss_acc;
    s_sum_exp[warp] = sum_exp_acc;
  }
  __syncthreads();
  const std::int64_t slot = i * p.splits + split;
  if (!p.score_only) {
    const float scale = p.inv_batch * p.inv_tau;
    for (int d = threadIdx.x; d < dim; d += kThreads) {
      float acc = 0.f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) acc += s_grad[w][d];
      p.partial_grad[slot * dim + d] = acc * scale;
    }
  }
  if (threadIdx.x == 0) {
    float l = 0.f, se = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      l += s_loss[w];
      se += s_sum_exp[w];
    }
    p.partial_loss[slot] = l * p.inv_batch;
    p.partial_sum_exp[slot] = se;
  }
}

// Per sample: gradient = sum of split partials + proximal gradient; the
// sample's loss and exp-sum go to per-sample slots for nce_reduce_kernel.
template <typename T>
__global__ void __launch_bounds__(128)
    nce_finalize_kernel(const NceKernelParams p, float* __restrict__ grad,
                        float* __restrict__ sample_loss, float* __restrict__ sample_sum_exp) {
  const std::int64_t i = blockIdx.x;
  const int dim = static_cast<int>(p.dim);
  const T* pos = static_cast<const T*>(p.bank) + p.targets[i] * dim;
  const float* f = p.features + i * dim;
  const float prox_scale = 2.f * p.lambda * p.inv_batch;
  float prox = 0.f;
  for (int d = threadIdx.x; d < dim; d += blockDim.x) {
    float acc = 0.f;
    for (int s = 0; s < p.splits; ++s) acc += p.partial_grad[(i * p.splits + s) * dim + d];
    const float diff = f[d] - cuda::Storage<T>::load1(pos + d);
    prox = fmaf(diff, diff, prox);
    grad[i * dim + d] = fmaf(prox_scale, diff, acc);
  }
  __shared__ float s_prox[128];
  s_prox[threadIdx.x] = prox;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total_prox = 0.f;
    for (int t = 0; t < static_cast<int>(blockDim.x); ++t) total_prox += s_prox[t];
    float l = 0.f, se = 0.f;
    for (int s = 0; s < p.splits; ++s) {
      l += p.partial_loss[i * p.splits + s];
      se += p.partial_sum_exp[i * p.splits + s];
    }
    sample_loss[i] = l + p.lambda * p.inv_batch * total_prox;
    sample_sum_exp[i] = se;
  }
}

// One block: loss = sum(loss_terms) (when loss != null), and Z per mode:
//   kInitFromBatch: z = N * sum(sum_exp) / (B*(K+1))
//   kEmaFromBatch:  z = decay * z + (1 - decay) * N * sum(sum_exp) / (B*(K+1))
constexpr int kReduceThreads = 256;
__global__ void __launch_bounds__(kReduceThreads)
    nce_reduce_kernel(const float* __restrict__ loss_terms, const float* __restrict__ sum_exp,
                      std::int64_t count, float* __restrict__ loss, float* __restrict__ z,
                      int z_mode, double n_over_entries, float decay) {
  __shared__ double s_loss[kReduceThreads], s_exp[kReduceThreads];
  double l = 0.0, e = 0.0;
  for (std::int64_t k = threadIdx.x; k < count; k += kReduceThreads) {
    if (loss_terms != nullptr) l += loss_terms[k];
    e += sum_exp[k];
  }
  s_loss[threadIdx.x] = l;
  s_exp[threadIdx.x] = e;
  __syncthreads();
  for (int stride = kReduceThreads / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) {
      s_loss[threadIdx.x] += s_loss[threadIdx.x + stride];
      s_exp[threadIdx.x] += s_exp[threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    if (loss != nullptr) *loss = static_cast<float>(s_loss[0]);
    const double estimate = s_exp[0] * n_over_entries;
    if (z_mode == static_cast<int>(ZUpdate::kInitFromBatch)) {
      *z = static_cast<float>(estimate);
    } else if (z_mode == static_cast<int>(ZUpdate::kEmaFromBatch)) {
      *z = static_cast<float>(decay * static_cast<double>(*z) + (1.0 - decay) * estimate);
    }
  }
}

// ---- launchers --------------------------------------------------------------

using GatherKernel = void (*)(NceKernelParams);

// Dispatch table (storage T = float; a bf16 bank adds one column):
//   D % 4 == 0, 16-byte aligned rows:  kVec 4 x kChunks {1, 2, 4}  (D <= 128, 256, 512)
//   otherwise:                         kVec 1 x kChunks {4, 16}    (D <= 128, 512)
template <typename T>
GatherKernel pick_gather_kernel(std::int64_t dim, bool vec4) {
  if (vec4) {
    if (dim <= 128) return nce_forward_backward_kernel<T, 4, 1>;
    if (dim <= 256) return nce_forward_backward_kernel<T, 4, 2>;
    return nce_forward_backward_kernel<T, 4, 4>;
  }
  if (dim <= 128) return nce_forward_backward_kernel<T, 1, 4>;
  return nce_forward_backward_kernel<T, 1, 16>;
}

// Resident blocks per SM of `kernel` on the current device (cached).
int blocks_per_sm(GatherKernel kernel, int device) {
  static std::mutex mutex;
  static std::map<std::pair<GatherKernel, int>, int> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find({kernel, device});
  if (it != cache.end()) return it->second;
  int blocks = 0;
  NPID_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kThreads, 0));
  cache[{kernel, device}] = blocks;
  return blocks;
}

// Column splits per sample: enough blocks for one full wave of the device.
int choose_splits(Context& ctx, GatherKernel kernel, std::int64_t batch, std::int64_t kp1) {
  const int per_sm = blocks_per_sm(kernel, ctx.device().index);
  const std::int64_t resident =
      static_cast<std::int64_t>(std::max(1, per_sm)) * ctx.device_info().multiprocessors;
  const std::int64_t tiles = (kp1 + 31) / 32;
  const std::int64_t splits = std::max<std::int64_t>(1, resident / batch);
  return static_cast<int>(std::min<std::int64_t>({splits, tiles, kMaxSplits}));
}

std::size_t align_up(std::size_t n) { return (n + 255) & ~std::size_t(255); }

}  // namespace

std::size_t nce_cuda_workspace_bytes(std::int64_t batch, std::int64_t dim) {
  const auto b = static_cast<std::size_t>(batch);
  const auto slots = b * kMaxSplits;
  return align_up(slots * static_cast<std::size_t>(dim) * sizeof(float)) +  // partial_grad
         2 * align_up(slots * sizeof(float)) +                              // partial loss, sum_exp
         2 * align_up(b * sizeof(float));                                   // per-sample loss, sum_exp
}

void launch_nce_forward_backward(Context& ctx, const NceProblem& pr, ZUpdate z_update) {
  DeviceGuard guard(ctx.device());
  cudaStream_t stream = ctx.stream();
  Workspace& ws = ctx.workspace();
  ws.reserve(nce_cuda_workspace_bytes(pr.batch, pr.dim), stream);

  const std::int64_t kp1 = pr.num_negatives + 1;
  const bool vec4 = pr.dim % 4 == 0 && reinterpret_cast<std::uintptr_t>(pr.features) % 16 == 0 &&
                    reinterpret_cast<std::uintptr_t>(pr.bank) % 16 == 0;
  const GatherKernel gather = pick_gather_kernel<float>(pr.dim, vec4);
  const int splits = choose_splits(ctx, gather, pr.batch, kp1);

  // Carve the workspace.
  char* cursor = static_cast<char*>(ws.data());
  auto carve = [&cursor](std::size_t bytes) {
    float* out = reinterpret_cast<float*>(cursor);
    cursor += align_up(bytes);
    return out;
  };
  const auto slots = static_cast<std::size_t>(pr.batch) * kMaxSplits;
  float* partial_grad = carve(slots * static_cast<std::size_t>(pr.dim) * sizeof(float));
  float* partial_loss = carve(slots * sizeof(float));
  float* partial_sum_exp = carve(slots * sizeof(float));
  float* sample_loss = carve(static_cast<std::size_t>(pr.batch) * sizeof(float));
  float* sample_sum_exp = carve(static_cast<std::size_t>(pr.batch) * sizeof(float));

  NceKernelParams p{};
  p.features = pr.features;
  p.targets = pr.targets;
  p.bank = pr.bank;
  p.negatives = pr.negatives;
  p.batch = pr.batch;
  p.dim = pr.dim;
  p.bank_size = pr.bank_size;
  p.num_negatives = pr.num_negatives;
  p.z = pr.z;
  p.inv_tau = 1.0f / pr.temperature;
  const double kpn = static_cast<double>(pr.num_negatives) / static_cast<double>(pr.bank_size);
  p.noise = static_cast<float>(kpn + kNceEps);
  p.kpn = static_cast<float>(kpn);
  p.inv_batch = 1.0f / static_cast<float>(pr.batch);
  p.lambda = pr.lambda;
  p.exclude_positive = pr.exclude_positive;
  p.seed = pr.seed;
  p.step = pr.step;
  p.splits = splits;
  p.partial_grad = partial_grad;
  p.partial_loss = partial_loss;
  p.partial_sum_exp = partial_sum_exp;

  const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(pr.batch));
  const double n_over_entries =
      static_cast<double>(pr.bank_size) / (static_cast<double>(pr.batch) * static_cast<double>(kp1));

  if (z_update == ZUpdate::kInitFromBatch) {
    NceKernelParams score = p;
    score.score_only = true;
    gather<<<grid, kThreads, 0, stream>>>(score);
    NPID_CHECK_LAUNCH(ctx, "nce_forward_backward_kernel (score pass)");
    nce_reduce_kernel<<<1, kReduceThreads, 0, stream>>>(
        nullptr, partial_sum_exp, pr.batch * splits, nullptr, pr.z,
        static_cast<int>(ZUpdate::kInitFromBatch), n_over_entries, pr.z_decay);
    NPID_CHECK_LAUNCH(ctx, "nce_reduce_kernel (Z init)");
  }

  p.probs = pr.probs;
  p.indices = pr.indices;
  gather<<<grid, kThreads, 0, stream>>>(p);
  NPID_CHECK_LAUNCH(ctx, "nce_forward_backward_kernel");
  nce_finalize_kernel<float><<<static_cast<unsigned>(pr.batch), 128, 0, stream>>>(
      p, pr.grad, sample_loss, sample_sum_exp);
  NPID_CHECK_LAUNCH(ctx, "nce_finalize_kernel");
  const int z_mode = z_update == ZUpdate::kEmaFromBatch ? static_cast<int>(ZUpdate::kEmaFromBatch)
                                                        : static_cast<int>(ZUpdate::kKeep);
  nce_reduce_kernel<<<1, kReduceThreads, 0, stream>>>(sample_loss, sample_sum_exp, pr.batch,
                                                      pr.loss, pr.z, z_mode, n_over_entries,
                                                      pr.z_decay);
  NPID_CHECK_LAUNCH(ctx, "nce_reduce_kernel");
}

}  // namespace npid

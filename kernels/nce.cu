// nce.cu -- fused NCE forward+backward on CUDA (docs/math.md s.2-4).
//
// Design. The op is a gather of B*(K+1) bank rows (537 MB at B=256, K=4096,
// D=128 in fp32) followed by O(D) arithmetic per row, so it is bound by memory
// latency and bandwidth, and the goal is to read each gathered row exactly
// once with as many row loads in flight as possible. Every NCE coefficient
// depends only on its own P_ij (no row-wide normalization), so one pass can
// produce the score, the loss term and the row's contribution to dL/df_i while
// the row sits in registers. With the bank in L2 the kernel is partly
// issue-bound (~25 cycles per row per SM on an H200), so the per-row
// instruction count matters: a row's chunk address is one 32x32->64 multiply-
// add from a per-lane base, and the exp / reciprocal / log are the bare
// hardware approximations (ftz; the library versions add denormal fix-ups
// that never apply here).
//
//   nce_negatives_kernel  grid (splits, B), 256 threads. Block (s, i) owns a
//       contiguous range of 32-column tiles of sample i's K negatives; each
//       warp takes tiles round-robin. Per tile, lane l resolves the row of
//       negative l (explicit, or an in-kernel Philox draw). The warp then walks
//       the tile in steps of 32/kLanes rows: kLanes lanes share one row (vector
//       loads, fully used sectors), so the per-row scalar math (exp, log,
//       reciprocal) is shared by the group, and a ring of kStages raw row
//       buffers keeps kStages - 1 steps of loads in flight while one step is
//       computed (a bf16 row stays packed until it is used).
//       Dot products reduce within each lane group by shuffles; coef * row
//       accumulates in per-lane registers; groups, then warps (shared memory,
//       fixed order) combine, and the block writes one partial gradient /
//       loss / exp-sum for (i, s).
//   nce_negatives_async_kernel  the same grid, math and epilogue, with the row
//       ring in shared memory filled by cp.async and run on across a warp's
//       tiles (deeper pipelines for no registers); the bf16 default (8 lanes x
//       4 stages, H200 sweep of 2026-12-04), else a tuning variant chosen
//       through nce_set_layout_override. Everything that changes per tile
//       (row indices, valid columns, the P output) is set once per tile, so
//       a step is 32-bit index work, the copies and the row's math:
//       tools/sass_steps.py counts it (bf16 8 x 4: 133 instructions per
//       step of 4 rows, from 196 before the per-tile bookkeeping).
//   nce_negatives_mma_kernel  the same grid, tile walk and epilogue, for bf16
//       banks with D = 128 (through the override until a device sweep
//       decides): both O(D) products per row on tensor cores (mma.sync on
//       rows read from a swizzled cp.async ring with ldmatrix), fp32 accuracy
//       kept by splitting f and the coefficients into three bf16 parts; see
//       its section below.
//   nce_finalize_kernel   grid B: the positive column (it reads V[y_i] for the
//       proximal term anyway), the sum of the split partials in split order,
//       the proximal term; writes grad_features and per-sample loss / exp-sum.
//   nce_reduce_kernel     1 block: batch loss and Z, in double (cub::BlockReduce).
//
// With ZUpdate::kInitFromBatch a score-only pass (exp sums only) runs first to
// set Z before the main pass: once per run under the first_batch and ema
// policies.
//
// Determinism: no atomics; every reduction has a fixed order, so results are
// bitwise reproducible for a given device and shape. `splits` depends on the
// device's SM count and occupancy, so bits may differ across GPU models.
#include <cuda_runtime.h>

#include <cub/block/block_reduce.cuh>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <utility>

#include "common/cuda_utils.cuh"
#include "common/mma_layout.h"
#include "common/sampling.h"
#include "core/check.h"
#include "core/context_impl.h"
#include "nce.h"

namespace npid {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Upper bound on column splits per sample; sizes the partial buffers.
constexpr int kMaxSplits = 64;

struct NceKernelParams {
  const float* features;
  const std::int64_t* targets;
  const void* bank;
  const std::int64_t* negatives;
  std::int64_t batch, dim, bank_size, num_negatives;
  const float* z;
  float inv_tau;
  float inv_tau_log2e;  // exp(s/tau) = exp2(s * inv_tau_log2e)
  float noise;        // a = K/N + eps
  float inv_kpn;      // N/K
  float inv_batch;
  float lambda;
  bool exclude_positive;
  bool score_only;
  std::uint64_t seed, step;
  const std::uint64_t* step_device;  // overrides step when set (graph replay)
  int splits;
  float* partial_grad;     // (B, splits, D)
  float* partial_loss;     // (B, splits)
  float* partial_sum_exp;  // (B, splits)
  float* probs;            // (B, K+1) or null
  std::int64_t* indices;   // (B, K+1) or null
};

// ---- kernels ----------------------------------------------------------------

// The hardware approximations without the denormal fix-ups that exp2f,
// __fdividef and __logf wrap around them (three to four instructions each,
// per row): identical results for normal arguments and results, which is all
// the per-row math sees for unit-norm rows -- exp(s/tau) would flush to 0 only
// below 2^-126 (s/tau < -87; a denormal < 2^-126 then becomes 0), and every
// divisor here is >= K/N.
__device__ __forceinline__ float ex2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float rcp_ftz(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float lg2_ftz(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
// base + row * row_bytes as one 32 x 32 -> 64-bit multiply-add (a C++ 64-bit
// product compiles to the multiply plus an add of a zero high word).
__device__ __forceinline__ const char* row_chunk(const char* base, std::uint32_t row, std::uint32_t row_bytes) {
  std::uint64_t offset;
  asm("mul.wide.u32 %0, %1, %2;" : "=l"(offset) : "r"(row), "r"(row_bytes));
  return base + offset;
}

// Per-lane addresses of this lane's chunks in bank row 0, so that a row's
// chunk is row_chunk(base[cc], row, row_bytes) and one load. Chunk cc holds
// elements (cc * kLanes + sub) * kVec ...; chunks at or beyond D point at the
// row's last chunk instead: finite values of the same row, met by the zero
// feature slots (the dot is unchanged) and accumulated into gradient slots
// that write_partials never writes.
template <typename T, int kLanes, int kVec, int kChunks>
__device__ __forceinline__ void lane_chunk_bases(const T* bank, int dim, int sub, const char* (&base)[kChunks]) {
#pragma unroll
  for (int cc = 0; cc < kChunks; ++cc)
    base[cc] = reinterpret_cast<const char*>(bank + min((cc * kLanes + sub) * kVec, dim - kVec));
}

// Where a thread of a gather block sits: lane and warp, lane sub within its
// row group of kLanes, and the group; the block's sample i and column split.
template <int kLanes>
struct GatherThread {
  int lane = threadIdx.x & 31;
  int warp = threadIdx.x >> 5;
  int sub = lane % kLanes;
  int group = lane / kLanes;
  std::int64_t i = blockIdx.y;
  int split = blockIdx.x;
};

// What a gather block needs of its sample i: the positive y, 1/Z (0 in the
// score-only pass), the sampling step (from the device word under graph
// replay), and its split's range [t_begin, t_end) of 32-column tiles.
struct GatherSample {
  std::int64_t y;
  float inv_z;
  std::uint64_t step;
  std::int64_t t_begin, t_end;
  __device__ __forceinline__ GatherSample(const NceKernelParams& p, std::int64_t i, int split) {
    y = p.targets[i];
    inv_z = p.score_only ? 0.f : 1.f / *p.z;
    step = p.step_device != nullptr ? *p.step_device : p.step;
    const std::int64_t tiles = (p.num_negatives + 31) / 32;
    t_begin = tiles * split / p.splits;
    t_end = tiles * (split + 1) / p.splits;
  }
};

// The bank row of sample i's negative n (its column n + 1), given or drawn
// in the kernel, and recorded in p.indices when that is asked for.
__device__ __forceinline__ std::int64_t negative_row(const NceKernelParams& p, std::int64_t i, std::int64_t n,
                                                     std::uint64_t step, std::int64_t y) {
  const std::int64_t row = p.negatives != nullptr
                               ? p.negatives[i * p.num_negatives + n]
                               : nce_negative_index(p.seed, step, i, n + 1, p.bank_size, y, p.exclude_positive);
  if (p.indices != nullptr) p.indices[i * (p.num_negatives + 1) + n + 1] = row;
  return row;
}

// A warp's walk over its split's tiles of sample i in the tensor-core
// gather (the async FMA ring spells the same walk out), which runs on across
// tiles: tiles first, first + kWarps, ... below
// the split's end; tile j starts at negative n0(j) and holds columns(j)
// (<= 32) of them.
struct WarpTiles {
  std::int64_t first;
  int count;
  __device__ __forceinline__ WarpTiles(const GatherSample& s, int warp)
      : first(s.t_begin + warp),
        count(first < s.t_end ? static_cast<int>((s.t_end - first + kWarps - 1) / kWarps) : 0) {}
  __device__ __forceinline__ std::int64_t n0(int j) const { return (first + static_cast<std::int64_t>(j) * kWarps) * 32; }
  __device__ __forceinline__ int columns(const NceKernelParams& p, int j) const {
    return static_cast<int>(min(static_cast<std::int64_t>(32), p.num_negatives - n0(j)));
  }
  // Lane l's bank row for column l of tile j (0 past the last tile or
  // column), as a 32-bit index: the entry point requires N < 2^31.
  __device__ __forceinline__ int resolve(const NceKernelParams& p, std::int64_t i, const GatherSample& s, int j,
                                         int lane) const {
    std::int64_t idx = 0;
    if (j < count) {
      const std::int64_t start = n0(j);
      if (lane < p.num_negatives - start) idx = negative_row(p, i, start + lane, s.step, s.y);
    }
    return static_cast<int>(idx);
  }
};

// log1p(x) for x >= 0, cheap and accurate to a few ulp: for x < 1/2 the series
// 2 atanh(u), u = x/(2+x) <= 1/5 (truncation after u^9: < 1e-8 relative);
// above, log2(1+x) ln 2 by the hardware approximation, whose absolute error
// 2^-21 is < 1e-6 of log(1.5).
__device__ __forceinline__ float fast_log1p(float x) {
  if (x < 0.5f) {
    const float u = x * rcp_ftz(2.0f + x), u2 = u * u;
    const float poly = fmaf(u2, fmaf(u2, fmaf(u2, fmaf(u2, 1.0f / 9, 1.0f / 7), 1.0f / 5), 1.0f / 3), 1.0f);
    return 2.0f * u * poly;
  }
  return lg2_ftz(1.0f + x) * 0.693147180559945309f;
}

// The NCE math of one negative column, shared by every gather kernel, from
// e = exp(s/tau) of the row's score (the caller adds e to its exp-sum; the
// score-only pass stops there): P, the loss term added to `loss_acc`, and the
// row's gradient coefficient P/(P+a).
struct NceColumn {
  float prob, coef;
};
__device__ __forceinline__ NceColumn nce_column(const NceKernelParams& p, float e, float inv_z, float& loss_acc) {
  // -log((K/N)/(P+a)) = log1p((P+eps)*N/K);  dL/ds * B * tau = P/(P+a)
  const float prob = e * inv_z;
  // The approximate reciprocal returns 0 for denominators above 2^126; P/(P+a)
  // is 1 to fp32 precision long before that, so clamp P first.
  const float coef = fminf(prob, 1e30f) * rcp_ftz(fminf(prob, 1e30f) + p.noise);
  loss_acc += fast_log1p((prob + static_cast<float>(kNceEps)) * p.inv_kpn);
  return {prob, coef};
}

// One negative column in the FMA gathers, where a lane holds kPerLane
// elements of the row: exp(s/tau) into the exp-sum (the same value on every
// lane of a group, counted once in write_partials), nce_column, and coef *
// row into the lane's gradient slots; writes P to `prob_out` when it is set,
// and returns it (0 in the score-only pass).
template <int kPerLane>
__device__ __forceinline__ float nce_row(const NceKernelParams& p, float dot, const float (&row)[kPerLane],
                                         float inv_z, float (&g)[kPerLane], float& loss_acc,
                                         float& sum_exp_acc, float* prob_out) {
  const float e = ex2_ftz(dot * p.inv_tau_log2e);
  sum_exp_acc += e;
  if (p.score_only) return 0.f;
  const NceColumn c = nce_column(p, e, inv_z, loss_acc);
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) g[k] = fmaf(c.coef, row[k], g[k]);
  if (prob_out != nullptr) *prob_out = c.prob;
  return c.prob;
}

// The block's combination, common to every gather kernel: each warp has
// written its partial gradient to `scratch` (row `warp`, `stride` floats
// apart; nothing in the score-only pass) and holds its loss and exp-sum
// (warp totals, on every lane); sum the warps in a fixed order and write the
// partials of (sample blockIdx.y, split blockIdx.x).
__device__ __forceinline__ void combine_partials(const NceKernelParams& p, float loss_acc, float sum_exp_acc,
                                                 const float* scratch, int stride) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int dim = static_cast<int>(p.dim);
  __shared__ float s_loss[kWarps], s_sum_exp[kWarps];
  if (lane == 0) {
    s_loss[warp] = loss_acc;
    s_sum_exp[warp] = sum_exp_acc;
  }
  __syncthreads();
  const std::int64_t slot = static_cast<std::int64_t>(blockIdx.y) * p.splits + blockIdx.x;
  if (!p.score_only) {
    const float scale = p.inv_batch * p.inv_tau;
    for (int d = threadIdx.x; d < dim; d += kThreads) {
      float acc = 0.f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) acc += scratch[w * stride + d];
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

// Block epilogue of the FMA gathers: combine lane groups (shuffles), then
// warps (through `scratch`, kWarps rows of `stride` floats in shared memory),
// in a fixed order, and write the block's partial gradient / loss / exp-sum
// for (sample blockIdx.y, split blockIdx.x).
template <int kLanes, int kVec, int kPerLane>
__device__ __forceinline__ void write_partials(const NceKernelParams& p, float (&g)[kPerLane],
                                               float loss_acc, float sum_exp_acc, float* scratch,
                                               int stride) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int sub = lane % kLanes;
  const int group = lane / kLanes;
  const int dim = static_cast<int>(p.dim);
  sum_exp_acc = cuda::warp_allreduce_sum(sub == 0 ? sum_exp_acc : 0.f);
  loss_acc = cuda::warp_allreduce_sum(sub == 0 ? loss_acc : 0.f);
  if (!p.score_only) {
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
#pragma unroll
      for (int offset = kLanes; offset < 32; offset <<= 1)
        g[k] += __shfl_xor_sync(cuda::kFullMask, g[k], offset);
    }
    if (group == 0) {
#pragma unroll
      for (int k = 0; k < kPerLane; ++k) {
        const int e = cuda::lane_element<kLanes, kVec>(k, sub);
        if (e < dim) scratch[warp * stride + e] = g[k];
      }
    }
  }
  combine_partials(p, loss_acc, sum_exp_acc, scratch, stride);
}

// Resident blocks per SM the compiler must allow (a register cap): from an
// estimate of the registers a thread needs -- feature and gradient slices,
// kStages raw row buffers (packed for bf16), a widened row, ~28 for the rest,
// 12 more for rings of 4 steps or deeper (their chunk addresses and indices:
// the fp32 16-lane ring spilled in its loop at 3 blocks) -- between 2 and 4
// blocks of 256 threads (65,536 registers per SM). Checked against ptxas's
// report (cuobjdump -res-usage): no spills inside the loop of any D <= 128
// variant.
template <typename T, int kPerLane, int kStages>
constexpr int min_blocks() {
  constexpr int raw = kPerLane * static_cast<int>(sizeof(T)) / 4;
  constexpr int est = 2 * kPerLane + kStages * raw + (sizeof(T) < 4 ? kPerLane : 0) + 28 + (kStages >= 4 ? 12 : 0);
  constexpr int blocks = 256 / est;
  return blocks < 2 ? 2 : blocks > 4 ? 4 : blocks;
}

template <typename T, int kLanes, int kVec, int kChunks, int kStages>
__global__ void __launch_bounds__(kThreads, (min_blocks<T, kVec * kChunks, kStages>()))
    nce_negatives_kernel(const NceKernelParams p) {
  static_assert(kVec == 1 || kVec == 4, "rows are read as scalars or 4-vectors");
  static_assert(kLanes == 8 || kLanes == 16 || kLanes == 32, "a row is read by 8, 16 or 32 lanes");
  static_assert(kStages >= 2, "at least one step of rows in flight while one is computed");
  using Raw = cuda::RawVec<T, kVec>;
  constexpr int kPerLane = kVec * kChunks;  // row elements per lane
  constexpr int kRows = 32 / kLanes;        // rows per warp step
  constexpr int kSteps = 32 / kRows;        // steps per 32-column tile

  const GatherThread<kLanes> at;
  const int lane = at.lane, warp = at.warp, sub = at.sub, group = at.group, split = at.split;
  const std::int64_t i = at.i;
  const int dim = static_cast<int>(p.dim);
  const std::int64_t K = p.num_negatives;
  const std::int64_t kp1 = K + 1;
  const T* __restrict__ bank = static_cast<const T*>(p.bank);

  float f[kPerLane], g[kPerLane];
  cuda::load_row_lanes<float, kLanes, kVec, kChunks>(p.features + i * dim, dim, sub, f);
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) g[k] = 0.f;

  const GatherSample sample(p, i, split);
  const std::int64_t y = sample.y, t_begin = sample.t_begin, t_end = sample.t_end;
  const float inv_z = sample.inv_z;
  const std::uint64_t step = sample.step;
  float loss_acc = 0.f, sum_exp_acc = 0.f;

  const std::uint32_t row_bytes = static_cast<std::uint32_t>(dim) * static_cast<std::uint32_t>(sizeof(T));
  const char* lane_base[kChunks];
  lane_chunk_bases<T, kLanes, kVec, kChunks>(bank, dim, sub, lane_base);

  for (std::int64_t t = t_begin + warp; t < t_end; t += kWarps) {
    const std::int64_t n0 = t * 32;  // first negative of the tile (column n0 + 1)
    const int ncols = static_cast<int>(min(static_cast<std::int64_t>(32), K - n0));
    // Lane l resolves negative n0 + l; rows are then broadcast by shuffle
    // (as 32-bit indices: the entry point requires N < 2^31).
    std::int64_t my_idx = 0;
    if (lane < ncols) {
      const std::int64_t n = n0 + lane;
      my_idx = negative_row(p, i, n, step, y);
    }

    // Rows of step s: column s*kRows + group of the tile, for each lane group.
    // A ring of kStages raw buffers keeps kStages - 1 steps of loads in flight
    // while one step is computed. Columns past a short tile's end load row 0
    // (lanes >= ncols hold index 0): valid memory, and their math is skipped.
    typename Raw::type buf[kStages][kChunks];
    auto load_step = [&](int s, typename Raw::type(&out)[kChunks]) {
      const int c = s * kRows + group;
      const auto row = static_cast<std::uint32_t>(__shfl_sync(cuda::kFullMask, static_cast<int>(my_idx), c));
#pragma unroll
      for (int cc = 0; cc < kChunks; ++cc)
        out[cc] = Raw::load(reinterpret_cast<const T*>(row_chunk(lane_base[cc], row, row_bytes)));
    };
    // P of column s*kRows + group goes to prob_tile + s*kRows (lane 0 of each
    // group writes; null when P is not asked for).
    float* const prob_tile = p.probs != nullptr && sub == 0 ? p.probs + i * kp1 + n0 + 1 + group : nullptr;
#pragma unroll
    for (int q = 0; q < kStages - 1; ++q)
      if (q < kSteps) load_step(q, buf[q]);
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      if (s * kRows >= ncols) break;  // warp-uniform
      if (s + kStages - 1 < kSteps) load_step(s + kStages - 1, buf[(s + kStages - 1) % kStages]);
      float row[kPerLane];
      cuda::widen_row<T, kVec, kChunks>(buf[s % kStages], row);
      float dot = 0.f;
#pragma unroll
      for (int k = 0; k < kPerLane; ++k) dot = fmaf(f[k], row[k], dot);
      dot = cuda::group_allreduce_sum<kLanes>(dot);
      const int c = s * kRows + group;
      if (c < ncols) {
        nce_row<kPerLane>(p, dot, row, inv_z, g, loss_acc, sum_exp_acc,
                          prob_tile != nullptr ? prob_tile + s * kRows : nullptr);
      }
    }
  }

  __shared__ float s_grad[kWarps][kMaxDim];
  write_partials<kLanes, kVec, kPerLane>(p, g, loss_acc, sum_exp_acc, &s_grad[0][0], kMaxDim);
}

// ---- async-ring variant -------------------------------------------------------
// Rows travel global -> shared memory by cp.async (16-byte chunks, L1
// bypassed), so a deep ring of kStages steps costs shared memory instead of
// registers. Each lane copies, and later reads, only its own chunks, so the
// ring needs no barrier. A warp walks all of its tiles as one sequence of
// steps, so the ring stays full across tile boundaries, and the next tile's
// row indices are resolved a whole tile ahead. For D <= 128 with 16-byte
// aligned rows (D % 4 == 0 for fp32, D % 8 == 0 for bf16); the arithmetic and
// the epilogue are the register-ring kernel's.
constexpr int kAsyncMaxDim = 128;

// Shared-memory operands as 32-bit shared-window addresses: one register per
// address, kept across the loop (a generic pointer costs two, and the
// compiler would rebuild it from the thread index at every use).
__device__ __forceinline__ void cp_async_16(unsigned smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem), "l"(gmem) : "memory");
}
__device__ __forceinline__ uint4 ld_shared_16(unsigned smem) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(smem)
               : "memory");
  return v;
}
// The same, copying `src_bytes` (16 or 0) and zero-filling the rest: 0 reads
// nothing and leaves 16 zero bytes.
__device__ __forceinline__ void cp_async_16_zfill(unsigned smem, const void* gmem, unsigned src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// 16 raw bytes of storage T -> 16 / sizeof(T) floats.
template <typename T>
__device__ __forceinline__ void widen16(uint4 v, float* out) {
  if constexpr (sizeof(T) == 4) {
    out[0] = __uint_as_float(v.x); out[1] = __uint_as_float(v.y);
    out[2] = __uint_as_float(v.z); out[3] = __uint_as_float(v.w);
  } else {
    const unsigned w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      out[2 * k] = __uint_as_float(w[k] << 16);
      out[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
    }
  }
}

template <typename T, int kLanes, int kStages>
struct AsyncLayout {
  static constexpr int kVec = 16 / static_cast<int>(sizeof(T));  // elements per 16-byte chunk
  static constexpr int kChunks = kAsyncMaxDim / (kVec * kLanes);  // chunks per lane per row
  static constexpr int kPerLane = kVec * kChunks;
  // Ring bytes per block: kWarps x kStages x kChunks x 32 lanes x 16 bytes.
  static constexpr int kSmemBytes = kWarps * kStages * kChunks * 32 * 16;
  static_assert(kChunks >= 1, "a lane holds at least one chunk of a row");
  // The epilogue reuses each warp's ring as its gradient scratch.
  static_assert(kStages * kChunks * 32 * 4 >= kAsyncMaxDim, "ring too small for the epilogue");
};

template <typename T, int kLanes, int kStages>
__global__ void __launch_bounds__(kThreads, (AsyncLayout<T, kLanes, kStages>::kPerLane >= 32   ? 2
                                              : AsyncLayout<T, kLanes, kStages>::kPerLane >= 16 ? 3
                                                                                                 : 4))
    nce_negatives_async_kernel(const NceKernelParams p) {
  using L = AsyncLayout<T, kLanes, kStages>;
  constexpr int kVec = L::kVec, kChunks = L::kChunks, kPerLane = L::kPerLane;
  constexpr int kRows = 32 / kLanes;  // rows per warp step
  constexpr int kSteps = 32 / kRows;  // steps per 32-column tile
  static_assert(kLanes == 4 || kLanes == 8 || kLanes == 16, "a row is read by 4, 8 or 16 lanes");
  static_assert(kStages >= 2 && kSteps % kStages == 0, "the ring slot of a step must be static");
  extern __shared__ uint4 s_ring[];

  const GatherThread<kLanes> at;
  const int lane = at.lane, warp = at.warp, sub = at.sub, group = at.group, split = at.split;
  const std::int64_t i = at.i;
  const int dim = static_cast<int>(p.dim);
  const std::int64_t K = p.num_negatives;
  const std::int64_t kp1 = K + 1;
  const T* __restrict__ bank = static_cast<const T*>(p.bank);
  // This warp's ring: slot (stage q, chunk c) of lane l is ring[(q * kChunks + c) * 32 + l]
  // (consecutive lanes, consecutive 16 bytes: conflict-free).
  uint4* ring = s_ring + warp * kStages * kChunks * 32;

  float f[kPerLane], g[kPerLane];
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int e = (c * kLanes + sub) * kVec;
#pragma unroll
    for (int v = 0; v < kVec; v += 4) {
      float* out = f + c * kVec + v;
      if (e < dim) {
        const float4 x = __ldg(reinterpret_cast<const float4*>(p.features + i * dim + e + v));
        out[0] = x.x; out[1] = x.y; out[2] = x.z; out[3] = x.w;
      } else {
        out[0] = out[1] = out[2] = out[3] = 0.f;
      }
    }
  }
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) g[k] = 0.f;

  const GatherSample sample(p, i, split);
  const std::int64_t y = sample.y, t_begin = sample.t_begin, t_end = sample.t_end;
  const float inv_z = sample.inv_z;
  const std::uint64_t step = sample.step;
  float loss_acc = 0.f, sum_exp_acc = 0.f;
  // The tile walk of WarpTiles, spelled out: through the struct this kernel's
  // register allocation changes (spills outside the loop, 3 more
  // instructions a step for bf16 8 x 4; tools/sass_steps.py).
  const std::int64_t first = t_begin + warp;  // this warp's tiles: first, first + kWarps, ...
  const int my_tiles = first < t_end ? static_cast<int>((t_end - first + kWarps - 1) / kWarps) : 0;
  const int total = my_tiles * kSteps;  // a multiple of kStages

  // Lane l's bank row for column l of the warp's j-th tile (0 past the end).
  const bool write_probs = p.probs != nullptr && sub == 0 && !p.score_only;
  auto resolve = [&](int j) -> int {
    std::int64_t idx = 0;
    if (j < my_tiles) {
      const std::int64_t n0 = (first + static_cast<std::int64_t>(j) * kWarps) * 32;
      if (lane < K - n0) idx = negative_row(p, i, n0 + lane, step, y);
    }
    return static_cast<int>(idx);  // the entry point requires N < 2^31
  };
  const std::uint32_t row_bytes = static_cast<std::uint32_t>(dim) * static_cast<std::uint32_t>(sizeof(T));
  const char* lane_src[kChunks];
  lane_chunk_bases<T, kLanes, kVec, kChunks>(bank, dim, sub, lane_src);
  // This lane's slot of (stage 0, chunk 0); slot (q, cc) is 512 (q * kChunks + cc) bytes on.
  unsigned my_ring = static_cast<unsigned>(__cvta_generic_to_shared(ring + lane));

  // Per-tile state, set once per tile so that a step does only 32-bit work:
  // the issue side's row indices (lane l: column l of the tile being
  // loaded; the next tile's resolved a tile ahead) and valid columns, and the
  // compute side's valid columns and probability output (lane 0 of each
  // group; null when P is not asked for).
  auto tile_columns = [&](int j) -> int {
    const std::int64_t n0 = (first + static_cast<std::int64_t>(j) * kWarps) * 32;
    return static_cast<int>(min(static_cast<std::int64_t>(32), K - n0));
  };
  auto tile_probs = [&](int j) -> float* {
    const std::int64_t n0 = (first + static_cast<std::int64_t>(j) * kWarps) * 32;
    return write_probs ? p.probs + i * kp1 + n0 + 1 + group : nullptr;
  };
  int load_idx = resolve(0);
  int next_idx = resolve(1);
  int load_cols = my_tiles > 0 ? tile_columns(0) : 0;
  int comp_cols = load_cols;
  float* comp_probs = nullptr;

  // Issue the copies of step gs (step s of its tile) into ring stage q, then
  // commit a group (an empty one past the end or for missing columns, so
  // that group counting stays uniform).
  auto issue = [&](int gs, int q) {
    const int c = (gs & (kSteps - 1)) * kRows + group;
    const auto row = static_cast<std::uint32_t>(__shfl_sync(cuda::kFullMask, load_idx, c));
    if (gs < total && c < load_cols) {  // gs < total is warp-uniform
#pragma unroll
      for (int cc = 0; cc < kChunks; ++cc)
        cp_async_16(my_ring + (q * kChunks + cc) * 32 * 16, row_chunk(lane_src[cc], row, row_bytes));
    }
    cp_async_commit();
  };

#pragma unroll
  for (int q = 0; q < kStages - 1; ++q) issue(q, q);  // tile 0 (kStages <= kSteps)
  for (int g0 = 0; g0 < total; g0 += kStages) {
    // An empty asm that "changes" my_ring: the compiler keeps the address in
    // a register instead of rebuilding it from the thread index at every use
    // (6 instructions a step; tools/sass_steps.py). The same for the bank
    // chunk bases costs spills at the 80-register cap.
    asm volatile("" : "+r"(my_ring));
    // g0 is a multiple of kStages, and kSteps of kStages: a tile starts at
    // q == 0 of an iteration whose g0 is a multiple of kSteps (compute side),
    // and the copies run kStages - 1 steps ahead, so the issue side meets a
    // new tile only in the copy issued at q == 1.
    const int s0 = g0 & (kSteps - 1);
    if (s0 == 0) {  // warp-uniform
      const int j = g0 / kSteps;
      comp_cols = tile_columns(j);
      comp_probs = tile_probs(j);
    }
#pragma unroll
    for (int q = 0; q < kStages; ++q) {
      const int ahead = g0 + q + kStages - 1;
      if (q == 1 && (ahead & (kSteps - 1)) == 0 && ahead < total) {  // warp-uniform
        const int j = ahead / kSteps;
        load_idx = next_idx;
        next_idx = resolve(j + 1);
        load_cols = tile_columns(j);
      }
      issue(ahead, (q + kStages - 1) % kStages);
      cp_async_wait<kStages - 1>();  // step g0 + q has landed
      const int s = s0 + q;
      if (s * kRows >= comp_cols) continue;  // warp-uniform: past the end of a short last tile
      float row[kPerLane];
#pragma unroll
      for (int cc = 0; cc < kChunks; ++cc)
        widen16<T>(ld_shared_16(my_ring + (q * kChunks + cc) * 32 * 16), row + cc * kVec);
      float dot = 0.f;
#pragma unroll
      for (int k = 0; k < kPerLane; ++k) dot = fmaf(f[k], row[k], dot);
      dot = cuda::group_allreduce_sum<kLanes>(dot);
      if (s * kRows + group < comp_cols) {
        const float prob = nce_row<kPerLane>(p, dot, row, inv_z, g, loss_acc, sum_exp_acc, nullptr);
        if (comp_probs != nullptr) comp_probs[s * kRows] = prob;
      }
    }
  }
  cp_async_wait<0>();  // nothing in flight into the ring before it becomes scratch
  __syncwarp();
  write_partials<kLanes, kVec, kPerLane>(p, g, loss_acc, sum_exp_acc, reinterpret_cast<float*>(s_ring),
                                         kStages * kChunks * 32 * 4);
}

// ---- tensor-core variant (bf16 banks, D = 128) -------------------------------
// The FMA gathers spend most of their instructions on the two O(D) products
// per row (the score f_i . v_j and the gradient's coef_j v_j) and, for bf16,
// on widening the row. Here both are mma.sync m16n8k16 on the raw bf16 rows,
// one 16-row step of a tile at a time:
//   scores    S (16 rows x 8) = V (16 x 128) . F (128 x 8): the A operand is
//             the step's rows (ldmatrix), B holds f_i as three bf16 columns
//             hi, mid, lo (f = hi + mid + lo to 2^-24, so that the products
//             of bf16 rows with fp32 features keep fp32 accuracy), and the
//             score is the sum of the three columns;
//   gradient  G (128 x 8) += V^T (128 x 16) . C (16 x 8): A is the step's rows
//             transposed (ldmatrix .trans), C holds the rows' coefficients as
//             three bf16 columns the same way; g_i is the sum of G's three
//             columns, accumulated in fp32 across the warp's steps.
// Lanes 4r and 4r + 1 own row r and r + 8 of the step for the per-row math
// (nce_column). Rows reach shared memory by cp.async through a ring of
// kStages steps per warp (16 rows x 256 bytes each, 16-byte chunks XOR-
// swizzled by row so that ldmatrix reads are conflict-free); unlike the
// async FMA ring, a lane reads rows other lanes copied, so the ring takes a
// __syncwarp after each wait and before each refill. Columns past a short
// tile's end are zero-filled rows (no bank read), masked out of the sums.
// Where rows, chunks and fragments sit: common/mma_layout.h (shared with a
// CPU test that replays a step through a model of the instructions).
constexpr int kMmaDim = mma_layout::kDim;
constexpr int kMmaRows = mma_layout::kStepRows;
constexpr int kMmaRowBytes = mma_layout::kRowBytes;
constexpr int kMmaStageBytes = mma_layout::kStageBytes;
constexpr int kMmaKSteps = mma_layout::kKSteps;

template <int kStages>
constexpr int mma_smem_bytes() {
  return kWarps * kStages * kMmaStageBytes;
}

__device__ __forceinline__ void ldmatrix_x4(unsigned smem, unsigned (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem)
               : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned smem, unsigned (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem)
               : "memory");
}
// d += a . b, bf16 inputs, fp32 accumulation.
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// (lo, hi) rounded to bf16 and packed, lo in the low half (an operand
// register's element order).
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
  unsigned d;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(d) : "f"(hi), "f"(lo));
  return d;
}
// Part `part` of the three-way split x = hi + mid + lo (each a rounded bf16
// of what the parts before it leave: together exact to about 2^-24 |x|) of
// the pair (a, b), packed as pack_bf16x2; 0 for part >= 3.
__device__ __forceinline__ unsigned split_bf16x2(float a, float b, int part) {
  const unsigned hi = pack_bf16x2(a, b);
  const float ra = a - __uint_as_float(hi << 16), rb = b - __uint_as_float(hi & 0xffff0000u);
  const unsigned mid = pack_bf16x2(ra, rb);
  const float sa = ra - __uint_as_float(mid << 16), sb = rb - __uint_as_float(mid & 0xffff0000u);
  const unsigned lo = pack_bf16x2(sa, sb);
  return part == 0 ? hi : part == 1 ? mid : part == 2 ? lo : 0u;
}

template <int kStages>
__global__ void __launch_bounds__(kThreads, (kStages <= 2 ? 2 : 1)) nce_negatives_mma_kernel(const NceKernelParams p) {
  static_assert(kStages == 2 || kStages == 4, "an even ring: a tile's two steps sit at static slots");
  extern __shared__ uint4 s_ring[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;  // mma fragment coordinates
  const std::int64_t i = blockIdx.y;
  const unsigned ring = static_cast<unsigned>(__cvta_generic_to_shared(s_ring)) + warp * kStages * kMmaStageBytes;

  // f_i as the scores' B operand: lanes with g < 3 hold part g of
  // f[16 ks + 2t, + 1] and f[16 ks + 2t + 8, + 9] (columns 3..7 are 0).
  unsigned fb[kMmaKSteps][2];
  {
    const float* f = p.features + i * kMmaDim;
#pragma unroll
    for (int ks = 0; ks < kMmaKSteps; ++ks) {
      const float2 x = __ldg(reinterpret_cast<const float2*>(f + 16 * ks + 2 * t));
      const float2 z = __ldg(reinterpret_cast<const float2*>(f + 16 * ks + 2 * t + 8));
      fb[ks][0] = split_bf16x2(x.x, x.y, g);
      fb[ks][1] = split_bf16x2(z.x, z.y, g);
    }
  }
  float grad_acc[kMmaKSteps][4];
#pragma unroll
  for (int mt = 0; mt < kMmaKSteps; ++mt) grad_acc[mt][0] = grad_acc[mt][1] = grad_acc[mt][2] = grad_acc[mt][3] = 0.f;

  // Per-lane shared addresses (common/mma_layout.h): the copies' for even
  // and odd q, the ldmatrix rows' for k-steps / m-tiles 0..3 (4..7: + 128).
  unsigned copy_dst[2], score_addr[4], grad_addr[4];
#pragma unroll
  for (int q = 0; q < 2; ++q) copy_dst[q] = ring + mma_layout::copy_dst(lane, q);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    score_addr[k] = ring + mma_layout::score_addr(lane, k);
    grad_addr[k] = ring + mma_layout::grad_addr(lane, k);
  }
  const char* lane_src = reinterpret_cast<const char*>(static_cast<const bf16*>(p.bank)) + (lane & 7) * 16;

  const GatherSample sample(p, i, blockIdx.x);
  const std::int64_t K = p.num_negatives;
  const WarpTiles tiles(sample, warp);
  const int total = 2 * tiles.count;  // steps: two per 32-column tile
  // The issue side's tile: its row indices (lane l: column l), the next
  // tile's resolved a tile ahead, and its valid columns.
  int load_idx = tiles.resolve(p, i, sample, 0, lane), next_idx = tiles.resolve(p, i, sample, 1, lane);
  int load_cols = tiles.count > 0 ? tiles.columns(p, 0) : 0;
  auto enter_tile = [&](int j) {  // the issue side moves on to tile j
    load_idx = next_idx;
    next_idx = tiles.resolve(p, i, sample, j + 1, lane);
    load_cols = j < tiles.count ? tiles.columns(p, j) : 0;
  };
  // Issue the copies of step gs (rows 16 (gs & 1) .. + 15 of its tile) into
  // ring slot `slot`, then commit a group (empty past the end, and for the
  // second step of a tile of at most 16 columns, which is not computed).
  // Rows past the tile's columns are zero-filled, not read: the gradient's
  // mma multiplies them by a zero coefficient, and 0 x 0 stays 0 whatever
  // the bank holds.
  auto issue = [&](int gs, int slot) {
    if (gs < total && (gs & 1) * kMmaRows < load_cols) {  // warp-uniform
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int c = (gs & 1) * kMmaRows + mma_layout::copy_row(lane, q);
        const auto row = static_cast<std::uint32_t>(__shfl_sync(cuda::kFullMask, load_idx, c));
        const unsigned bytes = c < load_cols ? 16u : 0u;
        const char* src = row_chunk(lane_src, row, kMmaRowBytes);
        const unsigned dst = copy_dst[q & 1] + slot * kMmaStageBytes + (q & ~1) * 4 * kMmaRowBytes;
        cp_async_16_zfill(dst, src, bytes);
        cp_async_16_zfill(dst + 128, src + 128, bytes);
      }
    }
    cp_async_commit();
  };

  const bool write_probs = p.probs != nullptr && !p.score_only;
  float loss_acc = 0.f, sum_exp_acc = 0.f;
  int comp_cols = 0;
  std::int64_t comp_n0 = 0;
#pragma unroll
  for (int q = 0; q < kStages - 1; ++q) {  // the first kStages - 1 steps: tile 0, and 1 for 4 stages
    if (q > 0 && (q & 1) == 0) enter_tile(q / 2);
    issue(q, q);
  }
  for (int g0 = 0; g0 < total; g0 += kStages) {
#pragma unroll
    for (int q = 0; q < kStages; ++q) {
      const int gs = g0 + q;
      const int ahead = gs + kStages - 1;
      // The issue side enters tile ahead / 2 at an even step (static in q:
      // g0 and kStages are even).
      if ((ahead & 1) == 0 && ahead < total) enter_tile(ahead / 2);
      __syncwarp();  // every lane is done reading the slot this refills
      issue(ahead, (q + kStages - 1) % kStages);
      cp_async_wait<kStages - 1>();  // this lane's copies of step gs have landed
      __syncwarp();                  // ... and every lane's are visible
      if (gs >= total) continue;     // warp-uniform
      if ((gs & 1) == 0) {
        comp_n0 = tiles.n0(gs / 2);
        comp_cols = tiles.columns(p, gs / 2);
      }
      if ((gs & 1) * kMmaRows >= comp_cols) continue;  // warp-uniform: a short tile's empty second step
      const unsigned stage = q * kMmaStageBytes;

      // Scores of the step's 16 rows: two accumulator chains, then the
      // three columns of each row summed across the lane pair (4g, 4g + 1).
      float acc[2][4] = {};
#pragma unroll
      for (int ks = 0; ks < kMmaKSteps; ++ks) {
        unsigned a[4];
        ldmatrix_x4(score_addr[ks & 3] + stage + (ks >= 4 ? 128 : 0), a);
        mma_bf16_16816(acc[ks & 1], a, fb[ks][0], fb[ks][1]);
      }
      const float p0 = (acc[0][0] + acc[1][0]) + (acc[0][1] + acc[1][1]);  // row g: columns 2t, 2t + 1
      const float p1 = (acc[0][2] + acc[1][2]) + (acc[0][3] + acc[1][3]);  // row g + 8
      const float s0 = p0 + __shfl_xor_sync(cuda::kFullMask, p0, 1);
      const float s1 = p1 + __shfl_xor_sync(cuda::kFullMask, p1, 1);
      const int row = mma_layout::row_of_lane(lane);  // lanes t < 2: this lane's row of the step
      const int col = (gs & 1) * kMmaRows + row;      // ... and its column of the tile
      float coef = 0.f;
      if (row >= 0 && col < comp_cols) {
        const float e = ex2_ftz((t == 0 ? s0 : s1) * p.inv_tau_log2e);
        sum_exp_acc += e;
        if (!p.score_only) {
          const NceColumn c = nce_column(p, e, sample.inv_z, loss_acc);
          coef = c.coef;
          if (write_probs) p.probs[i * (K + 1) + comp_n0 + 1 + col] = c.prob;
        }
      }
      if (p.score_only) continue;  // uniform

      // Gradient: the coefficients of rows 2t, 2t + 1, 2t + 8, 2t + 9 as part
      // g of the B operand.
      const float c0 = __shfl_sync(cuda::kFullMask, coef, mma_layout::owner_of_row(2 * t));
      const float c1 = __shfl_sync(cuda::kFullMask, coef, mma_layout::owner_of_row(2 * t + 1));
      const float c2 = __shfl_sync(cuda::kFullMask, coef, mma_layout::owner_of_row(2 * t + 8));
      const float c3 = __shfl_sync(cuda::kFullMask, coef, mma_layout::owner_of_row(2 * t + 9));
      const unsigned b0 = split_bf16x2(c0, c1, g), b1 = split_bf16x2(c2, c3, g);
#pragma unroll
      for (int mt = 0; mt < kMmaKSteps; ++mt) {
        unsigned a[4];
        ldmatrix_x4_trans(grad_addr[mt & 3] + stage + (mt >= 4 ? 128 : 0), a);
        mma_bf16_16816(grad_acc[mt], a, b0, b1);
      }
    }
  }
  cp_async_wait<0>();  // nothing in flight into the ring before it becomes scratch
  __syncwarp();
  // G's columns summed across the lane pair (4g, 4g + 1): element d = 16 mt +
  // g (+ 8) of this warp's gradient, written by lanes t = 0.
  constexpr int kStride = kStages * kMmaStageBytes / 4;  // floats per warp's ring
  float* scratch = reinterpret_cast<float*>(s_ring);
  if (!p.score_only) {
#pragma unroll
    for (int mt = 0; mt < kMmaKSteps; ++mt) {
      const float d0 = grad_acc[mt][0] + grad_acc[mt][1], d8 = grad_acc[mt][2] + grad_acc[mt][3];
      const float a = d0 + __shfl_xor_sync(cuda::kFullMask, d0, 1);
      const float b = d8 + __shfl_xor_sync(cuda::kFullMask, d8, 1);
      if (t == 0) {
        scratch[warp * kStride + 16 * mt + g] = a;
        scratch[warp * kStride + 16 * mt + g + 8] = b;
      }
    }
  }
  combine_partials(p, cuda::warp_allreduce_sum(loss_acc), cuda::warp_allreduce_sum(sum_exp_acc), scratch, kStride);
}

// Per sample: the positive column (score, P, loss term, coefficient), the sum
// of the split partials in split order, and the proximal term. Writes the
// gradient (main pass) and the sample's loss / exp-sum for nce_reduce_kernel.
constexpr int kFinalizeThreads = 128;
template <typename T>
__global__ void __launch_bounds__(kFinalizeThreads)
    nce_finalize_kernel(const NceKernelParams p, float* __restrict__ grad,
                        float* __restrict__ sample_loss, float* __restrict__ sample_sum_exp) {
  const std::int64_t i = blockIdx.x;
  const int dim = static_cast<int>(p.dim);
  const std::int64_t y = p.targets[i];
  const T* pos = static_cast<const T*>(p.bank) + y * dim;
  const float* f = p.features + i * dim;

  float dot = 0.f, prox = 0.f;
  for (int d = threadIdx.x; d < dim; d += kFinalizeThreads) {
    const float v = cuda::Storage<T>::load1(pos + d);
    dot = fmaf(f[d], v, dot);
    const float diff = f[d] - v;
    prox = fmaf(diff, diff, prox);
  }
  // CUB's block reduction has a fixed order for a fixed block size.
  using BlockReduce = cub::BlockReduce<float, kFinalizeThreads>;
  __shared__ typename BlockReduce::TempStorage s_reduce;
  __shared__ float s_coef;
  const float total_dot = BlockReduce(s_reduce).Sum(dot);  // valid in thread 0
  __syncthreads();
  const float total_prox = BlockReduce(s_reduce).Sum(prox);
  if (threadIdx.x == 0) {
    const float e = expf(total_dot * p.inv_tau);
    float l = 0.f, se = e;
    for (int s = 0; s < p.splits; ++s) {
      l += p.partial_loss[i * p.splits + s];
      se += p.partial_sum_exp[i * p.splits + s];
    }
    sample_sum_exp[i] = se;
    if (!p.score_only) {
      // -log(P/(P+a)) = log1p(a/P);  dL/ds * B * tau = -(a/(P+a))
      const float prob = e / *p.z;
      s_coef = -p.noise / (prob + p.noise) * p.inv_batch * p.inv_tau;
      sample_loss[i] = l + log1pf(p.noise / prob) * p.inv_batch + p.lambda * p.inv_batch * total_prox;
      const std::int64_t kp1 = p.num_negatives + 1;
      if (p.probs != nullptr) p.probs[i * kp1] = prob;
      if (p.indices != nullptr) p.indices[i * kp1] = y;
    }
  }
  if (p.score_only) return;
  __syncthreads();
  const float coef = s_coef;
  const float prox_scale = 2.f * p.lambda * p.inv_batch;
  for (int d = threadIdx.x; d < dim; d += kFinalizeThreads) {
    float acc = 0.f;
    for (int s = 0; s < p.splits; ++s) acc += p.partial_grad[(i * p.splits + s) * dim + d];
    const float v = cuda::Storage<T>::load1(pos + d);
    acc = fmaf(coef, v, acc);
    grad[i * dim + d] = fmaf(prox_scale, f[d] - v, acc);
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
  double l = 0.0, e = 0.0;
  for (std::int64_t k = threadIdx.x; k < count; k += kReduceThreads) {
    if (loss_terms != nullptr) l += loss_terms[k];
    e += sum_exp[k];
  }
  using BlockReduce = cub::BlockReduce<double, kReduceThreads>;
  __shared__ typename BlockReduce::TempStorage s_reduce;
  const double total_loss = BlockReduce(s_reduce).Sum(l);  // valid in thread 0
  __syncthreads();
  const double total_exp = BlockReduce(s_reduce).Sum(e);
  if (threadIdx.x == 0) {
    if (loss != nullptr) *loss = static_cast<float>(total_loss);
    const double estimate = total_exp * n_over_entries;
    if (z_mode == static_cast<int>(ZUpdate::kInitFromBatch)) {
      *z = static_cast<float>(estimate);
    } else if (z_mode == static_cast<int>(ZUpdate::kEmaFromBatch)) {
      *z = static_cast<float>(decay * static_cast<double>(*z) + (1.0 - decay) * estimate);
    }
  }
}

// ---- launchers --------------------------------------------------------------

using GatherKernel = void (*)(NceKernelParams);
using FinalizeKernel = void (*)(NceKernelParams, float*, float*, float*);

// A gather kernel with its dynamic shared memory (the async ring's bytes).
struct Gather {
  GatherKernel fn = nullptr;
  int smem = 0;
  bool async_ring = false;
  int code = 0;  // ring * 1000 + lanes * 10 + stages (nce_last_layout)
};

// kind * 1000 + lanes * 10 + stages; 0 = default.
std::atomic<int> g_layout_override{0};
// The layout code of the last gather launched (tests check an override took).
std::atomic<int> g_last_layout{0};
// Column splits per sample; 0 = choose_splits' choice.
std::atomic<int> g_splits_override{0};
// The splits of the last launch.
std::atomic<int> g_last_splits{0};

template <typename T, int kLanes, int kStages>
Gather async_gather() {
  return {nce_negatives_async_kernel<T, kLanes, kStages>, AsyncLayout<T, kLanes, kStages>::kSmemBytes, true,
          1000 + kLanes * 10 + kStages};
}
template <int kStages>
Gather mma_gather() {
  return {nce_negatives_mma_kernel<kStages>, mma_smem_bytes<kStages>(), true, 2000 + 32 * 10 + kStages};
}
template <typename T, int kLanes, int kVec, int kChunks, int kStages>
Gather register_gather() {
  return {nce_negatives_kernel<T, kLanes, kVec, kChunks, kStages>, 0, false, kLanes * 10 + kStages};
}

// Dispatch table, for each bank storage T in {float, bf16}:
//   D % 4 == 0, 16-byte (fp32) / 8-byte (bf16) aligned rows:
//     D <= 128          kLanes 16 x kVec 4 x kChunks 2; 2 stages for fp32, 3 for
//                       bf16 (best or near-best at N = 50k and 1.28M in the H200
//                       sweep of 2026-11-27); 8 or 16 lanes x 2-4 stages via the
//                       tuning override
//     D <= 256, 512     kLanes 32 x kVec 4 x kChunks 2, 4; 2 stages
//   otherwise (any D):  kLanes 32 x kVec 1 x kChunks 4, 16; 2 stages
//   The other async rings (kind 1: 4 x 4, 8 x 8, 16 x {4,8}) and the
//   tensor-core gather (kind 2) only through the tuning override `o`, and
//   only where their alignment holds (`async_ok`; kind 2 also bf16 and
//   D = 128): otherwise the override falls back to the default.
template <typename T>
Gather pick_gather_kernel(std::int64_t dim, bool vec4, bool async_ok, int o) {
  if (vec4) {
    if (dim <= 128) {
      if constexpr (sizeof(T) == 2) {
        if (async_ok && dim == kMmaDim) {
          switch (o) {
            case 2322: return mma_gather<2>();
            case 2324: return mma_gather<4>();
            default: break;
          }
        }
      }
      if (async_ok) {
        switch (o) {
          case 1044: return async_gather<T, 4, 4>();
          case 1084: return async_gather<T, 8, 4>();
          case 1088: return async_gather<T, 8, 8>();
          case 1164: return async_gather<T, 16, 4>();
          case 1168: return async_gather<T, 16, 8>();
          default: break;
        }
      }
      switch (o) {
        case 82: return register_gather<T, 8, 4, 4, 2>();
        case 83: return register_gather<T, 8, 4, 4, 3>();
        case 84: return register_gather<T, 8, 4, 4, 4>();
        case 162: return register_gather<T, 16, 4, 2, 2>();
        case 163: return register_gather<T, 16, 4, 2, 3>();
        case 164: return register_gather<T, 16, 4, 2, 4>();
        default:
          // Defaults from the H200 sweeps at B = 256, K = 4096, D = 128
          // (docs/benchmarks/): fp32 banks 16 lanes x 2 stages (144.5 us at
          // N = 1.28M); bf16 banks the async ring, 8 lanes x 4 stages, where
          // its alignment holds (90.4 us against 98.7 us for 16 x 3, run of
          // 2026-12-04), else 16 x 3.
          if (sizeof(T) == 4) return register_gather<T, 16, 4, 2, 2>();
          if (async_ok) return async_gather<T, 8, 4>();
          return register_gather<T, 16, 4, 2, 3>();
      }
    }
    if (dim <= 256) return register_gather<T, 32, 4, 2, 2>();
    return register_gather<T, 32, 4, 4, 2>();
  }
  if (dim <= 128) return register_gather<T, 32, 1, 4, 2>();
  return register_gather<T, 32, 1, 16, 2>();
}

// Resident blocks per SM of `kernel` on the current device (cached). Also
// opts the kernel into its dynamic shared memory when that exceeds the
// default 48 KB (once per kernel and device, before any launch or capture).
int blocks_per_sm(const Gather& kernel, int device) {
  static std::mutex mutex;
  static std::map<std::pair<GatherKernel, int>, int> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find({kernel.fn, device});
  if (it != cache.end()) return it->second;
  if (kernel.smem > 48 * 1024)
    NPID_CUDA_CHECK(cudaFuncSetAttribute(kernel.fn, cudaFuncAttributeMaxDynamicSharedMemorySize, kernel.smem));
  int blocks = 0;
  NPID_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel.fn, kThreads, kernel.smem));
  cache[{kernel.fn, device}] = blocks;
  return blocks;
}

// Column splits per sample: at least two waves of blocks, so that small
// batches still fill the device and the last wave's tail stays short; and at
// most about one 32-column tile per warp for the register ring, two for the
// async ring (whose pipeline runs on across a warp's tiles).
int choose_splits(Context& ctx, const Gather& kernel, std::int64_t batch, std::int64_t negatives) {
  const int per_sm = blocks_per_sm(kernel, ctx.device().index);
  const std::int64_t resident =
      static_cast<std::int64_t>(std::max(1, per_sm)) * ctx.device_info().multiprocessors;
  const std::int64_t tiles = (negatives + 31) / 32;
  const std::int64_t tiles_per_block = kernel.async_ring ? 2 * kWarps : kWarps;
  const std::int64_t forced = g_splits_override.load();
  const std::int64_t want =
      forced > 0 ? forced : std::max((tiles + tiles_per_block - 1) / tiles_per_block, (2 * resident + batch - 1) / batch);
  return static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>({want, tiles, kMaxSplits})));
}


// Most splits a sample of K negatives can get (one 32-column tile each at most).
std::int64_t max_splits(std::int64_t negatives) {
  return std::max<std::int64_t>(1, std::min<std::int64_t>((negatives + 31) / 32, kMaxSplits));
}

}  // namespace

std::size_t nce_cuda_workspace_bytes(std::int64_t batch, std::int64_t dim, std::int64_t negatives) {
  const auto b = static_cast<std::size_t>(batch);
  const auto slots = b * static_cast<std::size_t>(max_splits(negatives));
  return cuda::align256(slots * static_cast<std::size_t>(dim) * sizeof(float)) +  // partial_grad
         2 * cuda::align256(slots * sizeof(float)) +                              // partial loss, sum_exp
         2 * cuda::align256(b * sizeof(float));                                   // per-sample loss, sum_exp
}

void launch_nce_forward_backward(Context& ctx, const NceProblem& pr, ZUpdate z_update) {
  DeviceGuard guard(ctx.device());
  cudaStream_t stream = ctx.stream();
  Workspace& ws = ctx.workspace();
  ws.reserve(nce_cuda_workspace_bytes(pr.batch, pr.dim, pr.num_negatives), stream);

  const std::int64_t kp1 = pr.num_negatives + 1;
  const bool bf16_bank = pr.bank_dtype == DType::kBFloat16;
  const std::uintptr_t row_align = bf16_bank ? 8 : 16;  // 4 elements of storage
  const bool vec4 = pr.dim % 4 == 0 && reinterpret_cast<std::uintptr_t>(pr.features) % 16 == 0 &&
                    reinterpret_cast<std::uintptr_t>(pr.bank) % row_align == 0;
  // The async ring copies 16-byte chunks: rows must start 16-byte aligned.
  const bool async_ok = vec4 && pr.dim <= kAsyncMaxDim && pr.dim % (bf16_bank ? 8 : 4) == 0 &&
                        reinterpret_cast<std::uintptr_t>(pr.bank) % 16 == 0;
  auto pick = [&](int layout_override) {
    return bf16_bank ? pick_gather_kernel<bf16>(pr.dim, vec4, async_ok, layout_override)
                     : pick_gather_kernel<float>(pr.dim, vec4, async_ok, layout_override);
  };
  Gather gather = pick(g_layout_override.load());
  // A ring larger than the device lets one block opt into (99 KB on sm_86 /
  // sm_89, against 227 KB on sm_80 / sm_90) falls back to the default, whose
  // ring (at most 32 KB) fits every supported device.
  if (static_cast<std::size_t>(gather.smem) > ctx.device_info().shared_memory_per_block_optin) gather = pick(0);
  const FinalizeKernel finalize = bf16_bank ? nce_finalize_kernel<bf16> : nce_finalize_kernel<float>;
  const int splits = choose_splits(ctx, gather, pr.batch, pr.num_negatives);
  g_last_layout.store(gather.code);
  g_last_splits.store(splits);

  // Carve the workspace.
  char* cursor = static_cast<char*>(ws.data());
  auto carve = [&cursor](std::size_t bytes) {
    float* out = reinterpret_cast<float*>(cursor);
    cursor += cuda::align256(bytes);
    return out;
  };
  const auto slots = static_cast<std::size_t>(pr.batch) * static_cast<std::size_t>(max_splits(pr.num_negatives));
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
  p.inv_tau_log2e = static_cast<float>(1.4426950408889634 / static_cast<double>(pr.temperature));
  const double kpn = static_cast<double>(pr.num_negatives) / static_cast<double>(pr.bank_size);
  p.noise = static_cast<float>(kpn + kNceEps);
  p.inv_kpn = static_cast<float>(1.0 / kpn);
  p.inv_batch = 1.0f / static_cast<float>(pr.batch);
  p.lambda = pr.lambda;
  p.exclude_positive = pr.exclude_positive;
  p.seed = pr.seed;
  p.step = pr.step;
  p.step_device = pr.step_device;
  p.splits = splits;
  p.partial_grad = partial_grad;
  p.partial_loss = partial_loss;
  p.partial_sum_exp = partial_sum_exp;

  const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(pr.batch));
  const unsigned batch_blocks = static_cast<unsigned>(pr.batch);
  const double n_over_entries =
      static_cast<double>(pr.bank_size) / (static_cast<double>(pr.batch) * static_cast<double>(kp1));

  if (z_update == ZUpdate::kInitFromBatch) {
    NceKernelParams score = p;
    score.score_only = true;
    gather.fn<<<grid, kThreads, gather.smem, stream>>>(score);
    NPID_CHECK_LAUNCH(ctx, "nce_negatives_kernel (score pass)");
    finalize<<<batch_blocks, kFinalizeThreads, 0, stream>>>(score, nullptr, sample_loss, sample_sum_exp);
    NPID_CHECK_LAUNCH(ctx, "nce_finalize_kernel (score pass)");
    nce_reduce_kernel<<<1, kReduceThreads, 0, stream>>>(
        nullptr, sample_sum_exp, pr.batch, nullptr, pr.z, static_cast<int>(ZUpdate::kInitFromBatch),
        n_over_entries, pr.z_decay);
    NPID_CHECK_LAUNCH(ctx, "nce_reduce_kernel (Z init)");
  }

  p.probs = pr.probs;
  p.indices = pr.indices;
  gather.fn<<<grid, kThreads, gather.smem, stream>>>(p);
  NPID_CHECK_LAUNCH(ctx, "nce_negatives_kernel");
  finalize<<<batch_blocks, kFinalizeThreads, 0, stream>>>(p, pr.grad, sample_loss, sample_sum_exp);
  NPID_CHECK_LAUNCH(ctx, "nce_finalize_kernel");
  const int z_mode = z_update == ZUpdate::kEmaFromBatch ? static_cast<int>(ZUpdate::kEmaFromBatch)
                                                        : static_cast<int>(ZUpdate::kKeep);
  nce_reduce_kernel<<<1, kReduceThreads, 0, stream>>>(sample_loss, sample_sum_exp, pr.batch,
                                                      pr.loss, pr.z, z_mode, n_over_entries,
                                                      pr.z_decay);
  NPID_CHECK_LAUNCH(ctx, "nce_reduce_kernel");
}

int nce_last_layout() { return g_last_layout.load(); }

int nce_layout_override() { return g_layout_override.load(); }

void nce_set_splits_override(int splits) { g_splits_override.store(std::max(0, splits)); }

int nce_last_splits() { return g_last_splits.load(); }

void nce_set_layout_override(int lanes, int stages, NceRing ring) {
  const int kind = ring == NceRing::kAsync ? 1000 : ring == NceRing::kTensorCore ? 2000 : 0;
  g_layout_override.store(lanes == 0 ? 0 : kind + lanes * 10 + stages);
}

}  // namespace npid

// knn.cu -- tiled top-k similarity search on CUDA:
//   for each query tile (QT rows) and key chunk (T rows):
//     [bf16 keys] widen the chunk to fp32 staging
//     cuBLAS: S (QT x T) = queries_tile * chunk^T
//     topk_merge_kernel (one block per query): candidates of the chunk that
//       beat the query's running k-th value are merged with its running top-k
//       (kept in the output arrays) by a bitonic sort in shared memory; when a
//       chunk has more candidates than fit, a 4-pass radix select first cuts
//       them to the best kCap (ties at the cut taken in key order).
// and the vote (one block per query, common/knn_vote.h).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "common/bf16.h"
#include "common/cuda_utils.cuh"
#include "common/knn_vote.h"
#include "core/check.h"
#include "core/context_impl.h"
#include "knn.h"
#include "npid/knn.h"

namespace npid {
namespace {

constexpr int kThreads = 256;
constexpr int kSortCap = 2048;  // running top-k (<= 1024) + chunk candidates
static_assert(kMaxKnnK * 2 <= kSortCap, "the union buffer must hold k + k candidates");

// Order-preserving map float -> uint32 (larger float, larger key).
__device__ __forceinline__ std::uint32_t order_key(float v) {
  if (v == 0.0f) v = 0.0f;  // -0 and +0 are equal (ties by index), as on the CPU
  const std::uint32_t u = __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float key_value(std::uint32_t key) {
  return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

__device__ __forceinline__ int block_sum(int v, int* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(cuda::kFullMask, v, o);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  int total = 0;
#pragma unroll
  for (int w = 0; w < kThreads / 32; ++w) total += scratch[w];
  return total;
}

__global__ void __launch_bounds__(kThreads)
    topk_merge_kernel(const float* __restrict__ S, std::int64_t len, std::int64_t key0,
                      std::int64_t seen, std::int64_t k, float* values, std::int64_t* indices) {
  __shared__ std::uint32_t sk[kSortCap];
  __shared__ std::int64_t si[kSortCap];
  __shared__ int hist[256];
  __shared__ int scan[kThreads];
  __shared__ int scratch[kThreads / 32];
  __shared__ int s_count;
  __shared__ std::uint32_t s_prefix;
  __shared__ int s_want;
  const int tid = threadIdx.x;
  const float* row = S + static_cast<std::int64_t>(blockIdx.x) * len;
  float* vals = values + static_cast<std::int64_t>(blockIdx.x) * k;
  std::int64_t* ids = indices + static_cast<std::int64_t>(blockIdx.x) * k;
  const int have = static_cast<int>(seen < k ? seen : k);
  const bool full = have == k;
  const std::uint32_t thr = full ? order_key(vals[k - 1]) : 0u;
  for (int i = tid; i < have; i += kThreads) {
    sk[i] = order_key(vals[i]);
    si[i] = ids[i];
  }
  if (tid == 0) s_count = 0;
  auto passes = [&](std::uint32_t key) { return !full || key > thr; };
  int mine = 0;
  for (std::int64_t e = tid; e < len; e += kThreads) mine += passes(order_key(row[e]));
  const int total = block_sum(mine, scratch);
  const int cap = kSortCap - have;
  int n;
  if (total <= cap) {
    for (std::int64_t e = tid; e < len; e += kThreads) {
      const std::uint32_t key = order_key(row[e]);
      if (passes(key)) {
        const int pos = atomicAdd(&s_count, 1);
        sk[have + pos] = key;
        si[have + pos] = key0 + e;
      }
    }
    n = have + total;
  } else {
    // Radix select: the cap-th largest passing key, 8 bits a pass.
    if (tid == 0) {
      s_prefix = 0;
      s_want = cap;
    }
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int b = tid; b < 256; b += kThreads) hist[b] = 0;
      __syncthreads();
      const std::uint32_t prefix = s_prefix;
      for (std::int64_t e = tid; e < len; e += kThreads) {
        const std::uint32_t key = order_key(row[e]);
        const bool same_high = shift == 24 || (key >> (shift + 8)) == (prefix >> (shift + 8));
        if (passes(key) && same_high) atomicAdd(&hist[(key >> shift) & 255u], 1);
      }
      __syncthreads();
      if (tid == 0) {
        int cum = 0, want = s_want;
        for (int b = 255; b >= 0; --b) {
          if (cum + hist[b] >= want) {
            s_prefix = prefix | (static_cast<std::uint32_t>(b) << shift);
            s_want = want - cum;
            break;
          }
          cum += hist[b];
        }
      }
      __syncthreads();
    }
    const std::uint32_t t = s_prefix;
    const int ties_needed = s_want;
    const int above = cap - ties_needed;
    for (std::int64_t e = tid; e < len; e += kThreads) {
      const std::uint32_t key = order_key(row[e]);
      if (key > t && passes(key)) {
        const int pos = atomicAdd(&s_count, 1);
        sk[have + pos] = key;
        si[have + pos] = key0 + e;
      }
    }
    // Ties at the cut: the first ties_needed in key order (contiguous ranges
    // per thread + an exclusive scan), so the result is deterministic.
    const std::int64_t per = (len + kThreads - 1) / kThreads;
    const std::int64_t b0 = tid * per, b1 = b0 + per < len ? b0 + per : len;
    int ties = 0;
    for (std::int64_t e = b0; e < b1; ++e) ties += order_key(row[e]) == t;
    scan[tid] = ties;
    __syncthreads();
    for (int o = 1; o < kThreads; o <<= 1) {
      const int add = tid >= o ? scan[tid - o] : 0;
      __syncthreads();
      scan[tid] += add;
      __syncthreads();
    }
    int off = scan[tid] - ties;
    for (std::int64_t e = b0; e < b1 && off < ties_needed; ++e) {
      if (order_key(row[e]) == t) {
        sk[have + above + off] = t;
        si[have + above + off] = key0 + e;
        ++off;
      }
    }
    n = have + cap;
  }
  __syncthreads();
  int P = 1;
  while (P < n) P <<= 1;
  for (int i = n + tid; i < P; i += kThreads) {
    sk[i] = 0u;
    si[i] = INT64_MAX;
  }
  __syncthreads();
  // Bitonic sort into "better first" order: larger key, then smaller index.
  for (int size = 2; size <= P; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = tid; i < P / 2; i += kThreads) {
        const int lo = 2 * stride * (i / stride) + (i % stride), hi = lo + stride;
        const bool hi_first = sk[hi] > sk[lo] || (sk[hi] == sk[lo] && si[hi] < si[lo]);
        const bool forward = (lo & size) == 0;
        if (hi_first == forward) {
          const std::uint32_t tk = sk[lo];
          sk[lo] = sk[hi];
          sk[hi] = tk;
          const std::int64_t ti = si[lo];
          si[lo] = si[hi];
          si[hi] = ti;
        }
      }
      __syncthreads();
    }
  }
  const std::int64_t out = seen + len < k ? seen + len : k;
  for (int j = tid; j < out; j += kThreads) {
    vals[j] = key_value(sk[j]);
    ids[j] = si[j];
  }
}

__global__ void widen_keys_kernel(const bf16* __restrict__ src, float* __restrict__ dst, std::int64_t n) {
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    dst[e] = bf16_to_float(src[e]);
}

__global__ void knn_vote_kernel(const KnnVoteProblem p) {
  extern __shared__ float scores[];
  if (threadIdx.x != 0) return;
  const std::int64_t q = blockIdx.x;
  bool top5 = false;
  p.predictions[q] = knn_vote(p.values + q * p.k, p.indices + q * p.k, p.k, p.key_labels, p.num_classes,
                              p.inv_sigma, p.query_labels[q], scores, &top5);
  p.top5[q] = top5 ? 1 : 0;
}

}  // namespace

void launch_knn_topk(Context& ctx, const KnnTopkProblem& p) {
  DeviceGuard guard(ctx.device());
  cudaStream_t stream = ctx.stream();
  const std::int64_t Q = p.num_queries, N = p.num_keys, D = p.dim;
  // Tile sizes: the similarity tile stays within ~64 MB (L2-sized on H100/H200
  // for the common shapes), at least 1024 keys per chunk.
  const std::int64_t QT = std::min<std::int64_t>(Q, p.query_tile > 0 ? p.query_tile : 2048);
  const std::int64_t budget = std::int64_t(64) << 20;
  // (A bf16 bank's chunk is widened into a T x D fp32 staging copy: that
  // stays within the budget too.)
  const std::int64_t auto_chunk = std::max<std::int64_t>(
      1024, std::min(budget / (4 * QT), p.key_dtype == DType::kBFloat16 ? budget / (4 * D) : budget));
  const std::int64_t T = std::min<std::int64_t>(N, p.key_chunk > 0 ? p.key_chunk : auto_chunk);
  const bool bf16_keys = p.key_dtype == DType::kBFloat16;
  const std::size_t s_bytes = cuda::align256(static_cast<std::size_t>(QT * T) * sizeof(float));
  const std::size_t staging_bytes = bf16_keys ? cuda::align256(static_cast<std::size_t>(T * D) * sizeof(float)) : 0;
  Workspace& ws = ctx.workspace();
  ws.reserve(s_bytes + staging_bytes, stream);
  float* S = static_cast<float*>(ws.data());
  float* staging = bf16_keys ? reinterpret_cast<float*>(static_cast<char*>(ws.data()) + s_bytes) : nullptr;
  cublasHandle_t handle = cublas_handle(ctx);
  const cublasComputeType_t compute = p.tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const float one = 1.0f, zero = 0.0f;
  for (std::int64_t q0 = 0; q0 < Q; q0 += QT) {
    const std::int64_t qt = std::min(QT, Q - q0);
    for (std::int64_t c0 = 0; c0 < N; c0 += T) {
      const std::int64_t len = std::min(T, N - c0);
      const float* rows;
      if (bf16_keys) {
        const unsigned blocks = std::min(cuda::ceil_div(len * D, kThreads),
                                         static_cast<unsigned>(ctx.device_info().multiprocessors) * 8u);
        widen_keys_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const bf16*>(p.keys) + c0 * D, staging, len * D);
        NPID_CHECK_LAUNCH(ctx, "widen_keys_kernel");
        rows = staging;
      } else {
        rows = static_cast<const float*>(p.keys) + c0 * D;
      }
      // Column-major: S^T (len x qt) = chunk (len x D) * queries^T (D x qt).
      NPID_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(len), static_cast<int>(qt),
                                     static_cast<int>(D), &one, rows, CUDA_R_32F, static_cast<int>(D),
                                     p.queries + q0 * D, CUDA_R_32F, static_cast<int>(D), &zero, S, CUDA_R_32F,
                                     static_cast<int>(len), compute, CUBLAS_GEMM_DEFAULT));
      topk_merge_kernel<<<static_cast<unsigned>(qt), kThreads, 0, stream>>>(S, len, c0, c0, p.k, p.values + q0 * p.k,
                                                                             p.indices + q0 * p.k);
      NPID_CHECK_LAUNCH(ctx, "topk_merge_kernel");
    }
  }
}

void launch_knn_vote(Context& ctx, const KnnVoteProblem& p) {
  if (p.num_queries == 0) return;
  DeviceGuard guard(ctx.device());
  knn_vote_kernel<<<static_cast<unsigned>(p.num_queries), 32,
                    static_cast<std::size_t>(p.num_classes) * sizeof(float), ctx.stream()>>>(p);
  NPID_CHECK_LAUNCH(ctx, "knn_vote_kernel");
}

}  // namespace npid

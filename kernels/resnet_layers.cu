// resnet_layers.cu -- the ResNet-18 layers on CUDA (contracts in
// resnet_layers.h; CPU references in resnet_layers_cpu.cpp).
//
// BatchNorm (NHWC, C channels over `count` positions), three launches each way,
// 4 channels per thread with 16-byte accesses when C % 4 == 0 (else 1):
//   partial kernel   grid (channel tiles, chunks) of 256-thread blocks laid
//                    out as channel lanes x position lanes: per chunk and
//                    channel, double sums (x, x^2; or g, g * xhat) combined
//                    over the position lanes by a fixed tree
//   finalize kernel  one warp per channel: chunks summed in a fixed order ->
//                    mean, invstd, running statistics (or dgamma, dbeta), and
//                    the per-channel coefficients of the apply pass
//   apply kernel     elementwise: y = x * scale + shift (+ residual) (ReLU),
//                    or dx from the coefficients (reading the masked
//                    gradient back from the residual gradient when the
//                    partial kernel wrote one: one load instead of dy and y)
// Max pool backward is a gather (each input sums the outputs that chose it,
// in output order): no atomics, the same order as the CPU reference.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>

#include "common/cuda_utils.cuh"
#include "core/check.h"
#include "core/context_impl.h"
#include "resnet_layers.h"

namespace npid {
namespace layers {
namespace {

constexpr int kThreads = 256;

// The channel of NHWC element e (= position * C + channel) along a grid-stride
// loop: one 64-bit modulo per thread, then an add and a wrap per step instead
// of a 64-bit `%` per element (emulated on the GPU: tens of instructions, as
// many as the element's memory traffic is worth). BatchNorm walks vectors of
// V channels the same way (channels = C / V).
struct ChannelWalk {
  std::int64_t c, step, channels;
  __device__ ChannelWalk(std::int64_t e0, std::int64_t stride, std::int64_t channels_)
      : c(e0 % channels_), step(stride % channels_), channels(channels_) {}
  __device__ void advance() {
    c += step;  // both < channels: one wrap suffices
    if (c >= channels) c -= channels;
  }
};

unsigned grid_1d(const Context& ctx, std::int64_t n) {
  return std::max(1u, std::min(cuda::ceil_div(n, kThreads),
                               static_cast<unsigned>(ctx.device_info().multiprocessors) * 16u));
}

// ---- BatchNorm ----------------------------------------------------------------------
//
// Vector width V: a thread handles V = 4 consecutive channels with 16-byte
// loads when C % 4 == 0 and every tensor it touches is 16-byte aligned, else
// V = 1 (any C). Both widths share the kernels below (templates on V).
//
// Partial-sum launch: blocks of kThreads threads, lanes_c across channel groups
// (x) times lanes_p across positions (y); grid (tiles, chunks). Thread (cx, py)
// of chunk q sums positions begin(q) + py, + lanes_p, ... in order, kUnroll
// loads in flight; the lanes_p sums of a channel are then combined by a fixed
// tree in shared memory. Every order depends on the shape and V only, so a
// launch is deterministic run to run.

constexpr std::int64_t kMaxChunks = 1024;
constexpr int kLoadsPerThread = 8;  // target vector loads per thread and chunk
constexpr int kUnroll = 2;           // position loads in flight per thread

struct BnLayout {
  int lanes_c = 1, lanes_p = 1;
  unsigned tiles = 1;
  std::int64_t chunks = 1;
};

BnLayout bn_layout(const NormShape& s, int vec) {
  BnLayout l;
  const std::int64_t groups = (s.channels + vec - 1) / vec;
  l.lanes_c = static_cast<int>(std::min<std::int64_t>(groups, kThreads));
  l.lanes_p = kThreads / l.lanes_c;
  l.tiles = cuda::ceil_div(groups, l.lanes_c);
  const std::int64_t per_chunk = static_cast<std::int64_t>(l.lanes_p) * kLoadsPerThread;
  l.chunks = std::max<std::int64_t>(1, std::min<std::int64_t>(kMaxChunks, (s.count + per_chunk - 1) / per_chunk));
  return l;
}

// Chunks the workspace holds partials for: the larger of the two widths'
// layouts (which width runs depends on pointer alignment, known at launch).
std::int64_t workspace_chunks(const NormShape& s) {
  return std::max(bn_layout(s, 1).chunks, bn_layout(s, 4).chunks);
}

bool aligned16(const void* p) { return p == nullptr || reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

int bn_vec(const NormShape& s, std::initializer_list<const void*> tensors) {
  if (s.channels % 4 != 0) return 1;
  for (const void* p : tensors)
    if (!aligned16(p)) return 1;
  return 4;
}

// Workspace: partials (chunks, C) of double2, then 4 coefficient vectors (C)
// of float: forward scale, shift; backward a, b, c (see the apply kernel).
struct BnScratch {
  double2* partial;
  float* coef[4];
};

BnScratch carve(const NormShape& s, void* workspace) {
  const std::int64_t chunks = workspace_chunks(s);
  BnScratch w;
  w.partial = static_cast<double2*>(workspace);
  auto* coef = reinterpret_cast<float*>(w.partial + chunks * s.channels);
  for (int i = 0; i < 4; ++i) w.coef[i] = coef + i * s.channels;
  return w;
}

template <int V>
__device__ __forceinline__ void load_v(const float* p, float (&v)[V]) {
  if constexpr (V == 4) {
    const float4 t = __ldg(reinterpret_cast<const float4*>(p));
    v[0] = t.x;
    v[1] = t.y;
    v[2] = t.z;
    v[3] = t.w;
  } else {
    v[0] = __ldg(p);
  }
}

template <int V>
__device__ __forceinline__ void store_v(float* p, const float (&v)[V]) {
  if constexpr (V == 4) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  } else {
    p[0] = v[0];
  }
}

// Combines the lanes_p position lanes' V sums (a, b) in a fixed tree; thread
// py == 0 writes its channel group's totals to out[0..V) when `valid`.
template <int V>
__device__ __forceinline__ void reduce_partial(double (&a)[V], double (&b)[V], int lanes_c, int lanes_p, bool valid,
                                               double2* out) {
  __shared__ double2 s[kThreads * 4];
  const int cx = threadIdx.x, py = threadIdx.y;
  double2* mine = s + (py * lanes_c + cx) * V;
#pragma unroll
  for (int j = 0; j < V; ++j) mine[j] = make_double2(a[j], b[j]);
  int half = 1;
  while (half < lanes_p) half <<= 1;
  for (half >>= 1; half > 0; half >>= 1) {
    __syncthreads();
    if (py < half && py + half < lanes_p) {
      const double2* other = mine + half * lanes_c * V;
#pragma unroll
      for (int j = 0; j < V; ++j) mine[j] = make_double2(mine[j].x + other[j].x, mine[j].y + other[j].y);
    }
  }
  __syncthreads();
  if (py == 0 && valid) {
#pragma unroll
    for (int j = 0; j < V; ++j) out[j] = mine[j];
  }
}

// The block's chunk and its positions [begin, end). Blocks start in index
// order, so chunk = chunks - 1 - blockIdx.y sweeps the tensor from its end:
// the end is what the kernel before (a convolution writing this input) left
// in L2, and the apply pass after, sweeping from the start, finds there the
// start this pass read last.
__device__ __forceinline__ std::int64_t chunk_range(std::int64_t count, std::int64_t chunks, std::int64_t& begin,
                                                    std::int64_t& end) {
  const std::int64_t q = chunks - 1 - blockIdx.y;
  begin = count * q / chunks;
  end = count * (q + 1) / chunks;
  return q;
}

// Per (chunk, channel): sum and sum of squares of x.
template <int V>
__global__ void __launch_bounds__(kThreads)
    bn_stats_partial_kernel(const float* __restrict__ x, std::int64_t count, std::int64_t channels,
                            std::int64_t chunks, double2* __restrict__ partial) {
  const int lanes_c = blockDim.x, lanes_p = blockDim.y;
  const std::int64_t c0 = (static_cast<std::int64_t>(blockIdx.x) * lanes_c + threadIdx.x) * V;
  const bool valid = c0 < channels;
  std::int64_t begin, end;
  const std::int64_t chunk = chunk_range(count, chunks, begin, end);
  double sum[V], sq[V];
#pragma unroll
  for (int j = 0; j < V; ++j) sum[j] = sq[j] = 0.0;
  if (valid) {
    for (std::int64_t p0 = begin + threadIdx.y; p0 < end; p0 += kUnroll * lanes_p) {
      float v[kUnroll][V];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const std::int64_t p = p0 + u * lanes_p;
        if (p < end) load_v<V>(x + p * channels + c0, v[u]);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (p0 + u * lanes_p >= end) break;
#pragma unroll
        for (int j = 0; j < V; ++j) {
          const double d = v[u][j];
          sum[j] += d;
          sq[j] = fma(d, d, sq[j]);
        }
      }
    }
  }
  reduce_partial<V>(sum, sq, lanes_c, lanes_p, valid, partial + chunk * channels + c0);
}

// One warp per channel: lane l sums chunks l, l + 32, ... in order, then a
// fixed shuffle tree; lane 0 holds the total.
__device__ __forceinline__ double2 sum_chunks(const double2* __restrict__ partial, std::int64_t channels,
                                              std::int64_t chunks, std::int64_t c) {
  double a = 0.0, b = 0.0;
  for (std::int64_t q = threadIdx.x & 31; q < chunks; q += 32) {
    const double2 v = partial[q * channels + c];
    a += v.x;
    b += v.y;
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    a += __shfl_down_sync(cuda::kFullMask, a, offset);
    b += __shfl_down_sync(cuda::kFullMask, b, offset);
  }
  return make_double2(a, b);
}

constexpr int kFinalizeWarps = 8;

__global__ void __launch_bounds__(kFinalizeWarps * 32)
    bn_stats_finalize_kernel(const double2* __restrict__ partial, std::int64_t count, std::int64_t channels,
                             std::int64_t chunks, const float* __restrict__ gamma, const float* __restrict__ beta,
                             float eps, float momentum, float* __restrict__ running_mean,
                             float* __restrict__ running_var, float* __restrict__ save_mean,
                             float* __restrict__ save_invstd, float* __restrict__ scale, float* __restrict__ shift) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * kFinalizeWarps + threadIdx.x / 32;
  if (c >= channels) return;  // whole warps: the shuffles below see all 32 lanes
  const double2 t = sum_chunks(partial, channels, chunks, c);
  if ((threadIdx.x & 31) != 0) return;
  const double n = static_cast<double>(count);
  const double mean = t.x / n;
  const double var = fmax(t.y / n - mean * mean, 0.0);
  const double invstd = 1.0 / sqrt(var + static_cast<double>(eps));
  save_mean[c] = static_cast<float>(mean);
  save_invstd[c] = static_cast<float>(invstd);
  const double unbiased = count > 1 ? var * n / (n - 1.0) : var;
  running_mean[c] = static_cast<float>((1.0 - momentum) * running_mean[c] + momentum * mean);
  running_var[c] = static_cast<float>((1.0 - momentum) * running_var[c] + momentum * unbiased);
  const double sc = static_cast<double>(gamma[c]) * invstd;
  scale[c] = static_cast<float>(sc);
  shift[c] = static_cast<float>(static_cast<double>(beta[c]) - mean * sc);
}

__global__ void bn_eval_coefficients_kernel(std::int64_t channels, const float* __restrict__ gamma,
                                            const float* __restrict__ beta, const float* __restrict__ running_mean,
                                            const float* __restrict__ running_var, float eps, float* __restrict__ scale,
                                            float* __restrict__ shift) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= channels) return;
  const double invstd = 1.0 / sqrt(static_cast<double>(running_var[c]) + static_cast<double>(eps));
  const double sc = static_cast<double>(gamma[c]) * invstd;
  scale[c] = static_cast<float>(sc);
  shift[c] = static_cast<float>(static_cast<double>(beta[c]) - static_cast<double>(running_mean[c]) * sc);
}

// y = relu?(x * scale + shift + residual?), V channels per thread.
template <int V>
__global__ void __launch_bounds__(kThreads)
    bn_apply_kernel(const float* __restrict__ x, std::int64_t vectors, std::int64_t groups,
                    const float* __restrict__ scale, const float* __restrict__ shift, const float* __restrict__ residual,
                    bool relu, float* __restrict__ y) {
  const std::int64_t i0 = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kThreads;
  ChannelWalk ch(i0, stride, groups);
  for (std::int64_t i = i0; i < vectors; i += stride, ch.advance()) {
    float v[V], sc[V], sh[V], r[V];
    load_v<V>(x + i * V, v);
    load_v<V>(scale + ch.c * V, sc);
    load_v<V>(shift + ch.c * V, sh);
    if (residual != nullptr) load_v<V>(residual + i * V, r);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      float o = fmaf(v[j], sc[j], sh[j]);
      if (residual != nullptr) o += r[j];
      v[j] = relu && o < 0.f ? 0.f : o;
    }
    store_v<V>(y + i * V, v);
  }
}

// Per (chunk, channel): sum of g and of g * xhat, g = dy masked by the ReLU
// (y <= 0 or NaN passes nothing); also writes g to residual_grad when asked.
template <int V>
__global__ void __launch_bounds__(kThreads)
    bn_backward_partial_kernel(const float* __restrict__ dy, const float* __restrict__ x, const float* __restrict__ y,
                               bool relu, const float* __restrict__ save_mean, const float* __restrict__ save_invstd,
                               std::int64_t count, std::int64_t channels, std::int64_t chunks,
                               double2* __restrict__ partial, float* __restrict__ residual_grad) {
  const int lanes_c = blockDim.x, lanes_p = blockDim.y;
  const std::int64_t c0 = (static_cast<std::int64_t>(blockIdx.x) * lanes_c + threadIdx.x) * V;
  const bool valid = c0 < channels;
  std::int64_t begin, end;
  const std::int64_t chunk = chunk_range(count, chunks, begin, end);
  double sg[V], sgx[V], mean[V], invstd[V];
#pragma unroll
  for (int j = 0; j < V; ++j) sg[j] = sgx[j] = mean[j] = invstd[j] = 0.0;
  if (valid) {
#pragma unroll
    for (int j = 0; j < V; ++j) {
      mean[j] = save_mean[c0 + j];
      invstd[j] = save_invstd[c0 + j];
    }
    for (std::int64_t p0 = begin + threadIdx.y; p0 < end; p0 += kUnroll * lanes_p) {
      float g[kUnroll][V], xv[kUnroll][V];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const std::int64_t p = p0 + u * lanes_p;
        if (p >= end) break;
        const std::int64_t e = p * channels + c0;
        load_v<V>(dy + e, g[u]);
        load_v<V>(x + e, xv[u]);
        if (relu) {
          float yv[V];
          load_v<V>(y + e, yv);
#pragma unroll
          for (int j = 0; j < V; ++j) g[u][j] = yv[j] > 0.f ? g[u][j] : 0.f;
        }
        if (residual_grad != nullptr) store_v<V>(residual_grad + e, g[u]);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (p0 + u * lanes_p >= end) break;
#pragma unroll
        for (int j = 0; j < V; ++j) {
          const double gd = g[u][j];
          sg[j] += gd;
          sgx[j] += gd * (static_cast<double>(xv[u][j]) - mean[j]) * invstd[j];
        }
      }
    }
  }
  reduce_partial<V>(sg, sgx, lanes_c, lanes_p, valid, partial + chunk * channels + c0);
}

// dgamma, dbeta, and the apply pass's coefficients:
//   dx = a * g - b - c * (x - mean),  a = gamma * invstd, b = a * sum_g / count,
//   c = a * invstd * sum_gx / count
// (k * (count * g - sum_g - xhat * sum_gx) with k = gamma * invstd / count).
__global__ void __launch_bounds__(kFinalizeWarps * 32)
    bn_backward_finalize_kernel(const double2* __restrict__ partial, std::int64_t count, std::int64_t channels,
                                std::int64_t chunks, const float* __restrict__ gamma,
                                const float* __restrict__ save_invstd, float* __restrict__ dgamma,
                                float* __restrict__ dbeta, float* __restrict__ coef_a, float* __restrict__ coef_b,
                                float* __restrict__ coef_c) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * kFinalizeWarps + threadIdx.x / 32;
  if (c >= channels) return;
  const double2 t = sum_chunks(partial, channels, chunks, c);
  if ((threadIdx.x & 31) != 0) return;
  dbeta[c] = static_cast<float>(t.x);
  dgamma[c] = static_cast<float>(t.y);
  const double invstd = save_invstd[c], n = static_cast<double>(count);
  const double a = static_cast<double>(gamma[c]) * invstd;
  coef_a[c] = static_cast<float>(a);
  coef_b[c] = static_cast<float>(a * t.x / n);
  coef_c[c] = static_cast<float>(a * invstd * t.y / n);
}

// g is read back from `masked` (the residual gradient the partial kernel
// wrote: dy masked by the ReLU) when there is one -- one load instead of dy
// and y -- else recomputed from dy and y.
template <int V>
__global__ void __launch_bounds__(kThreads)
    bn_backward_apply_kernel(const float* __restrict__ dy, const float* __restrict__ x, const float* __restrict__ y,
                             bool relu, const float* __restrict__ masked, const float* __restrict__ save_mean,
                             const float* __restrict__ coef_a, const float* __restrict__ coef_b,
                             const float* __restrict__ coef_c, std::int64_t vectors, std::int64_t groups,
                             float* __restrict__ dx) {
  const std::int64_t i0 = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kThreads;
  ChannelWalk ch(i0, stride, groups);
  for (std::int64_t i = i0; i < vectors; i += stride, ch.advance()) {
    const std::int64_t e = i * V, c = ch.c * V;
    float g[V], xv[V], m[V], a[V], b[V], cc[V];
    if (masked != nullptr) {
      load_v<V>(masked + e, g);
    } else {
      load_v<V>(dy + e, g);
      if (relu) {
        float yv[V];
        load_v<V>(y + e, yv);
#pragma unroll
        for (int j = 0; j < V; ++j) g[j] = yv[j] > 0.f ? g[j] : 0.f;
      }
    }
    load_v<V>(x + e, xv);
    load_v<V>(save_mean + c, m);
    load_v<V>(coef_a + c, a);
    load_v<V>(coef_b + c, b);
    load_v<V>(coef_c + c, cc);
#pragma unroll
    for (int j = 0; j < V; ++j) xv[j] = fmaf(a[j], g[j], -b[j]) - cc[j] * (xv[j] - m[j]);
    store_v<V>(dx + e, xv);
  }
}

// ---- pooling, head, elementwise -----------------------------------------------------

__global__ void __launch_bounds__(kThreads)
    maxpool_forward_kernel(PoolShape s, const float* __restrict__ x, float* __restrict__ y,
                           std::int64_t* __restrict__ argmax) {
  const std::int64_t ho = s.out_h(), wo = s.out_w(), total = s.n * ho * wo * s.c;
  for (std::int64_t o = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x; o < total;
       o += static_cast<std::int64_t>(gridDim.x) * kThreads) {
    const std::int64_t c = o % s.c, ow = (o / s.c) % wo, oh = (o / (s.c * wo)) % ho, img = o / (s.c * wo * ho);
    float best = -INFINITY;
    std::int64_t where = -1;
    for (std::int64_t kh = 0; kh < s.k; ++kh) {
      const std::int64_t ih = oh * s.stride - s.pad + kh;
      if (ih < 0 || ih >= s.h) continue;
      for (std::int64_t kw = 0; kw < s.k; ++kw) {
        const std::int64_t iw = ow * s.stride - s.pad + kw;
        if (iw < 0 || iw >= s.w) continue;
        const std::int64_t e = ((img * s.h + ih) * s.w + iw) * s.c + c;
        const float v = x[e];
        if (v > best || where < 0) {
          best = v;
          where = e;
        }
      }
    }
    y[o] = best;
    argmax[o] = where;
  }
}

__global__ void __launch_bounds__(kThreads)
    maxpool_backward_kernel(PoolShape s, const float* __restrict__ dy, const std::int64_t* __restrict__ argmax,
                            float* __restrict__ dx) {
  const std::int64_t ho = s.out_h(), wo = s.out_w(), total = s.n * s.h * s.w * s.c;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x; e < total;
       e += static_cast<std::int64_t>(gridDim.x) * kThreads) {
    const std::int64_t c = e % s.c, iw = (e / s.c) % s.w, ih = (e / (s.c * s.w)) % s.h, img = e / (s.c * s.w * s.h);
    // Outputs whose window holds (ih, iw): oh*stride - pad <= ih <= oh*stride - pad + k - 1.
    const std::int64_t oh_lo = max(static_cast<std::int64_t>(0), (ih + s.pad - s.k + s.stride) / s.stride);
    const std::int64_t oh_hi = min(ho - 1, (ih + s.pad) / s.stride);
    const std::int64_t ow_lo = max(static_cast<std::int64_t>(0), (iw + s.pad - s.k + s.stride) / s.stride);
    const std::int64_t ow_hi = min(wo - 1, (iw + s.pad) / s.stride);
    float acc = 0.f;
    for (std::int64_t oh = oh_lo; oh <= oh_hi; ++oh)
      for (std::int64_t ow = ow_lo; ow <= ow_hi; ++ow) {
        const std::int64_t o = ((img * ho + oh) * wo + ow) * s.c + c;
        if (argmax[o] == e) acc += dy[o];
      }
    dx[e] = acc;
  }
}

__global__ void avgpool_forward_kernel(std::int64_t n, std::int64_t hw, std::int64_t c, const float* __restrict__ x,
                                       float* __restrict__ y) {
  const std::int64_t t = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= n * c) return;
  const std::int64_t img = t / c, ch = t % c;
  double sum = 0.0;
  for (std::int64_t p = 0; p < hw; ++p) sum += x[(img * hw + p) * c + ch];
  y[t] = static_cast<float>(sum / static_cast<double>(hw));
}

__global__ void __launch_bounds__(kThreads)
    avgpool_backward_kernel(std::int64_t n, std::int64_t hw, std::int64_t c, const float* __restrict__ dy,
                            float* __restrict__ dx) {
  const float inv = 1.f / static_cast<float>(hw);
  const std::int64_t total = n * hw * c;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x; e < total;
       e += static_cast<std::int64_t>(gridDim.x) * kThreads) {
    const std::int64_t ch = e % c, img = e / (hw * c);
    dx[e] = dy[img * c + ch] * inv;
  }
}

// One warp per row.
__global__ void l2norm_forward_kernel(std::int64_t n, std::int64_t d, const float* __restrict__ x,
                                      float* __restrict__ y) {
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= n) return;
  float ss = 0.f;
  for (std::int64_t k = lane; k < d; k += 32) ss = fmaf(x[row * d + k], x[row * d + k], ss);
  ss = cuda::warp_allreduce_sum(ss);
  const float inv = 1.f / fmaxf(sqrtf(ss), 1e-12f);
  for (std::int64_t k = lane; k < d; k += 32) y[row * d + k] = x[row * d + k] * inv;
}

__global__ void l2norm_backward_kernel(std::int64_t n, std::int64_t d, const float* __restrict__ x,
                                       const float* __restrict__ y, const float* __restrict__ dy,
                                       float* __restrict__ dx) {
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= n) return;
  float ss = 0.f, ydy = 0.f;
  for (std::int64_t k = lane; k < d; k += 32) {
    ss = fmaf(x[row * d + k], x[row * d + k], ss);
    ydy = fmaf(y[row * d + k], dy[row * d + k], ydy);
  }
  ss = cuda::warp_allreduce_sum(ss);
  ydy = cuda::warp_allreduce_sum(ydy);
  const float norm = sqrtf(ss);
  for (std::int64_t k = lane; k < d; k += 32)
    dx[row * d + k] = norm > 1e-12f ? (dy[row * d + k] - y[row * d + k] * ydy) / norm : dy[row * d + k] / 1e-12f;
}

__global__ void __launch_bounds__(kThreads)
    add_bias_kernel(std::int64_t n, std::int64_t d, const float* __restrict__ bias, float* __restrict__ y) {
  const std::int64_t e0 = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kThreads;
  ChannelWalk ch(e0, stride, d);
  for (std::int64_t e = e0; e < n * d; e += stride, ch.advance()) y[e] += bias[ch.c];
}

__global__ void bias_grad_kernel(std::int64_t n, std::int64_t d, const float* __restrict__ dy, float* __restrict__ db) {
  const std::int64_t o = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (o >= d) return;
  float acc = 0.f;
  for (std::int64_t i = 0; i < n; ++i) acc += dy[i * d + o];
  db[o] = acc;
}

__global__ void __launch_bounds__(kThreads)
    sgd_kernel(std::int64_t count, float* __restrict__ w, const float* __restrict__ grad, float* __restrict__ buf,
               float lr_value, const float* lr_device, float momentum, float weight_decay, bool nesterov,
               bool first) {
  const float lr = lr_device != nullptr ? *lr_device : lr_value;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x; e < count;
       e += static_cast<std::int64_t>(gridDim.x) * kThreads) {
    const float g = grad[e] + weight_decay * w[e];
    const float b = first ? g : momentum * buf[e] + g;
    buf[e] = b;
    w[e] -= lr * (nesterov ? g + momentum * b : b);
  }
}

}  // namespace

// ---- launchers ------------------------------------------------------------------------

std::size_t batchnorm_cuda_workspace_bytes(const NormShape& s) {
  return static_cast<std::size_t>(workspace_chunks(s) * s.channels) * sizeof(double2) +
         4 * static_cast<std::size_t>(s.channels) * sizeof(float);
}

namespace {

dim3 partial_grid(const BnLayout& l) { return dim3(l.tiles, static_cast<unsigned>(l.chunks)); }
dim3 partial_block(const BnLayout& l) { return dim3(static_cast<unsigned>(l.lanes_c), static_cast<unsigned>(l.lanes_p)); }
unsigned finalize_grid(const NormShape& s) { return cuda::ceil_div(s.channels, kFinalizeWarps); }

template <int V>
void apply_forward(Context& ctx, const NormShape& s, const float* x, const BnScratch& w, const float* residual,
                   bool relu, float* y, const char* what) {
  const std::int64_t vectors = s.count * s.channels / V;
  bn_apply_kernel<V><<<grid_1d(ctx, vectors), kThreads, 0, ctx.stream()>>>(x, vectors, s.channels / V, w.coef[0],
                                                                           w.coef[1], residual, relu, y);
  NPID_CHECK_LAUNCH(ctx, what);
}

template <int V>
void train_forward(Context& ctx, const NormShape& s, const float* x, const float* gamma, const float* beta, float eps,
                   float momentum, float* running_mean, float* running_var, const float* residual, bool relu, float* y,
                   float* save_mean, float* save_invstd, const BnScratch& w) {
  const BnLayout l = bn_layout(s, V);
  bn_stats_partial_kernel<V><<<partial_grid(l), partial_block(l), 0, ctx.stream()>>>(x, s.count, s.channels,
                                                                                      l.chunks, w.partial);
  NPID_CHECK_LAUNCH(ctx, "bn_stats_partial_kernel");
  bn_stats_finalize_kernel<<<finalize_grid(s), kFinalizeWarps * 32, 0, ctx.stream()>>>(
      w.partial, s.count, s.channels, l.chunks, gamma, beta, eps, momentum, running_mean, running_var, save_mean,
      save_invstd, w.coef[0], w.coef[1]);
  NPID_CHECK_LAUNCH(ctx, "bn_stats_finalize_kernel");
  apply_forward<V>(ctx, s, x, w, residual, relu, y, "bn_apply_kernel");
}

template <int V>
void backward(Context& ctx, const NormShape& s, const float* dy, const float* x, const float* y, bool relu,
              const float* gamma, const float* save_mean, const float* save_invstd, float* dx, float* dgamma,
              float* dbeta, float* residual_grad, const BnScratch& w) {
  const BnLayout l = bn_layout(s, V);
  bn_backward_partial_kernel<V><<<partial_grid(l), partial_block(l), 0, ctx.stream()>>>(
      dy, x, y, relu, save_mean, save_invstd, s.count, s.channels, l.chunks, w.partial, residual_grad);
  NPID_CHECK_LAUNCH(ctx, "bn_backward_partial_kernel");
  bn_backward_finalize_kernel<<<finalize_grid(s), kFinalizeWarps * 32, 0, ctx.stream()>>>(
      w.partial, s.count, s.channels, l.chunks, gamma, save_invstd, dgamma, dbeta, w.coef[0], w.coef[1], w.coef[2]);
  NPID_CHECK_LAUNCH(ctx, "bn_backward_finalize_kernel");
  const std::int64_t vectors = s.count * s.channels / V;
  bn_backward_apply_kernel<V><<<grid_1d(ctx, vectors), kThreads, 0, ctx.stream()>>>(
      dy, x, y, relu, residual_grad, save_mean, w.coef[0], w.coef[1], w.coef[2], vectors, s.channels / V, dx);
  NPID_CHECK_LAUNCH(ctx, "bn_backward_apply_kernel");
}

}  // namespace

void launch_batchnorm_train_forward(Context& ctx, const NormShape& s, const float* x, const float* gamma,
                                    const float* beta, float eps, float momentum, float* running_mean,
                                    float* running_var, const float* residual, bool relu, float* y, float* save_mean,
                                    float* save_invstd, void* workspace) {
  DeviceGuard guard(ctx.device());
  const BnScratch w = carve(s, workspace);
  if (bn_vec(s, {x, residual, y, workspace}) == 4)
    train_forward<4>(ctx, s, x, gamma, beta, eps, momentum, running_mean, running_var, residual, relu, y, save_mean,
                     save_invstd, w);
  else
    train_forward<1>(ctx, s, x, gamma, beta, eps, momentum, running_mean, running_var, residual, relu, y, save_mean,
                     save_invstd, w);
}

void launch_batchnorm_eval_forward(Context& ctx, const NormShape& s, const float* x, const float* gamma,
                                   const float* beta, const float* running_mean, const float* running_var, float eps,
                                   const float* residual, bool relu, float* y, void* workspace) {
  DeviceGuard guard(ctx.device());
  const BnScratch w = carve(s, workspace);
  bn_eval_coefficients_kernel<<<cuda::ceil_div(s.channels, 128), 128, 0, ctx.stream()>>>(
      s.channels, gamma, beta, running_mean, running_var, eps, w.coef[0], w.coef[1]);
  NPID_CHECK_LAUNCH(ctx, "bn_eval_coefficients_kernel");
  if (bn_vec(s, {x, residual, y, workspace}) == 4)
    apply_forward<4>(ctx, s, x, w, residual, relu, y, "bn_apply_kernel (eval)");
  else
    apply_forward<1>(ctx, s, x, w, residual, relu, y, "bn_apply_kernel (eval)");
}

void launch_batchnorm_backward(Context& ctx, const NormShape& s, const float* dy, const float* x, const float* y,
                               bool relu, const float* gamma, const float* save_mean, const float* save_invstd,
                               float* dx, float* dgamma, float* dbeta, float* residual_grad, void* workspace) {
  DeviceGuard guard(ctx.device());
  const BnScratch w = carve(s, workspace);
  if (bn_vec(s, {dy, x, relu ? y : nullptr, save_mean, dx, residual_grad, workspace}) == 4)
    backward<4>(ctx, s, dy, x, y, relu, gamma, save_mean, save_invstd, dx, dgamma, dbeta, residual_grad, w);
  else
    backward<1>(ctx, s, dy, x, y, relu, gamma, save_mean, save_invstd, dx, dgamma, dbeta, residual_grad, w);
}

void launch_maxpool_forward(Context& ctx, const PoolShape& s, const float* x, float* y, std::int64_t* argmax) {
  DeviceGuard guard(ctx.device());
  maxpool_forward_kernel<<<grid_1d(ctx, s.n * s.out_h() * s.out_w() * s.c), kThreads, 0, ctx.stream()>>>(s, x, y,
                                                                                                         argmax);
  NPID_CHECK_LAUNCH(ctx, "maxpool_forward_kernel");
}

void launch_maxpool_backward(Context& ctx, const PoolShape& s, const float* dy, const std::int64_t* argmax,
                             float* dx) {
  DeviceGuard guard(ctx.device());
  maxpool_backward_kernel<<<grid_1d(ctx, s.n * s.h * s.w * s.c), kThreads, 0, ctx.stream()>>>(s, dy, argmax, dx);
  NPID_CHECK_LAUNCH(ctx, "maxpool_backward_kernel");
}

void launch_avgpool_forward(Context& ctx, std::int64_t n, std::int64_t hw, std::int64_t c, const float* x, float* y) {
  DeviceGuard guard(ctx.device());
  avgpool_forward_kernel<<<cuda::ceil_div(n * c, 128), 128, 0, ctx.stream()>>>(n, hw, c, x, y);
  NPID_CHECK_LAUNCH(ctx, "avgpool_forward_kernel");
}

void launch_avgpool_backward(Context& ctx, std::int64_t n, std::int64_t hw, std::int64_t c, const float* dy,
                             float* dx) {
  DeviceGuard guard(ctx.device());
  avgpool_backward_kernel<<<grid_1d(ctx, n * hw * c), kThreads, 0, ctx.stream()>>>(n, hw, c, dy, dx);
  NPID_CHECK_LAUNCH(ctx, "avgpool_backward_kernel");
}

void launch_l2norm_forward(Context& ctx, std::int64_t n, std::int64_t d, const float* x, float* y) {
  DeviceGuard guard(ctx.device());
  l2norm_forward_kernel<<<cuda::ceil_div(n, 8), 256, 0, ctx.stream()>>>(n, d, x, y);
  NPID_CHECK_LAUNCH(ctx, "l2norm_forward_kernel");
}

void launch_l2norm_backward(Context& ctx, std::int64_t n, std::int64_t d, const float* x, const float* y,
                            const float* dy, float* dx) {
  DeviceGuard guard(ctx.device());
  l2norm_backward_kernel<<<cuda::ceil_div(n, 8), 256, 0, ctx.stream()>>>(n, d, x, y, dy, dx);
  NPID_CHECK_LAUNCH(ctx, "l2norm_backward_kernel");
}

void launch_add_bias(Context& ctx, std::int64_t n, std::int64_t d, const float* bias, float* y) {
  DeviceGuard guard(ctx.device());
  add_bias_kernel<<<grid_1d(ctx, n * d), kThreads, 0, ctx.stream()>>>(n, d, bias, y);
  NPID_CHECK_LAUNCH(ctx, "add_bias_kernel");
}

void launch_bias_grad(Context& ctx, std::int64_t n, std::int64_t d, const float* dy, float* db) {
  DeviceGuard guard(ctx.device());
  bias_grad_kernel<<<cuda::ceil_div(d, 128), 128, 0, ctx.stream()>>>(n, d, dy, db);
  NPID_CHECK_LAUNCH(ctx, "bias_grad_kernel");
}

void launch_sgd_step(Context& ctx, std::int64_t count, float* w, const float* grad, float* buf, float lr,
                     float momentum, float weight_decay, bool nesterov, bool first, const float* lr_device) {
  DeviceGuard guard(ctx.device());
  sgd_kernel<<<grid_1d(ctx, count), kThreads, 0, ctx.stream()>>>(count, w, grad, buf, lr, lr_device, momentum,
                                                                 weight_decay, nesterov, first);
  NPID_CHECK_LAUNCH(ctx, "sgd_kernel");
}

}  // namespace layers
}  // namespace npid

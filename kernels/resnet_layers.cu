// resnet_layers.cu -- the ResNet-18 layers on CUDA (contracts in
// resnet_layers.h; CPU references in resnet_layers_cpu.cpp).
//
// BatchNorm (NHWC, C channels over `count` positions), three launches each way:
//   partial kernel   grid (ceil(C/32), chunks), block 32 x 8: lane x is a
//                    channel, lane y walks positions of the block's chunk; per
//                    chunk and channel, double sums (x, x^2; or g, g * xhat)
//                    combined over the 8 position lanes in a fixed order
//   finalize kernel  one thread per channel: chunks summed in order -> mean,
//                    invstd, running statistics (or dgamma, dbeta), and the
//                    per-channel coefficients of the apply pass
//   apply kernel     elementwise: y = x * scale + shift (+ residual) (ReLU),
//                    or dx from the coefficients (reading the masked
//                    gradient back from the residual gradient when the
//                    partial kernel wrote one: one load instead of dy and y)
// Max pool backward is a gather (each input sums the outputs that chose it,
// in output order): no atomics, the same order as the CPU reference.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "common/cuda_utils.cuh"
#include "core/check.h"
#include "core/context_impl.h"
#include "resnet_layers.h"

namespace npid {
namespace layers {
namespace {

constexpr int kThreads = 256;
constexpr int kChanTile = 32;  // channels per partial-sum block (x)
constexpr int kPosLanes = 8;   // position lanes per partial-sum block (y)
constexpr std::int64_t kMaxChunks = 1024;

// The channel of NHWC element e (= position * C + channel) along a grid-stride
// loop: one 64-bit modulo per thread, then an add and a wrap per step instead
// of a 64-bit `%` per element (emulated on the GPU: tens of instructions, as
// many as the element's memory traffic is worth).
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

std::int64_t chunks_for(const NormShape& s) {
  return std::max<std::int64_t>(1, std::min<std::int64_t>(kMaxChunks, (s.count + 255) / 256));
}

// Workspace layout: partials (chunks, C) of double2; coefficients (C) x 3 of float.
struct BnScratch {
  double2* partial;
  float* a;  // scale, or k = gamma * invstd / count
  float* b;  // shift, or sum_g
  float* c;  // unused, or sum_gx
};

BnScratch carve(const NormShape& s, void* workspace) {
  const std::int64_t chunks = chunks_for(s);
  auto* partial = static_cast<double2*>(workspace);
  auto* coef = reinterpret_cast<float*>(partial + chunks * s.channels);
  return {partial, coef, coef + s.channels, coef + 2 * s.channels};
}

// ---- BatchNorm kernels ------------------------------------------------------------

// Combines the kPosLanes position lanes' sums (a, b) of this thread's channel
// in a fixed order; lane 0 writes them to *out when `valid`.
__device__ __forceinline__ void store_partial(double a, double b, bool valid, double2* out) {
  __shared__ double s_a[kPosLanes][kChanTile], s_b[kPosLanes][kChanTile];
  s_a[threadIdx.y][threadIdx.x] = a;
  s_b[threadIdx.y][threadIdx.x] = b;
  __syncthreads();
  if (threadIdx.y == 0 && valid) {
    double ta = 0.0, tb = 0.0;
    for (int l = 0; l < kPosLanes; ++l) {
      ta += s_a[l][threadIdx.x];
      tb += s_b[l][threadIdx.x];
    }
    *out = make_double2(ta, tb);
  }
}

// Per (chunk, channel): sum and sum of squares of x.
__global__ void __launch_bounds__(kChanTile * kPosLanes)
    bn_stats_partial_kernel(const float* __restrict__ x, std::int64_t count, std::int64_t channels,
                            std::int64_t chunks, double2* __restrict__ partial) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * kChanTile + threadIdx.x;
  const std::int64_t chunk = blockIdx.y;
  const std::int64_t begin = count * chunk / chunks, end = count * (chunk + 1) / chunks;
  double sum = 0.0, sq = 0.0;
  if (c < channels) {
    for (std::int64_t p = begin + threadIdx.y; p < end; p += kPosLanes) {
      const double v = x[p * channels + c];
      sum += v;
      sq += v * v;
    }
  }
  store_partial(sum, sq, c < channels, partial + chunk * channels + c);
}

__global__ void bn_stats_finalize_kernel(const double2* __restrict__ partial, std::int64_t count,
                                         std::int64_t channels, std::int64_t chunks, const float* __restrict__ gamma,
                                         const float* __restrict__ beta, float eps, float momentum,
                                         float* __restrict__ running_mean, float* __restrict__ running_var,
                                         float* __restrict__ save_mean, float* __restrict__ save_invstd,
                                         float* __restrict__ scale, float* __restrict__ shift) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= channels) return;
  double sum = 0.0, sq = 0.0;
  for (std::int64_t k = 0; k < chunks; ++k) {
    sum += partial[k * channels + c].x;
    sq += partial[k * channels + c].y;
  }
  const double n = static_cast<double>(count);
  const double mean = sum / n;
  const double var = fmax(sq / n - mean * mean, 0.0);
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

__global__ void __launch_bounds__(kThreads)
    bn_apply_kernel(const float* __restrict__ x, std::int64_t total, std::int64_t channels,
                    const float* __restrict__ scale, const float* __restrict__ shift, const float* __restrict__ residual,
                    bool relu, float* __restrict__ y) {
  const std::int64_t e0 = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kThreads;
  ChannelWalk ch(e0, stride, channels);
  for (std::int64_t e = e0; e < total; e += stride, ch.advance()) {
    const std::int64_t c = ch.c;
    float v = fmaf(x[e], scale[c], shift[c]);
    if (residual != nullptr) v += residual[e];
    y[e] = relu && v < 0.f ? 0.f : v;
  }
}

// Per (chunk, channel): sum of g and of g * xhat, g = dy masked by ReLU; also
// writes the residual gradient (g) when asked.
__global__ void __launch_bounds__(kChanTile * kPosLanes)
    bn_backward_partial_kernel(const float* __restrict__ dy, const float* __restrict__ x, const float* __restrict__ y,
                               bool relu, const float* __restrict__ save_mean, const float* __restrict__ save_invstd,
                               std::int64_t count, std::int64_t channels, std::int64_t chunks,
                               double2* __restrict__ partial, float* __restrict__ residual_grad) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * kChanTile + threadIdx.x;
  const std::int64_t chunk = blockIdx.y;
  const std::int64_t begin = count * chunk / chunks, end = count * (chunk + 1) / chunks;
  double sg = 0.0, sgx = 0.0;
  if (c < channels) {
    const double mean = save_mean[c], invstd = save_invstd[c];
    for (std::int64_t p = begin + threadIdx.y; p < end; p += kPosLanes) {
      const std::int64_t e = p * channels + c;
      const float g = relu && !(y[e] > 0.f) ? 0.f : dy[e];
      if (residual_grad != nullptr) residual_grad[e] = g;
      sg += g;
      sgx += static_cast<double>(g) * (static_cast<double>(x[e]) - mean) * invstd;
    }
  }
  store_partial(sg, sgx, c < channels, partial + chunk * channels + c);
}

__global__ void bn_backward_finalize_kernel(const double2* __restrict__ partial, std::int64_t count,
                                            std::int64_t channels, std::int64_t chunks,
                                            const float* __restrict__ gamma, const float* __restrict__ save_invstd,
                                            float* __restrict__ dgamma, float* __restrict__ dbeta, float* __restrict__ k,
                                            float* __restrict__ sum_g, float* __restrict__ sum_gx) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= channels) return;
  double a = 0.0, b = 0.0;
  for (std::int64_t q = 0; q < chunks; ++q) {
    a += partial[q * channels + c].x;
    b += partial[q * channels + c].y;
  }
  dbeta[c] = static_cast<float>(a);
  dgamma[c] = static_cast<float>(b);
  k[c] = static_cast<float>(static_cast<double>(gamma[c]) * save_invstd[c] / static_cast<double>(count));
  sum_g[c] = static_cast<float>(a);
  sum_gx[c] = static_cast<float>(b);
}

// g is read back from `masked` (the residual gradient the partial kernel
// wrote: dy masked by the ReLU) when there is one -- one load instead of dy
// and y -- else recomputed from dy and y.
__global__ void __launch_bounds__(kThreads)
    bn_backward_apply_kernel(const float* __restrict__ dy, const float* __restrict__ x, const float* __restrict__ y,
                             bool relu, const float* __restrict__ masked, const float* __restrict__ save_mean,
                             const float* __restrict__ save_invstd, const float* __restrict__ k,
                             const float* __restrict__ sum_g, const float* __restrict__ sum_gx, std::int64_t total,
                             std::int64_t channels, float count, float* __restrict__ dx) {
  const std::int64_t e0 = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kThreads;
  ChannelWalk ch(e0, stride, channels);
  for (std::int64_t e = e0; e < total; e += stride, ch.advance()) {
    const std::int64_t c = ch.c;
    const float g = masked != nullptr ? masked[e] : relu && !(y[e] > 0.f) ? 0.f : dy[e];
    const float xhat = (x[e] - save_mean[c]) * save_invstd[c];
    dx[e] = k[c] * (count * g - sum_g[c] - xhat * sum_gx[c]);
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
  return static_cast<std::size_t>(chunks_for(s) * s.channels) * sizeof(double2) +
         3 * static_cast<std::size_t>(s.channels) * sizeof(float);
}

void launch_batchnorm_train_forward(Context& ctx, const NormShape& s, const float* x, const float* gamma,
                                    const float* beta, float eps, float momentum, float* running_mean,
                                    float* running_var, const float* residual, bool relu, float* y, float* save_mean,
                                    float* save_invstd, void* workspace) {
  DeviceGuard guard(ctx.device());
  const BnScratch w = carve(s, workspace);
  const std::int64_t chunks = chunks_for(s);
  const dim3 grid(cuda::ceil_div(s.channels, kChanTile), static_cast<unsigned>(chunks));
  bn_stats_partial_kernel<<<grid, dim3(kChanTile, kPosLanes), 0, ctx.stream()>>>(x, s.count, s.channels, chunks,
                                                                                  w.partial);
  NPID_CHECK_LAUNCH(ctx, "bn_stats_partial_kernel");
  bn_stats_finalize_kernel<<<cuda::ceil_div(s.channels, 128), 128, 0, ctx.stream()>>>(
      w.partial, s.count, s.channels, chunks, gamma, beta, eps, momentum, running_mean, running_var, save_mean,
      save_invstd, w.a, w.b);
  NPID_CHECK_LAUNCH(ctx, "bn_stats_finalize_kernel");
  bn_apply_kernel<<<grid_1d(ctx, s.count * s.channels), kThreads, 0, ctx.stream()>>>(
      x, s.count * s.channels, s.channels, w.a, w.b, residual, relu, y);
  NPID_CHECK_LAUNCH(ctx, "bn_apply_kernel");
}

void launch_batchnorm_eval_forward(Context& ctx, const NormShape& s, const float* x, const float* gamma,
                                   const float* beta, const float* running_mean, const float* running_var, float eps,
                                   const float* residual, bool relu, float* y, void* workspace) {
  DeviceGuard guard(ctx.device());
  const BnScratch w = carve(s, workspace);
  bn_eval_coefficients_kernel<<<cuda::ceil_div(s.channels, 128), 128, 0, ctx.stream()>>>(
      s.channels, gamma, beta, running_mean, running_var, eps, w.a, w.b);
  NPID_CHECK_LAUNCH(ctx, "bn_eval_coefficients_kernel");
  bn_apply_kernel<<<grid_1d(ctx, s.count * s.channels), kThreads, 0, ctx.stream()>>>(
      x, s.count * s.channels, s.channels, w.a, w.b, residual, relu, y);
  NPID_CHECK_LAUNCH(ctx, "bn_apply_kernel (eval)");
}

void launch_batchnorm_backward(Context& ctx, const NormShape& s, const float* dy, const float* x, const float* y,
                               bool relu, const float* gamma, const float* save_mean, const float* save_invstd,
                               float* dx, float* dgamma, float* dbeta, float* residual_grad, void* workspace) {
  DeviceGuard guard(ctx.device());
  const BnScratch w = carve(s, workspace);
  const std::int64_t chunks = chunks_for(s);
  const dim3 grid(cuda::ceil_div(s.channels, kChanTile), static_cast<unsigned>(chunks));
  bn_backward_partial_kernel<<<grid, dim3(kChanTile, kPosLanes), 0, ctx.stream()>>>(
      dy, x, y, relu, save_mean, save_invstd, s.count, s.channels, chunks, w.partial, residual_grad);
  NPID_CHECK_LAUNCH(ctx, "bn_backward_partial_kernel");
  bn_backward_finalize_kernel<<<cuda::ceil_div(s.channels, 128), 128, 0, ctx.stream()>>>(
      w.partial, s.count, s.channels, chunks, gamma, save_invstd, dgamma, dbeta, w.a, w.b, w.c);
  NPID_CHECK_LAUNCH(ctx, "bn_backward_finalize_kernel");
  bn_backward_apply_kernel<<<grid_1d(ctx, s.count * s.channels), kThreads, 0, ctx.stream()>>>(
      dy, x, y, relu, residual_grad, save_mean, save_invstd, w.a, w.b, w.c, s.count * s.channels, s.channels,
      static_cast<float>(s.count), dx);
  NPID_CHECK_LAUNCH(ctx, "bn_backward_apply_kernel");
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

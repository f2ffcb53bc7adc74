// softmax.cu -- full non-parametric softmax forward+backward on CUDA
// (docs/math.md s.5), memory O(B x C) for a bank walked in chunks of C rows.
//
// This is flash attention's online softmax with keys = values = bank rows:
//   acc_i = sum_k exp(l_ik - m_i) V[k],  s_i = sum_k exp(l_ik - m_i),
//   m_i the running max of the logits l_ik = f_i . V[k] / tau.
// Per chunk [c0, c0 + C):
//   (bf16 bank, kTF32/kFP32) widen_chunk_kernel  the chunk's rows -> fp32 staging (C x D)
//   cuBLAS GEMM                      S = f Vc^T / tau             (B x C)
//   softmax_chunk_kernel             per sample: chunk max, new running max
//                                    m', S <- exp(S - m'), s <- s e^(m-m') + sum,
//                                    acc row *= e^(m-m')
//   cuBLAS GEMM                      acc += S Vc                    (B x D)
// SoftmaxMath::kBF16 (bf16 banks): both GEMMs read the bank's bf16 rows as
// stored (no staging pass) against bf16 operands -- the features, rounded once
// per call, and the weights, which softmax_chunk_kernel also writes rounded to
// bf16 (B x C) and sums as rounded, so s and acc see the same weights -- with
// fp32 accumulation and fp32 S / acc.
// then softmax_finalize_kernel: the target logit (exact fp32 dot), loss terms
// m + log s - l_iy, gradient (acc / s - V[y]) / (B tau), the proximal term;
// and softmax_loss_kernel sums the batch loss in double (fixed order).
//
// Each bank row enters two GEMMs (4BND FLOPs), nothing is recomputed, and
// with the default budget S stays small enough to live in L2 between the
// GEMMs. Every step is in stream order; no atomics: deterministic for a given
// device, shape and chunk.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cub/block/block_reduce.cuh>

#include <cmath>

#include "common/bf16.h"
#include "common/cuda_utils.cuh"
#include "core/check.h"
#include "core/context_impl.h"
#include "softmax.h"

namespace npid {
namespace {

constexpr int kThreads = 256;
constexpr int kFinalizeThreads = 128;


struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// acc = 0, running max = -inf, running sum = 0.
__global__ void softmax_init_kernel(float* __restrict__ acc, float* __restrict__ run_max,
                                    float* __restrict__ run_sum, std::int64_t batch, std::int64_t dim) {
  const std::int64_t n = batch * dim;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    acc[e] = 0.f;
    if (e < batch) {
      run_max[e] = -INFINITY;
      run_sum[e] = 0.f;
    }
  }
}

__global__ void widen_chunk_kernel(const bf16* __restrict__ src, float* __restrict__ dst, std::int64_t n) {
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    dst[e] = bf16_to_float(src[e]);
}

// fp32 -> bf16 (round to nearest even), for the kBF16 GEMM operands.
__global__ void narrow_kernel(const float* __restrict__ src, bf16* __restrict__ dst, std::int64_t n) {
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    dst[e] = float_to_bf16(src[e]);
}

// One block per sample i; S row i has `len` logits (row stride len). With
// `w16` set (kBF16), the weights are also written rounded to bf16 there (same
// layout) and the running sum adds the rounded values.
__global__ void __launch_bounds__(kThreads)
    softmax_chunk_kernel(float* __restrict__ s, std::int64_t len, float* __restrict__ acc,
                         std::int64_t dim, float* __restrict__ run_max, float* __restrict__ run_sum,
                         bf16* __restrict__ w16) {
  using BlockReduce = cub::BlockReduce<float, kThreads>;
  __shared__ typename BlockReduce::TempStorage temp;
  __shared__ float s_max, s_scale;
  const std::int64_t i = blockIdx.x;
  float* row = s + i * len;

  float m = -INFINITY;
  for (std::int64_t k = threadIdx.x; k < len; k += kThreads) m = fmaxf(m, row[k]);
  m = BlockReduce(temp).Reduce(m, MaxOp{});
  if (threadIdx.x == 0) {
    const float old_max = run_max[i];
    const float new_max = fmaxf(old_max, m);
    s_max = new_max;
    s_scale = expf(old_max - new_max);  // 0 on the first chunk (old_max = -inf)
    run_max[i] = new_max;
  }
  __syncthreads();
  const float new_max = s_max, scale = s_scale;

  float sum = 0.f;
  if (w16 != nullptr) {
    bf16* row16 = w16 + i * len;
    for (std::int64_t k = threadIdx.x; k < len; k += kThreads) {
      const bf16 w = float_to_bf16(expf(row[k] - new_max));
      row16[k] = w;
      sum += bf16_to_float(w);
    }
  } else {
    for (std::int64_t k = threadIdx.x; k < len; k += kThreads) {
      const float w = expf(row[k] - new_max);
      row[k] = w;
      sum += w;
    }
  }
  __syncthreads();  // temp storage reuse
  sum = BlockReduce(temp).Sum(sum);
  if (threadIdx.x == 0) run_sum[i] = run_sum[i] * scale + sum;
  for (std::int64_t d = threadIdx.x; d < dim; d += kThreads) acc[i * dim + d] *= scale;
}

template <typename T>
__global__ void __launch_bounds__(kFinalizeThreads)
    softmax_finalize_kernel(const float* __restrict__ features, const std::int64_t* __restrict__ targets,
                            const T* __restrict__ bank, const float* __restrict__ acc,
                            const float* __restrict__ run_max, const float* __restrict__ run_sum,
                            std::int64_t dim, float inv_tau, float inv_batch, float lambda,
                            float* __restrict__ grad, float* __restrict__ sample_loss) {
  using BlockReduce = cub::BlockReduce<float, kFinalizeThreads>;
  __shared__ typename BlockReduce::TempStorage temp;
  const std::int64_t i = blockIdx.x;
  const T* pos = bank + targets[i] * dim;
  const float* f = features + i * dim;
  const float inv_sum = 1.f / run_sum[i];
  const float scale = inv_batch * inv_tau;
  const float prox_scale = 2.f * lambda * inv_batch;
  float dot = 0.f, prox = 0.f;
  for (std::int64_t d = threadIdx.x; d < dim; d += kFinalizeThreads) {
    const float v = cuda::Storage<T>::load1(pos + d);
    const float diff = f[d] - v;
    dot = fmaf(f[d], v, dot);
    prox = fmaf(diff, diff, prox);
    grad[i * dim + d] = fmaf(prox_scale, diff, (acc[i * dim + d] * inv_sum - v) * scale);
  }
  const float total_dot = BlockReduce(temp).Sum(dot);
  __syncthreads();
  const float total_prox = BlockReduce(temp).Sum(prox);
  if (threadIdx.x == 0) {
    const float lse = run_max[i] + logf(run_sum[i]);
    sample_loss[i] = (lse - total_dot * inv_tau) * inv_batch + lambda * inv_batch * total_prox;
  }
}

constexpr int kLossThreads = 256;
__global__ void __launch_bounds__(kLossThreads)
    softmax_loss_kernel(const float* __restrict__ sample_loss, std::int64_t batch, float* __restrict__ loss) {
  using BlockReduce = cub::BlockReduce<double, kLossThreads>;
  __shared__ typename BlockReduce::TempStorage temp;
  double l = 0.0;
  for (std::int64_t k = threadIdx.x; k < batch; k += kLossThreads) l += sample_loss[k];
  l = BlockReduce(temp).Sum(l);
  if (threadIdx.x == 0) *loss = static_cast<float>(l);
}

unsigned grid_for(std::int64_t n, const Context& ctx) {
  return std::min(cuda::ceil_div(n, kThreads),
                  static_cast<unsigned>(ctx.device_info().multiprocessors) * 8u);
}

}  // namespace

std::size_t softmax_cuda_workspace_bytes(std::int64_t batch, std::int64_t dim, std::int64_t chunk,
                                         DType bank_dtype, SoftmaxMath math) {
  const auto b = static_cast<std::size_t>(batch), d = static_cast<std::size_t>(dim),
             c = static_cast<std::size_t>(chunk);
  std::size_t bytes = cuda::align256(b * c * sizeof(float))      // S
                      + cuda::align256(b * d * sizeof(float))    // acc
                      + 3 * cuda::align256(b * sizeof(float));   // running max, sum, sample loss
  if (math == SoftmaxMath::kBF16) {
    bytes += cuda::align256(b * c * sizeof(bf16))    // weights in bf16
             + cuda::align256(b * d * sizeof(bf16));  // features in bf16
  } else if (bank_dtype == DType::kBFloat16) {
    bytes += cuda::align256(c * d * sizeof(float));  // staging
  }
  return bytes;
}

void launch_softmax_forward_backward(Context& ctx, const SoftmaxProblem& p) {
  DeviceGuard guard(ctx.device());
  cudaStream_t stream = ctx.stream();
  const std::int64_t B = p.batch, D = p.dim, N = p.bank_size, C = p.chunk;
  const bool bf16_bank = p.bank_dtype == DType::kBFloat16;
  const bool bf16_math = p.math == SoftmaxMath::kBF16;  // the entry point requires a bf16 bank
  Workspace& ws = ctx.workspace();
  ws.reserve(softmax_cuda_workspace_bytes(B, D, C, p.bank_dtype, p.math), stream);
  char* cursor = static_cast<char*>(ws.data());
  auto carve = [&cursor](std::size_t bytes) {
    float* out = reinterpret_cast<float*>(cursor);
    cursor += cuda::align256(bytes);
    return out;
  };
  float* s = carve(static_cast<std::size_t>(B * C) * sizeof(float));
  float* acc = carve(static_cast<std::size_t>(B * D) * sizeof(float));
  float* run_max = carve(static_cast<std::size_t>(B) * sizeof(float));
  float* run_sum = carve(static_cast<std::size_t>(B) * sizeof(float));
  float* sample_loss = carve(static_cast<std::size_t>(B) * sizeof(float));
  float* staging = bf16_bank && !bf16_math ? carve(static_cast<std::size_t>(C * D) * sizeof(float)) : nullptr;
  auto* w16 = bf16_math ? reinterpret_cast<bf16*>(carve(static_cast<std::size_t>(B * C) * sizeof(bf16))) : nullptr;
  auto* f16 = bf16_math ? reinterpret_cast<bf16*>(carve(static_cast<std::size_t>(B * D) * sizeof(bf16))) : nullptr;

  cublasHandle_t handle = cublas_handle(ctx);
  const cublasComputeType_t compute =
      p.math == SoftmaxMath::kTF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const float inv_tau = 1.0f / p.temperature, one = 1.0f, zero = 0.0f;

  softmax_init_kernel<<<grid_for(B * D, ctx), kThreads, 0, stream>>>(acc, run_max, run_sum, B, D);
  NPID_CHECK_LAUNCH(ctx, "softmax_init_kernel");
  if (bf16_math) {
    narrow_kernel<<<grid_for(B * D, ctx), kThreads, 0, stream>>>(p.features, f16, B * D);
    NPID_CHECK_LAUNCH(ctx, "narrow_kernel (features)");
  }

  for (std::int64_t c0 = 0; c0 < N; c0 += C) {
    const std::int64_t len = std::min(C, N - c0);
    if (bf16_math) {
      const bf16* rows16 = static_cast<const bf16*>(p.bank) + c0 * D;
      // S^T (len x B) = Vc (len x D) * f^T (D x B) / tau: bf16 operands, fp32 out.
      NPID_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(len), static_cast<int>(B),
                                     static_cast<int>(D), &inv_tau, rows16, CUDA_R_16BF, static_cast<int>(D), f16,
                                     CUDA_R_16BF, static_cast<int>(D), &zero, s, CUDA_R_32F, static_cast<int>(len),
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      softmax_chunk_kernel<<<static_cast<unsigned>(B), kThreads, 0, stream>>>(s, len, acc, D, run_max, run_sum,
                                                                              w16);
      NPID_CHECK_LAUNCH(ctx, "softmax_chunk_kernel");
      // acc^T (D x B) += Vc^T (D x len) * W^T (len x B): bf16 operands, fp32 accumulate.
      NPID_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(D), static_cast<int>(B),
                                     static_cast<int>(len), &one, rows16, CUDA_R_16BF, static_cast<int>(D), w16,
                                     CUDA_R_16BF, static_cast<int>(len), &one, acc, CUDA_R_32F, static_cast<int>(D),
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      continue;
    }
    const float* rows;
    if (bf16_bank) {
      widen_chunk_kernel<<<grid_for(len * D, ctx), kThreads, 0, stream>>>(
          static_cast<const bf16*>(p.bank) + c0 * D, staging, len * D);
      NPID_CHECK_LAUNCH(ctx, "widen_chunk_kernel");
      rows = staging;
    } else {
      rows = static_cast<const float*>(p.bank) + c0 * D;
    }
    // Column-major view: S^T (len x B) = Vc (len x D) * f^T (D x B), scaled by 1/tau.
    NPID_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(len),
                                   static_cast<int>(B), static_cast<int>(D), &inv_tau, rows, CUDA_R_32F,
                                   static_cast<int>(D), p.features, CUDA_R_32F, static_cast<int>(D), &zero,
                                   s, CUDA_R_32F, static_cast<int>(len), compute, CUBLAS_GEMM_DEFAULT));
    softmax_chunk_kernel<<<static_cast<unsigned>(B), kThreads, 0, stream>>>(s, len, acc, D, run_max, run_sum,
                                                                            nullptr);
    NPID_CHECK_LAUNCH(ctx, "softmax_chunk_kernel");
    // acc^T (D x B) += Vc^T (D x len) * W^T (len x B).
    NPID_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(D), static_cast<int>(B),
                                   static_cast<int>(len), &one, rows, CUDA_R_32F, static_cast<int>(D), s,
                                   CUDA_R_32F, static_cast<int>(len), &one, acc, CUDA_R_32F,
                                   static_cast<int>(D), compute, CUBLAS_GEMM_DEFAULT));
  }

  const float inv_batch = 1.0f / static_cast<float>(B);
  if (bf16_bank) {
    softmax_finalize_kernel<<<static_cast<unsigned>(B), kFinalizeThreads, 0, stream>>>(
        p.features, p.targets, static_cast<const bf16*>(p.bank), acc, run_max, run_sum, D, inv_tau,
        inv_batch, p.lambda, p.grad, sample_loss);
  } else {
    softmax_finalize_kernel<<<static_cast<unsigned>(B), kFinalizeThreads, 0, stream>>>(
        p.features, p.targets, static_cast<const float*>(p.bank), acc, run_max, run_sum, D, inv_tau,
        inv_batch, p.lambda, p.grad, sample_loss);
  }
  NPID_CHECK_LAUNCH(ctx, "softmax_finalize_kernel");
  softmax_loss_kernel<<<1, kLossThreads, 0, stream>>>(sample_loss, B, p.loss);
  NPID_CHECK_LAUNCH(ctx, "softmax_loss_kernel");
}

}  // namespace npid

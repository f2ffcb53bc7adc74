// linear.cu -- a linear classifier's forward+backward on CUDA: scores by a
// cuBLAS GEMM, one thread per row for the loss and dL/dscores
// (common/linear_row.h), weight gradient by a second GEMM, bias gradient by a
// block reduction per class.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "common/cuda_utils.cuh"
#include "common/linear_row.h"
#include "core/check.h"
#include "core/context_impl.h"
#include "linear.h"

namespace npid {
namespace {

constexpr int kThreads = 256;

__global__ void linear_rows_kernel(const LinearProblem p, const float* __restrict__ bias) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.n) return;
  float* s = p.scores + i * p.classes;
  for (std::int64_t c = 0; c < p.classes; ++c) s[c] += bias[c];
  linear_row(s, p.classes, p.y[i], p.loss, p.row_loss + i, p.correct + i);
}

__global__ void bias_grad_kernel(const float* __restrict__ g, std::int64_t n, std::int64_t C, float* out) {
  __shared__ float partial[kThreads / 32];
  const std::int64_t c = blockIdx.x;
  float sum = 0.0f;
  for (std::int64_t i = threadIdx.x; i < n; i += kThreads) sum += g[i * C + c];
  sum = cuda::warp_allreduce_sum(sum);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.0f;
    for (int w = 0; w < kThreads / 32; ++w) total += partial[w];
    out[c] = total / static_cast<float>(n);
  }
}

}  // namespace

void linear_forward_backward(Context& ctx, const LinearProblem& p, const float* params, float* grads) {
  if (!ctx.is_cuda()) {
    linear_forward_backward_cpu(p, params, grads, ctx.cpu_threads());
    return;
  }
  if (p.n == 0) return;  // nothing to fit (callers never pass an empty split)
  DeviceGuard guard(ctx.device());
  cublasHandle_t h = cublas_handle(ctx);
  const int n = static_cast<int>(p.n), D = static_cast<int>(p.dim), C = static_cast<int>(p.classes);
  const float one = 1.0f, zero = 0.0f, inv_n = 1.0f / static_cast<float>(p.n);
  // Column-major: S^T (C x n) = W (C x D, row-major) * X^T.
  NPID_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, C, n, D, &one, params, CUDA_R_32F, D, p.x, CUDA_R_32F,
                                 D, &zero, p.scores, CUDA_R_32F, C, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  linear_rows_kernel<<<cuda::ceil_div(p.n, kThreads), kThreads, 0, ctx.stream()>>>(p, params + p.classes * p.dim);
  NPID_CHECK_LAUNCH(ctx, "linear_rows_kernel");
  // dW^T (D x C) = X^T (D x n) * G (n x C) / n.
  NPID_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_T, D, C, n, &inv_n, p.x, CUDA_R_32F, D, p.scores,
                                 CUDA_R_32F, C, &zero, grads, CUDA_R_32F, D, CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT));
  bias_grad_kernel<<<static_cast<unsigned>(p.classes), kThreads, 0, ctx.stream()>>>(p.scores, p.n, p.classes,
                                                                                     grads + p.classes * p.dim);
  NPID_CHECK_LAUNCH(ctx, "bias_grad_kernel");
}

}  // namespace npid

// kernels/softmax.h -- the full-softmax op family's internal interface: the
// problem as raw pointers, the CUDA launcher (softmax.cu, cuBLAS + fused
// kernels) and the CPU reference (softmax_cpu.cpp), both implementing the
// contract of include/npid/softmax.h.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/bf16.h"
#include "npid/context.h"
#include "npid/softmax.h"

namespace npid {

struct SoftmaxProblem {
  const float* features = nullptr;        // (B, D)
  const std::int64_t* targets = nullptr;  // (B)
  const void* bank = nullptr;             // (N, D), float32 or bf16
  DType bank_dtype = DType::kFloat32;
  std::int64_t batch = 0, dim = 0, bank_size = 0;
  std::int64_t chunk = 0;  // rows of the bank per GEMM (CUDA)
  float temperature = 0.07f;
  float lambda = 0.f;
  SoftmaxMath math = SoftmaxMath::kTF32;
  float* loss = nullptr;  // (1)
  float* grad = nullptr;  // (B, D)
};

// ---- CUDA (kernels/softmax.cu) ----------------------------------------------
std::size_t softmax_cuda_workspace_bytes(std::int64_t batch, std::int64_t dim, std::int64_t chunk,
                                         DType bank_dtype, SoftmaxMath math);
void launch_softmax_forward_backward(Context& ctx, const SoftmaxProblem& p);

// ---- CPU reference (kernels/softmax_cpu.cpp) ----------------------------------
void softmax_forward_backward_cpu(const SoftmaxProblem& p, int threads);

// The math, templated for finite differences in double and for bf16 banks.
// Returns the loss; writes grad (B, D) when grad != nullptr.
template <typename Real, typename BankT>
Real softmax_reference(const Real* features, const std::int64_t* targets, const BankT* bank,
                       std::int64_t batch, std::int64_t dim, std::int64_t bank_size, Real temperature,
                       Real lambda, Real* grad, int threads);

}  // namespace npid

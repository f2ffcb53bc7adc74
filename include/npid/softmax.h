// npid/softmax.h -- the full non-parametric softmax criterion (docs/math.md s.5).
//
//   logits_ik = dot(V[k], f_i) / tau                   k = 0..N-1
//   loss      = (1/B) sum_i [logsumexp_k logits_ik - logits_i,y_i]
//             + (lambda/B) sum_i ||f_i - V[y_i]||^2    (optional proximal term)
//   dL/df_i   = (1/(B tau)) sum_k (softmax_ik - [k == y_i]) V[k] + (2 lambda/B)(f_i - V[y_i])
//
// On CUDA the bank is walked in chunks of C rows: a cuBLAS GEMM forms the
// chunk's logits (B x C), a fused kernel folds them into a running max / sum
// per sample and turns them into weights, and a second GEMM accumulates the
// weighted rows -- the online-softmax scheme of flash attention, so memory is
// O(B x C), never O(B x N), and every bank row is multiplied twice (4BND FLOPs,
// no recomputation). C comes from a workspace budget the caller can set.
//
// Numerics: fp32 storage and accumulation; the GEMMs may use TF32 tensor cores
// (SoftmaxMath::kTF32, the default: ~1e-3 relative error in the logits) or
// exact fp32 (kFP32). The log-sum-exp comes from the GEMM logits, the target
// logit from an exact fp32 dot product, so under TF32 a loss near zero can
// // come out slightly negative (by ~1e-3 / tau; ~4x that under kBF16); use kFP32
// where that matters.
// The bank may be float32 or bfloat16 (widened to fp32 chunk by chunk, or,
// under kBF16, multiplied as stored). The CPU reference computes in fp32 /
// double whatever the math. Deterministic for a given device, shape and budget.
#pragma once

#include <cstddef>
#include <cstdint>

#include "npid/context.h"
#include "npid/tensor.h"

namespace npid {

enum class SoftmaxMath {
  kTF32,  // TF32 tensor-core GEMMs, fp32 accumulate (fast; ~1e-3 relative)
  kFP32,  // plain fp32 GEMMs (exact to fp32 rounding; for checks)
  // bf16 banks only: bf16 tensor-core GEMMs on the rows as stored (no fp32
  // staging copy), the features and the softmax weights rounded to bf16
  // (2^-9 relative), fp32 accumulation; the running sum adds the rounded
  // weights, so the gradient is the exact expectation under them.
  kBF16,
};

struct SoftmaxConfig {
  float temperature = 0.07f;      // tau > 0
  float proximal_lambda = 0.0f;   // lambda >= 0
  SoftmaxMath math = SoftmaxMath::kTF32;
  // Workspace budget: the chunk C is the largest multiple of 128 rows whose
  // buffers (B x C logits, plus a C x D fp32 staging copy for a bf16 bank, or
  // B x C bf16 weights under kBF16) fit in it, capped at N. Smaller budgets
  // mean more, smaller GEMMs.
  std::size_t workspace_bytes = std::size_t(32) << 20;
  // Check target ranges and feature finiteness first (one stream sync on CUDA).
  bool validate_inputs = true;
};

struct SoftmaxInputs {
  TensorView features;  // (B, D) float32
  TensorView targets;   // (B) int64 instance indices in [0, N)
  TensorView bank;      // (N, D) float32 or bfloat16; read only
};

struct SoftmaxOutputs {
  TensorView loss;           // (1) float32
  TensorView grad_features;  // (B, D) float32; may not alias inputs
};

// Rows per chunk for this configuration (what softmax_forward_backward uses).
std::int64_t softmax_chunk_rows(const SoftmaxConfig& config, std::int64_t batch, std::int64_t dim,
                                std::int64_t bank_size, DType bank_dtype);
// Workspace bytes the op takes from ctx.workspace() (0 on the CPU).
std::size_t softmax_workspace_bytes(const Context& ctx, const SoftmaxConfig& config,
                                    std::int64_t batch, std::int64_t dim, std::int64_t bank_size,
                                    DType bank_dtype);

void softmax_forward_backward(Context& ctx, const SoftmaxConfig& config, const SoftmaxInputs& inputs,
                              const SoftmaxOutputs& outputs);

// Owns nothing but the reservation: constructing it sizes the workspace for
// the largest batch, so steady-state steps allocate nothing.
class SoftmaxCriterion {
 public:
  SoftmaxCriterion(Context& ctx, const SoftmaxConfig& config, std::int64_t max_batch,
                   std::int64_t dim, std::int64_t bank_size, DType bank_dtype = DType::kFloat32);
  void forward_backward(const SoftmaxInputs& inputs, const SoftmaxOutputs& outputs);
  const SoftmaxConfig& config() const { return config_; }

 private:
  Context* ctx_;
  SoftmaxConfig config_;
};

}  // namespace npid

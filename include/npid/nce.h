// npid/nce.h -- the NCE criterion with proximal term (docs/math.md s.2-4).
//
// For each sample i and its K+1 bank rows (column 0 the positive y_i, columns
// 1..K negatives):
//   s_ij = dot(V[idx_ij], f_i),  P_ij = exp(s_ij / tau) / Z,  a = K/N + 1e-7
//   loss = -(1/B) sum_i [log(P_i0/(P_i0+a)) + sum_{j>=1} log((K/N)/(P_ij+a))]
//        + (lambda/B) sum_i ||f_i - V[y_i]||^2
// and dLoss/df_i with Z held constant. On CUDA one fused kernel reads every
// gathered row once and produces scores, loss terms and the gradient in that
// single pass; nothing of size B x (K+1) x D is ever materialized.
//
// Z (the normalization constant) is a one-element float32 tensor on the
// context's device, read and written by the op according to ZUpdate. Keeping
// it on the device means a training step needs no host synchronization.
//
// Determinism: for a given device and shape, results are bitwise reproducible
// (fixed reduction order, no atomics).
#pragma once

#include <cstdint>

#include "npid/context.h"
#include "npid/tensor.h"

namespace npid {

enum class ZPolicy {
  kFirstBatch,  // reference: Z = N * mean exp(s/tau) over the first batch, then fixed
  kEma,         // Z <- decay * Z + (1 - decay) * N * batch mean, every step
  kFixed,       // Z given by the user
};

const char* to_string(ZPolicy policy) noexcept;

struct NceConfig {
  std::int64_t num_negatives = 4096;  // K >= 1
  // tau >= 0.015: exp(s / tau), sums of up to 2^20 of them and
  // Z = N mean exp(s / tau) (N < 2^31) must fit in fp32 for unit vectors. Features
  // and bank rows are expected L2-normalized (|s| <= 1); far larger scores
  // overflow exp() as in the reference code.
  float temperature = 0.07f;
  float proximal_lambda = 0.0f;       // lambda >= 0 (paper s.3.4; reference: 0)
  ZPolicy z_policy = ZPolicy::kFirstBatch;
  float z_fixed = 0.0f;               // Z for kFixed (> 0)
  float z_ema_decay = 0.99f;          // decay for kEma, in [0, 1)
  bool exclude_positive = false;      // redraw negatives equal to y_i
  std::uint64_t seed = 0;             // negative-sampling key
  // Check index ranges and feature finiteness before launching (on CUDA this
  // costs one stream synchronization per call). Shapes, dtypes, devices and
  // scalar options are always checked.
  bool validate_inputs = true;
};

// What the low-level op does with Z:
enum class ZUpdate {
  kKeep,           // use z as given (must be > 0)
  kInitFromBatch,  // z = N * mean_{i,j} exp(s_ij/tau) over this batch, then use it
  kEmaFromBatch,   // use z, then z = decay*z + (1-decay) * N * batch mean
};

struct NceInputs {
  TensorView features;   // (B, D) float32, 1 <= B <= 65535; L2-normalized rows (not enforced)
  TensorView targets;    // (B) int64 instance indices y_i in [0, N)
  TensorView bank;       // (N, D) float32 or bfloat16 memory bank; read only
  // Optional (B, K) int64 explicit negatives in [0, N) (tests, replay). When
  // empty, negatives are drawn in-kernel (see npid/sampler.h).
  TensorView negatives;
};

struct NceOutputs {
  TensorView loss;           // (1) float32, written
  TensorView grad_features;  // (B, D) float32, written
  // Every output (and z) must be disjoint from every input and each other.
  TensorView probs;          // optional (B, K+1) float32: P_ij
  TensorView indices;        // optional (B, K+1) int64: idx_ij actually used
};

// The stateless op. `step` keys the in-kernel negative sampling; `z` is the
// (1) float32 Z state described above. Inputs are never modified (the bank
// update is a separate op, bank_update, to run after every read of the step).
// step_device (optional): (1) int64 on ctx's CUDA device; the sampling step
// is read from it when the kernel runs, overriding `step`, so a captured CUDA
// graph can replay with new steps. Not allowed on the CPU.
void nce_forward_backward(Context& ctx, const NceConfig& config,
                          const NceInputs& inputs, std::uint64_t step,
                          ZUpdate z_update, const TensorView& z,
                          const NceOutputs& outputs, const TensorView& step_device = {});

// Workspace the op needs for a batch of B samples of dimension D (reserved
// in ctx.workspace() by NceCriterion's constructor).
std::size_t nce_workspace_bytes(const Context& ctx, std::int64_t batch,
                                std::int64_t dim, std::int64_t num_negatives);

// The stateful criterion: owns Z and applies the ZPolicy across steps.
class NceCriterion {
 public:
  // Reserves the workspace for batches up to max_batch, so steady-state
  // steps allocate nothing.
  NceCriterion(Context& ctx, const NceConfig& config, std::int64_t max_batch,
               std::int64_t dim);

  void forward_backward(const NceInputs& inputs, std::uint64_t step,
                        const NceOutputs& outputs, const TensorView& step_device = {});

  const NceConfig& config() const { return config_; }
  // Current Z (synchronizes on CUDA); 0 until the first step under
  // kFirstBatch / kEma.
  float z() const;
  bool z_initialized() const { return z_ready_; }
  // Restores Z (e.g. from a checkpoint); marks it initialized.
  void set_z(float z);
  // Forgets Z: under kFirstBatch / kEma the next step initializes it from its
  // batch again; under kFixed it is z_fixed again.
  void reset_z();
  TensorView z_view() const { return z_.view(); }

 private:
  Context* ctx_;
  NceConfig config_;
  Tensor z_;
  bool z_ready_ = false;
};

}  // namespace npid

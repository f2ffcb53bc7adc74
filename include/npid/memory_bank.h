// npid/memory_bank.h -- the memory bank: one L2-normalized D-vector per instance.
//
// The bank is an (N, D) row-major tensor on the context's device, stored as
// float32 or bfloat16 (half the memory and half the bytes every step
// gathers). All arithmetic is fp32; a bf16 value is rounded once, when stored.
// Math: docs/math.md s.1.
#pragma once

#include <cstdint>

#include "npid/context.h"
#include "npid/tensor.h"

namespace npid {

enum class BankInit {
  // Reference code: every element uniform in [-s, s], s = 1/sqrt(D/3); rows
  // have norm close to 1 but are not normalized.
  kUniform,
  // The paper: random unit vectors (normal draws, then normalized).
  kUnit,
};

const char* to_string(BankInit init) noexcept;

// Fills bank (N, D), float32 or bfloat16, from a counter-based generator keyed
// by `seed`: the random bits depend only on (seed, row, column), never on the
// device or launch shape. kUniform values are then identical everywhere; kUnit
// values pass through logf/cosf/sinf/sqrtf, whose last bits may differ between
// the CPU and the GPU (so a bf16 value may differ by one rounding step).
void bank_initialize(Context& ctx, const TensorView& bank, BankInit init,
                     std::uint64_t seed);

// Momentum update, once per step, after every read of the step:
//   V[y_i] <- normalize(m * V[y_i] + (1 - m) * f_i)
// using the row as it was before this call. When an index repeats within the
// batch, the last occurrence in batch order wins (deterministic).
//   bank     (N, D) float32 or bfloat16, read and written; a bf16 row is
//            rounded once, after renormalization
//   features (B, D) float32
//   targets  (B)    int64 in [0, N)
//   momentum in [0, 1]
// validate: check targets' range and features' finiteness first (on CUDA this
// synchronizes the stream); with bad input an npid::Error is thrown and the
// bank is untouched. Shapes, dtypes and devices are always checked.
void bank_update(Context& ctx, const TensorView& bank,
                 const TensorView& features, const TensorView& targets,
                 float momentum, bool validate = true);

// Owning convenience: the bank tensor plus its initialization.
class MemoryBank {
 public:
  MemoryBank(Context& ctx, std::int64_t size, std::int64_t dim,
             BankInit init = BankInit::kUniform, std::uint64_t seed = 0,
             DType storage = DType::kFloat32);

  std::int64_t size() const { return storage_.shape()[0]; }
  std::int64_t dim() const { return storage_.shape()[1]; }
  DType storage() const { return storage_.dtype(); }
  TensorView view() const { return storage_.view(); }
  void update(const TensorView& features, const TensorView& targets,
              float momentum, bool validate = true);

 private:
  Context* ctx_;
  Tensor storage_;
};

}  // namespace npid

// kernels/bank.h -- memory-bank op family (internal): initialization and the
// momentum update. CUDA launchers in bank.cu, CPU references in bank_cpu.cpp,
// same contracts as include/npid/memory_bank.h.
#pragma once

#include <cstdint>

#include "npid/context.h"
#include "npid/memory_bank.h"

namespace npid {

// Banks are float32 or bf16 (bank_dtype); arithmetic is fp32, and a bf16 row
// is rounded once, after renormalization.
struct BankUpdateProblem {
  void* bank = nullptr;                  // (N, D)
  DType bank_dtype = DType::kFloat32;
  const float* features = nullptr;       // (B, D)
  const std::int64_t* targets = nullptr;  // (B)
  std::int64_t batch = 0, dim = 0, bank_size = 0;
  float momentum = 0.5f;
};

void launch_bank_initialize(Context& ctx, void* bank, DType dtype, std::int64_t rows,
                            std::int64_t dim, BankInit init, std::uint64_t seed);
void launch_bank_update(Context& ctx, const BankUpdateProblem& p);

void bank_initialize_cpu(void* bank, DType dtype, std::int64_t rows, std::int64_t dim,
                         BankInit init, std::uint64_t seed, int threads);
void bank_update_cpu(const BankUpdateProblem& p);

}  // namespace npid

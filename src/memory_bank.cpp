// Checked entry points of the memory-bank op family.
#include "npid/memory_bank.h"

#include <cmath>

#include "bank.h"
#include "common/limits.h"
#include "core/args.h"
#include "npid/error.h"

namespace npid {

const char* to_string(BankInit init) noexcept {
  return init == BankInit::kUniform ? "uniform" : "unit";
}

namespace {
void check_bank(const TensorView& bank, const Context& ctx, const char* op) {
  require_present(bank, op, "bank");
  require_bank_dtype(bank, op, "bank");
  require_on(bank, ctx, op, "bank");
  require_rank(bank, 2, op, "bank");
  NPID_CHECK_ARG(bank.shape[1] >= 1 && bank.shape[1] <= kMaxDim, op, "bank",
                 "expected rows of width D in [1, " << kMaxDim << "], got shape "
                                                     << bank.shape.str());
}
}  // namespace

void bank_initialize(Context& ctx, const TensorView& bank, BankInit init, std::uint64_t seed) {
  constexpr const char* op = "bank_initialize";
  check_bank(bank, ctx, op);
  NPID_CHECK_ARG(init == BankInit::kUniform || init == BankInit::kUnit, op, "init",
                 "expected kUniform or kUnit, got " << static_cast<int>(init));
  if (ctx.is_cuda()) {
    launch_bank_initialize(ctx, bank.data, bank.dtype, bank.shape[0], bank.shape[1], init, seed);
  } else {
    bank_initialize_cpu(bank.data, bank.dtype, bank.shape[0], bank.shape[1], init, seed,
                        ctx.cpu_threads());
  }
}

void bank_update(Context& ctx, const TensorView& bank, const TensorView& features,
                 const TensorView& targets, float momentum, bool validate) {
  constexpr const char* op = "bank_update";
  check_bank(bank, ctx, op);
  const std::int64_t N = bank.shape[0], D = bank.shape[1];
  require_present(features, op, "features");
  require_rank(features, 2, op, "features");
  const std::int64_t B = features.shape[0];
  NPID_CHECK_ARG(features.shape[1] == D, op, "features",
                 "expected rows D = " << D << " wide (the bank's width), got shape "
                                      << features.shape.str());
  require_tensor(features, DType::kFloat32, {B, D}, ctx, op, "features");
  require_tensor(targets, DType::kInt64, {B}, ctx, op, "targets");
  NPID_CHECK_ARG(std::isfinite(momentum) && momentum >= 0.f && momentum <= 1.f, op, "momentum",
                 "expected m in [0, 1], got " << momentum);
  require_no_overlap(bank, features, op, "bank", "features");
  require_no_overlap(bank, targets, op, "bank", "targets");
  if (validate) {
    require_indices_below(ctx, targets, N, op, "targets");
    require_finite(ctx, features, op, "features");
  }
  BankUpdateProblem p;
  p.bank = bank.data;
  p.bank_dtype = bank.dtype;
  p.features = static_cast<const float*>(features.data);
  p.targets = static_cast<const std::int64_t*>(targets.data);
  p.batch = B;
  p.dim = D;
  p.bank_size = N;
  p.momentum = momentum;
  if (ctx.is_cuda()) {
    launch_bank_update(ctx, p);
  } else {
    bank_update_cpu(p);
  }
}

MemoryBank::MemoryBank(Context& ctx, std::int64_t size, std::int64_t dim, BankInit init,
                       std::uint64_t seed, DType storage)
    : ctx_(&ctx) {
  NPID_CHECK_ARG(storage == DType::kFloat32 || storage == DType::kBFloat16, "MemoryBank", "storage",
                 "expected float32 or bfloat16, got " << to_string(storage));
  NPID_CHECK_ARG(size >= 1, "MemoryBank", "size", "expected N >= 1, got " << size);
  NPID_CHECK_ARG(dim >= 1 && dim <= kMaxDim, "MemoryBank", "dim",
                 "expected D in [1, " << kMaxDim << "], got " << dim);
  storage_ = Tensor({size, dim}, storage, ctx.device());
  bank_initialize(ctx, storage_.view(), init, seed);
}

void MemoryBank::update(const TensorView& features, const TensorView& targets, float momentum,
                        bool validate) {
  bank_update(*ctx_, storage_.view(), features, targets, momentum, validate);
}

}  // namespace npid

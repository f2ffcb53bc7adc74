// Checked entry point of NCE index sampling.
#include "npid/sampler.h"

#include "core/args.h"
#include "npid/error.h"
#include "sampler.h"

namespace npid {

void sample_nce_indices(Context& ctx, const TensorView& targets, std::int64_t bank_size,
                        std::int64_t num_negatives, std::uint64_t seed, std::uint64_t step,
                        bool exclude_positive, const TensorView& indices) {
  constexpr const char* op = "sample_nce_indices";
  NPID_CHECK_ARG(bank_size >= (exclude_positive ? 2 : 1), op, "bank_size",
                 "expected N >= " << (exclude_positive ? 2 : 1) << ", got " << bank_size);
  NPID_CHECK_ARG(num_negatives >= 1, op, "num_negatives", "expected K >= 1, got " << num_negatives);
  require_present(targets, op, "targets");
  require_rank(targets, 1, op, "targets");
  const std::int64_t B = targets.shape[0];
  require_tensor(targets, DType::kInt64, {B}, ctx, op, "targets");
  require_tensor(indices, DType::kInt64, {B, num_negatives + 1}, ctx, op, "indices");
  require_no_overlap(indices, targets, op, "indices", "targets");
  require_indices_below(ctx, targets, bank_size, op, "targets");

  SampleProblem p;
  p.targets = static_cast<const std::int64_t*>(targets.data);
  p.indices = static_cast<std::int64_t*>(indices.data);
  p.batch = B;
  p.bank_size = bank_size;
  p.num_negatives = num_negatives;
  p.seed = seed;
  p.step = step;
  p.exclude_positive = exclude_positive;
  if (ctx.is_cuda()) {
    launch_sample_nce_indices(ctx, p);
  } else {
    sample_nce_indices_cpu(p, ctx.cpu_threads());
  }
}

}  // namespace npid

// Checked entry points of the full-softmax op family.
#include "npid/softmax.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "common/limits.h"
#include "core/args.h"
#include "npid/error.h"
#include "softmax.h"

namespace npid {

namespace {
constexpr const char* kOp = "softmax_forward_backward";
constexpr std::int64_t kChunkQuantum = 128;

void check_config(const SoftmaxConfig& c, const char* op) {
  NPID_CHECK_ARG(std::isfinite(c.temperature) && c.temperature > 0.f, op, "temperature",
                 "expected a finite tau > 0, got " << c.temperature);
  NPID_CHECK_ARG(std::isfinite(c.proximal_lambda) && c.proximal_lambda >= 0.f, op, "proximal_lambda",
                 "expected a finite lambda >= 0, got " << c.proximal_lambda);
  NPID_CHECK_ARG(c.math == SoftmaxMath::kTF32 || c.math == SoftmaxMath::kFP32 || c.math == SoftmaxMath::kBF16, op,
                 "math", "expected kTF32, kFP32 or kBF16, got " << static_cast<int>(c.math));
  NPID_CHECK_ARG(c.workspace_bytes > 0, op, "workspace_bytes", "expected > 0, got 0");
}

void check_math_for_bank(const SoftmaxConfig& c, DType bank_dtype, const char* op) {
  NPID_CHECK_ARG(c.math != SoftmaxMath::kBF16 || bank_dtype == DType::kBFloat16, op, "math",
                 "expected kBF16 only with a bfloat16 bank, got a " << to_string(bank_dtype) << " bank");
}
}  // namespace

std::int64_t softmax_chunk_rows(const SoftmaxConfig& config, std::int64_t batch, std::int64_t dim,
                                std::int64_t bank_size, DType bank_dtype) {
  const auto b = static_cast<std::size_t>(std::max<std::int64_t>(batch, 1));
  const auto d = static_cast<std::size_t>(std::max<std::int64_t>(dim, 1));
  const std::size_t fixed = softmax_cuda_workspace_bytes(batch, dim, 0, bank_dtype, config.math);
  // Per bank row of a chunk: a logit column (fp32) and, for a bf16 bank, either
  // a bf16 weight column (kBF16) or an fp32 staging row (the others).
  const std::size_t per_row =
      b * sizeof(float) + (config.math == SoftmaxMath::kBF16 ? b * sizeof(bf16)
                           : bank_dtype == DType::kBFloat16 ? d * sizeof(float)
                                                            : 0);
  const std::size_t room = config.workspace_bytes > fixed ? config.workspace_bytes - fixed : 0;
  std::int64_t rows = static_cast<std::int64_t>(room / per_row) / kChunkQuantum * kChunkQuantum;
  // The estimate ignores the 256-byte padding of the chunk-sized buffers: step
  // back while the real layout does not fit.
  while (rows > kChunkQuantum &&
         softmax_cuda_workspace_bytes(batch, dim, rows, bank_dtype, config.math) > config.workspace_bytes)
    rows -= kChunkQuantum;
  rows = std::max(rows, kChunkQuantum);  // the floor: budgets below it are exceeded
  return std::max<std::int64_t>(1, std::min(rows, bank_size));
}

std::size_t softmax_workspace_bytes(const Context& ctx, const SoftmaxConfig& config, std::int64_t batch,
                                    std::int64_t dim, std::int64_t bank_size, DType bank_dtype) {
  if (!ctx.is_cuda()) return 0;
  return softmax_cuda_workspace_bytes(batch, dim,
                                      softmax_chunk_rows(config, batch, dim, bank_size, bank_dtype),
                                      bank_dtype, config.math);
}

void softmax_forward_backward(Context& ctx, const SoftmaxConfig& config, const SoftmaxInputs& in,
                              const SoftmaxOutputs& out) {
  check_config(config, kOp);
  // B is a grid dimension of one block per sample: far beyond any batch.
  const auto [B, D, N] = require_features_and_bank(ctx, in.features, in.bank, 2147483647, kOp);
  require_tensor(in.targets, DType::kInt64, {B}, ctx, kOp, "targets");
  require_tensor(out.loss, DType::kFloat32, {1}, ctx, kOp, "loss");
  require_tensor(out.grad_features, DType::kFloat32, {B, D}, ctx, kOp, "grad_features");
  for (const auto& o : {std::make_pair(&out.grad_features, "grad_features"), std::make_pair(&out.loss, "loss")}) {
    require_no_overlap(*o.first, in.features, kOp, o.second, "features");
    require_no_overlap(*o.first, in.bank, kOp, o.second, "bank");
    require_no_overlap(*o.first, in.targets, kOp, o.second, "targets");
  }
  require_no_overlap(out.grad_features, out.loss, kOp, "grad_features", "loss");
  check_math_for_bank(config, in.bank.dtype, kOp);
  if (config.validate_inputs) {
    require_indices_below(ctx, in.targets, N, kOp, "targets");
    require_finite(ctx, in.features, kOp, "features");
  }

  SoftmaxProblem p;
  p.features = static_cast<const float*>(in.features.data);
  p.targets = static_cast<const std::int64_t*>(in.targets.data);
  p.bank = in.bank.data;
  p.bank_dtype = in.bank.dtype;
  p.batch = B;
  p.dim = D;
  p.bank_size = N;
  p.chunk = softmax_chunk_rows(config, B, D, N, in.bank.dtype);
  p.temperature = config.temperature;
  p.lambda = config.proximal_lambda;
  p.math = config.math;
  p.loss = static_cast<float*>(out.loss.data);
  p.grad = static_cast<float*>(out.grad_features.data);
  if (ctx.is_cuda()) {
    launch_softmax_forward_backward(ctx, p);
  } else {
    softmax_forward_backward_cpu(p, ctx.cpu_threads());
  }
}

SoftmaxCriterion::SoftmaxCriterion(Context& ctx, const SoftmaxConfig& config, std::int64_t max_batch,
                                   std::int64_t dim, std::int64_t bank_size, DType bank_dtype)
    : ctx_(&ctx), config_(config) {
  check_config(config, "SoftmaxCriterion");
  NPID_CHECK_ARG(max_batch >= 1, "SoftmaxCriterion", "max_batch", "expected >= 1, got " << max_batch);
  NPID_CHECK_ARG(dim >= 1 && dim <= kMaxDim, "SoftmaxCriterion", "dim",
                 "expected D in [1, " << kMaxDim << "], got " << dim);
  NPID_CHECK_ARG(bank_size >= 1, "SoftmaxCriterion", "bank_size", "expected N >= 1, got " << bank_size);
  check_math_for_bank(config, bank_dtype, "SoftmaxCriterion");
  ctx.workspace().reserve(softmax_workspace_bytes(ctx, config, max_batch, dim, bank_size, bank_dtype),
                          ctx.stream());
}

void SoftmaxCriterion::forward_backward(const SoftmaxInputs& inputs, const SoftmaxOutputs& outputs) {
  softmax_forward_backward(*ctx_, config_, inputs, outputs);
}

}  // namespace npid

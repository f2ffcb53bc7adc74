// Checked entry points of the NCE op family: validate, then run the CUDA
// launcher (kernels/nce.cu) or the CPU reference (kernels/nce_cpu.cpp).
#include "npid/nce.h"

#include <cmath>
#include <iterator>
#include <utility>

#include "core/args.h"
#include "nce.h"
#include "npid/error.h"

namespace npid {

const char* to_string(ZPolicy policy) noexcept {
  switch (policy) {
    case ZPolicy::kFirstBatch: return "first_batch";
    case ZPolicy::kEma: return "ema";
    case ZPolicy::kFixed: return "fixed";
  }
  return "?";
}

namespace {

constexpr const char* kOp = "nce_forward_backward";

void check_config(const NceConfig& c, const char* op) {
  NPID_CHECK_ARG(c.num_negatives >= 1, op, "num_negatives",
                 "expected K >= 1, got " << c.num_negatives);
  NPID_CHECK_ARG(std::isfinite(c.temperature) && c.temperature >= kNceMinTemperature, op, "temperature",
                 "expected a finite tau >= " << kNceMinTemperature
                                             << " (exp(1/tau) sums and Z = N mean exp(s/tau) must fit in fp32), got " << c.temperature);
  NPID_CHECK_ARG(std::isfinite(c.proximal_lambda) && c.proximal_lambda >= 0.f, op,
                 "proximal_lambda", "expected a finite lambda >= 0, got " << c.proximal_lambda);
  NPID_CHECK_ARG(std::isfinite(c.z_ema_decay) && c.z_ema_decay >= 0.f && c.z_ema_decay < 1.f, op,
                 "z_ema_decay", "expected a decay in [0, 1), got " << c.z_ema_decay);
  if (c.z_policy == ZPolicy::kFixed)
    NPID_CHECK_ARG(std::isfinite(c.z_fixed) && c.z_fixed > 0.f, op, "z_fixed",
                   "expected a finite Z > 0 for the fixed Z policy, got " << c.z_fixed);
}

float read_scalar(Context& ctx, const TensorView& v) {
  float value = 0.f;
  copy(ctx, view(&value, {1}), v);
  return value;
}

}  // namespace

std::size_t nce_workspace_bytes(const Context& ctx, std::int64_t batch, std::int64_t dim,
                                std::int64_t num_negatives) {
  return ctx.is_cuda() ? nce_cuda_workspace_bytes(batch, dim, num_negatives) : 0;
}

void nce_forward_backward(Context& ctx, const NceConfig& config, const NceInputs& in,
                          std::uint64_t step, ZUpdate z_update, const TensorView& z,
                          const NceOutputs& out, const TensorView& step_device) {
  check_config(config, kOp);
  const auto [B, D, N] = require_features_and_bank(ctx, in.features, in.bank, kNceMaxBatch, kOp);
  if (config.exclude_positive)
    NPID_CHECK_ARG(N >= 2, kOp, "bank",
                   "expected N >= 2 rows when exclude_positive is set, got " << N);
  const std::int64_t K = config.num_negatives;
  require_tensor(in.targets, DType::kInt64, {B}, ctx, kOp, "targets");
  if (!in.negatives.empty()) require_tensor(in.negatives, DType::kInt64, {B, K}, ctx, kOp, "negatives");
  require_tensor(z, DType::kFloat32, {1}, ctx, kOp, "z");
  require_tensor(out.loss, DType::kFloat32, {1}, ctx, kOp, "loss");
  require_tensor(out.grad_features, DType::kFloat32, {B, D}, ctx, kOp, "grad_features");
  if (!out.probs.empty()) require_tensor(out.probs, DType::kFloat32, {B, K + 1}, ctx, kOp, "probs");
  if (!out.indices.empty())
    require_tensor(out.indices, DType::kInt64, {B, K + 1}, ctx, kOp, "indices");
  // Everything written (the outputs and z) must be disjoint from every input
  // and from each other.
  const std::pair<const TensorView*, const char*> written[] = {
      {&out.grad_features, "grad_features"}, {&out.loss, "loss"}, {&out.probs, "probs"},
      {&out.indices, "indices"}, {&z, "z"}};
  const std::pair<const TensorView*, const char*> read[] = {
      {&in.features, "features"}, {&in.bank, "bank"}, {&in.targets, "targets"}, {&in.negatives, "negatives"}};
  for (std::size_t a = 0; a < std::size(written); ++a) {
    for (const auto& r : read) require_no_overlap(*written[a].first, *r.first, kOp, written[a].second, r.second);
    for (std::size_t b = a + 1; b < std::size(written); ++b)
      require_no_overlap(*written[a].first, *written[b].first, kOp, written[a].second, written[b].second);
  }

  if (config.validate_inputs) {
    require_indices_below(ctx, in.targets, N, kOp, "targets");
    if (!in.negatives.empty()) require_indices_below(ctx, in.negatives, N, kOp, "negatives");
    require_finite(ctx, in.features, kOp, "features");
    if (z_update != ZUpdate::kInitFromBatch) {
      const float zv = read_scalar(ctx, z);
      NPID_CHECK_ARG(std::isfinite(zv) && zv > 0.f, kOp, "z",
                     "expected a finite Z > 0 (or ZUpdate::kInitFromBatch), got " << zv);
    }
  }

  NceProblem p;
  p.features = static_cast<const float*>(in.features.data);
  p.targets = static_cast<const std::int64_t*>(in.targets.data);
  p.bank = in.bank.data;
  p.bank_dtype = in.bank.dtype;
  p.negatives = static_cast<const std::int64_t*>(in.negatives.data);
  p.batch = B;
  p.dim = D;
  p.bank_size = N;
  p.num_negatives = K;
  p.temperature = config.temperature;
  p.lambda = config.proximal_lambda;
  p.z_decay = config.z_ema_decay;
  p.exclude_positive = config.exclude_positive;
  p.seed = config.seed;
  p.step = step;
  if (!step_device.empty()) {
    NPID_CHECK_ARG(ctx.is_cuda(), kOp, "step_device", "expected a CUDA context, got " << ctx.device().str());
    require_tensor(step_device, DType::kInt64, {1}, ctx, kOp, "step_device");
    p.step_device = static_cast<const std::uint64_t*>(step_device.data);
  }
  p.z = static_cast<float*>(z.data);
  p.loss = static_cast<float*>(out.loss.data);
  p.grad = static_cast<float*>(out.grad_features.data);
  p.probs = static_cast<float*>(out.probs.data);
  p.indices = static_cast<std::int64_t*>(out.indices.data);
  if (ctx.is_cuda()) {
    launch_nce_forward_backward(ctx, p, z_update);
  } else {
    nce_forward_backward_cpu(p, z_update, ctx.cpu_threads());
  }
}

NceCriterion::NceCriterion(Context& ctx, const NceConfig& config, std::int64_t max_batch,
                           std::int64_t dim)
    : ctx_(&ctx), config_(config), z_({1}, DType::kFloat32, ctx.device()) {
  check_config(config, "NceCriterion");
  NPID_CHECK_ARG(max_batch >= 1, "NceCriterion", "max_batch", "expected >= 1, got " << max_batch);
  NPID_CHECK_ARG(dim >= 1 && dim <= kMaxDim, "NceCriterion", "dim",
                 "expected D in [1, " << kMaxDim << "], got " << dim);
  ctx.workspace().reserve(nce_workspace_bytes(ctx, max_batch, dim, config.num_negatives),
                          ctx.stream());
  fill_zero(ctx, z_.view());
  if (config.z_policy == ZPolicy::kFixed) set_z(config.z_fixed);
}

void NceCriterion::forward_backward(const NceInputs& inputs, std::uint64_t step,
                                    const NceOutputs& outputs, const TensorView& step_device) {
  ZUpdate update = ZUpdate::kKeep;
  if (config_.z_policy != ZPolicy::kFixed && !z_ready_) {
    update = ZUpdate::kInitFromBatch;
  } else if (config_.z_policy == ZPolicy::kEma) {
    update = ZUpdate::kEmaFromBatch;
  }
  nce_forward_backward(*ctx_, config_, inputs, step, update, z_.view(), outputs, step_device);
  z_ready_ = true;
}

void NceCriterion::reset_z() {
  fill_zero(*ctx_, z_.view());
  z_ready_ = false;
  if (config_.z_policy == ZPolicy::kFixed) set_z(config_.z_fixed);
}

float NceCriterion::z() const { return read_scalar(*ctx_, z_.view()); }

void NceCriterion::set_z(float z) {
  NPID_CHECK_ARG(std::isfinite(z) && z > 0.f, "NceCriterion::set_z", "z",
                 "expected a finite Z > 0, got " << z);
  copy(*ctx_, z_.view(), view(&z, {1}));
  z_ready_ = true;
}

}  // namespace npid

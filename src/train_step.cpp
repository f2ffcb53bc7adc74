// npid::TrainStep (contract in npid/train.h).
#include "npid/train.h"

#include <cmath>
#include <limits>

#include "augment.h"
#include "core/args.h"
#include "npid/error.h"

namespace npid {

const char* to_string(CriterionKind kind) noexcept { return kind == CriterionKind::kNce ? "nce" : "softmax"; }

struct TrainStep::Impl {
  Context* ctx;
  TrainStepConfig cfg;
  std::int64_t N;
  ResNet18 net;
  MemoryBank bank;
  Sgd sgd;
  std::unique_ptr<NceCriterion> nce;
  std::unique_ptr<SoftmaxCriterion> softmax;
  Tensor images, embeddings, grad_embeddings, loss;
  std::int64_t steps = 0;

  Impl(Context& c, const TrainStepConfig& config, std::int64_t n)
      : ctx(&c),
        cfg(config),
        N(n),
        net(c, config.model, config.batch_size, config.seed),
        bank(c, n, config.model.embedding_dim, config.bank_init, config.seed ^ 0xba4cULL, config.bank_dtype),
        sgd(c, config.sgd, net.parameter_buffer().numel()) {
    const std::int64_t B = cfg.batch_size, D = cfg.model.embedding_dim, S = cfg.model.image_size;
    if (cfg.criterion == CriterionKind::kNce) {
      NceConfig nc;
      nc.num_negatives = cfg.num_negatives;
      nc.temperature = cfg.temperature;
      nc.proximal_lambda = cfg.proximal_lambda;
      nc.z_policy = cfg.z_policy;
      nc.seed = cfg.seed ^ 0x9e3779b97f4a7c15ULL;
      nc.validate_inputs = false;  // indices checked here when asked; features come from the net
      nce = std::make_unique<NceCriterion>(c, nc, B, D);
    } else {
      SoftmaxConfig sc;
      sc.temperature = cfg.temperature;
      sc.proximal_lambda = cfg.proximal_lambda;
      sc.validate_inputs = false;
      softmax = std::make_unique<SoftmaxCriterion>(c, sc, B, D, n, cfg.bank_dtype);
    }
    images = Tensor({B, S, S, 3}, DType::kFloat32, c.device());
    embeddings = Tensor({B, D}, DType::kFloat32, c.device());
    grad_embeddings = Tensor({B, D}, DType::kFloat32, c.device());
    loss = Tensor({1}, DType::kFloat32, c.device());
  }

  StepStats run(const TensorView& imgs, const TensorView& indices, float lr, bool fetch) {
    constexpr const char* op = "TrainStep::step";
    const std::int64_t B = indices.shape[0], D = cfg.model.embedding_dim;
    const TensorView emb(embeddings.data(), DType::kFloat32, {B, D}, ctx->device());
    const TensorView grad(grad_embeddings.data(), DType::kFloat32, {B, D}, ctx->device());
    if (cfg.validate_indices) require_indices_below(*ctx, indices, N, op, "indices");
    net.forward(imgs, emb, true);
    if (nce) {
      nce->forward_backward({emb, indices, bank.view(), {}}, static_cast<std::uint64_t>(steps), {loss, grad, {}, {}});
    } else {
      softmax->forward_backward({emb, indices, bank.view()}, {loss, grad});
    }
    net.backward(grad);
    sgd.step(net.parameter_buffer(), net.gradient_buffer(), lr);
    bank.update(emb, indices, cfg.bank_momentum, false);
    ++steps;
    StepStats st;
    st.loss = std::numeric_limits<float>::quiet_NaN();
    if (fetch) copy(*ctx, view(&st.loss, {1}), loss);
    st.z = nce && nce->z_initialized() && fetch ? nce->z() : 0.0f;
    return st;
  }

  void check_indices(const TensorView& indices, const char* op) const {
    require_present(indices, op, "indices");
    require_rank(indices, 1, op, "indices");
    const std::int64_t B = indices.shape[0];
    NPID_CHECK_ARG(B >= 1 && B <= cfg.batch_size, op, "indices",
                   "expected 1 <= B <= batch_size " << cfg.batch_size << ", got " << B);
    require_tensor(indices, DType::kInt64, {B}, *ctx, op, "indices");
  }
};

TrainStep::TrainStep(Context& ctx, const TrainStepConfig& config, std::int64_t num_instances) {
  constexpr const char* op = "TrainStep";
  NPID_CHECK_ARG(config.batch_size >= 1 && config.batch_size <= 65535, op, "config.batch_size",
                 "expected 1..65535, got " << config.batch_size);
  NPID_CHECK_ARG(num_instances >= 2 && num_instances < (std::int64_t(1) << 31), op, "num_instances",
                 "expected 2 <= N < 2^31, got " << num_instances);
  NPID_CHECK_ARG(config.bank_momentum >= 0.0f && config.bank_momentum < 1.0f, op, "config.bank_momentum",
                 "expected 0 <= m < 1, got " << config.bank_momentum);
  NPID_CHECK_ARG(config.augment.out_height == config.model.image_size &&
                     config.augment.out_width == config.model.image_size,
                 op, "config.augment",
                 "expected the network's input size " << config.model.image_size << " x " << config.model.image_size
                                                      << ", got " << config.augment.out_height << " x "
                                                      << config.augment.out_width);
  impl_ = std::make_unique<Impl>(ctx, config, num_instances);
}

TrainStep::~TrainStep() = default;

StepStats TrainStep::step(const ImageSet& resident, const TensorView& indices, std::int64_t epoch, float lr,
                          bool fetch_loss) {
  constexpr const char* op = "TrainStep::step";
  Impl& m = *impl_;
  m.check_indices(indices, op);
  NPID_CHECK_ARG(resident.size() == m.N, op, "resident",
                 "expected the N = " << m.N << " training images, got " << resident.size());
  NPID_CHECK_ARG(resident.device() == m.ctx->device(), op, "resident",
                 "expected an image set on " << m.ctx->device().str() << ", got one on " << resident.device().str());
  NPID_CHECK_ARG(std::isfinite(lr) && lr >= 0.0f, op, "lr", "expected a finite lr >= 0, got " << lr);
  const std::int64_t B = indices.shape[0], S = m.cfg.model.image_size;
  if (m.cfg.validate_indices) require_indices_below(*m.ctx, indices, m.N, op, "indices");
  AugmentProblem p;
  p.config = m.cfg.augment;
  p.pixels = resident.pixels.data_as<const std::uint8_t>();
  p.descs = resident.descs.data_as<const std::int64_t>();
  p.sources = static_cast<const std::int64_t*>(indices.data);
  p.instances = p.sources;
  p.batch = B;
  p.seed = m.cfg.seed;
  p.epoch = static_cast<std::uint64_t>(epoch);
  p.out = m.images.data_as<float>();
  if (m.ctx->is_cuda()) {
    launch_augment(*m.ctx, p);
  } else {
    augment_cpu(p, m.ctx->cpu_threads());
  }
  const TensorView imgs(m.images.data(), DType::kFloat32, {B, S, S, 3}, m.ctx->device());
  return m.run(imgs, indices, lr, fetch_loss);
}

StepStats TrainStep::step_images(const TensorView& images, const TensorView& indices, float lr, bool fetch_loss) {
  constexpr const char* op = "TrainStep::step_images";
  Impl& m = *impl_;
  m.check_indices(indices, op);
  const std::int64_t B = indices.shape[0], S = m.cfg.model.image_size;
  require_tensor(images, DType::kFloat32, {B, S, S, 3}, *m.ctx, op, "images");
  NPID_CHECK_ARG(std::isfinite(lr) && lr >= 0.0f, op, "lr", "expected a finite lr >= 0, got " << lr);
  return m.run(images, indices, lr, fetch_loss);
}

const TrainStepConfig& TrainStep::config() const { return impl_->cfg; }
std::int64_t TrainStep::steps_done() const { return impl_->steps; }
ResNet18& TrainStep::net() { return impl_->net; }
MemoryBank& TrainStep::bank() { return impl_->bank; }
Sgd& TrainStep::optimizer() { return impl_->sgd; }
float TrainStep::z() const { return impl_->nce && impl_->nce->z_initialized() ? impl_->nce->z() : 0.0f; }
bool TrainStep::z_initialized() const { return impl_->nce && impl_->nce->z_initialized(); }

void TrainStep::restore(std::int64_t steps_done, float z, bool z_initialized, bool sgd_started) {
  NPID_CHECK_ARG(steps_done >= 0, "TrainStep::restore", "steps_done", "expected >= 0, got " << steps_done);
  impl_->steps = steps_done;
  if (impl_->nce && z_initialized) impl_->nce->set_z(z);
  impl_->sgd.set_started(sgd_started);
}

}  // namespace npid

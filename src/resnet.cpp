// ResNet-18's public face: argument checks, the parameter / gradient /
// statistics buffers on the context's device, and dispatch to a runner
// (src/resnet_net.h): CpuRunner<float> or CudaRunner.
#include "npid/resnet.h"

#include <cmath>

#include "core/args.h"
#include "npid/error.h"
#include "resnet_layers.h"
#include "resnet_net.h"

namespace npid {

const char* to_string(ResNetStem stem) noexcept { return stem == ResNetStem::kCifar ? "cifar" : "imagenet"; }

struct ResNet18::Impl {
  Context* ctx = nullptr;
  resnet::NetSpec spec;
  std::int64_t max_batch = 0;
  Tensor param_buf, grad_buf, stat_buf;  // on the context's device
  std::unique_ptr<resnet::CpuRunner<float>> cpu;
  std::unique_ptr<resnet::CudaRunner> cuda;
  std::int64_t batches_tracked = 0;

  std::int64_t pending() const { return cuda ? cuda->pending_batch() : cpu->pending_batch(); }
};

ResNet18::ResNet18(Context& ctx, const ResNetConfig& config, std::int64_t max_batch, std::uint64_t seed)
    : impl_(std::make_unique<Impl>()) {
  constexpr const char* op = "ResNet18";
  NPID_CHECK_ARG(max_batch >= 1, op, "max_batch", "expected >= 1, got " << max_batch);
  impl_->spec = resnet::NetSpec::build(config);
  Impl& m = *impl_;
  m.ctx = &ctx;
  m.max_batch = max_batch;
  m.param_buf = Tensor({m.spec.num_params()}, DType::kFloat32, ctx.device());
  m.grad_buf = Tensor({m.spec.num_params()}, DType::kFloat32, ctx.device());
  m.stat_buf = Tensor({m.spec.num_stats()}, DType::kFloat32, ctx.device());
  fill_zero(ctx, m.grad_buf);
  if (ctx.is_cuda()) {
    m.cuda = std::make_unique<resnet::CudaRunner>(ctx, m.spec, max_batch);
  } else {
    m.cpu = std::make_unique<resnet::CpuRunner<float>>(m.spec, max_batch, ctx.cpu_threads());
  }
  initialize(seed);
}

ResNet18::~ResNet18() = default;

const ResNetConfig& ResNet18::config() const { return impl_->spec.cfg; }
std::int64_t ResNet18::max_batch() const { return impl_->max_batch; }
void ResNet18::initialize(std::uint64_t seed) {
  Impl& m = *impl_;
  if (m.ctx->is_cuda()) {  // drawn on the host (the same values), then uploaded
    std::vector<float> p(static_cast<std::size_t>(m.spec.num_params())), s(static_cast<std::size_t>(m.spec.num_stats()));
    resnet::initialize(m.spec, seed, p.data(), s.data(), m.ctx->cpu_threads());
    copy(*m.ctx, m.param_buf, view(p.data(), {m.spec.num_params()}));
    copy(*m.ctx, m.stat_buf, view(s.data(), {m.spec.num_stats()}));
  } else {
    resnet::initialize(m.spec, seed, m.param_buf.data_as<float>(), m.stat_buf.data_as<float>(), m.ctx->cpu_threads());
  }
  m.batches_tracked = 0;
}
const std::vector<ParameterInfo>& ResNet18::parameters() const { return impl_->spec.params; }
const std::vector<ParameterInfo>& ResNet18::buffers() const { return impl_->spec.bufs; }
TensorView ResNet18::parameter_buffer() const { return impl_->param_buf.view(); }
TensorView ResNet18::gradient_buffer() const { return impl_->grad_buf.view(); }
TensorView ResNet18::buffer_buffer() const { return impl_->stat_buf.view(); }
std::int64_t ResNet18::num_parameters() const { return impl_->spec.parameter_count(); }
std::int64_t ResNet18::num_batches_tracked() const { return impl_->batches_tracked; }
void ResNet18::set_num_batches_tracked(std::int64_t n) { impl_->batches_tracked = n; }
std::uint64_t ResNet18::workspace_generation() const { return impl_->cuda ? impl_->cuda->workspace_generation() : 0; }

TensorView ResNet18::tensor(const std::string& name) const {
  auto it = impl_->spec.by_name.find(name);
  NPID_CHECK_ARG(it != impl_->spec.by_name.end(), "ResNet18::tensor", "name",
                 "expected a parameter or buffer name such as 'layer1.0.conv1.weight', got '" << name << "'");
  const auto& info = it->second.first ? impl_->spec.params[it->second.second] : impl_->spec.bufs[it->second.second];
  const Tensor& buf = it->second.first ? impl_->param_buf : impl_->stat_buf;
  return TensorView(buf.data_as<float>() + info.offset, DType::kFloat32, info.storage_shape, buf.device());
}

void ResNet18::forward(const TensorView& images, const TensorView& embeddings, bool training) {
  constexpr const char* op = "ResNet18::forward";
  Impl& m = *impl_;
  const ResNetConfig& cfg = m.spec.cfg;
  const std::int64_t s = cfg.image_size;
  require_present(images, op, "images");
  require_dtype(images, DType::kFloat32, op, "images");
  require_on(images, *m.ctx, op, "images");
  NPID_CHECK_ARG(images.shape.rank() == 4 && images.shape[0] >= 1 && images.shape[0] <= m.max_batch &&
                     images.shape[1] == s && images.shape[2] == s && images.shape[3] == 3,
                 op, "images",
                 "expected NHWC (B, " << s << ", " << s << ", 3) with 1 <= B <= " << m.max_batch
                                  << ", got " << images.shape.str());
  const std::int64_t n = images.shape[0];
  NPID_CHECK_ARG(!m.ctx->is_cuda() || reinterpret_cast<std::uintptr_t>(images.data) % 16 == 0, op, "images",
                 "expected 16-byte aligned data on CUDA (cuDNN), got a view at address " << images.data);
  require_tensor(embeddings, DType::kFloat32, {n, cfg.embedding_dim}, *m.ctx, op, "embeddings");
  require_no_overlap(embeddings, images, op, "embeddings", "images");
  const auto* x = static_cast<const float*>(images.data);
  auto* e = static_cast<float*>(embeddings.data);
  if (m.cuda) {
    m.cuda->forward(m.param_buf.data_as<float>(), m.stat_buf.data_as<float>(), x, n, e, training);
  } else {
    m.cpu->forward(m.param_buf.data_as<float>(), m.stat_buf.data_as<float>(), x, n, e, training);
  }
  if (training) ++m.batches_tracked;
}

void ResNet18::backward(const TensorView& grad_embeddings) {
  constexpr const char* op = "ResNet18::backward";
  Impl& m = *impl_;
  const std::int64_t n = m.pending();
  if (n == 0)
    throw Error(ErrorKind::kInvalidArgument,
                std::string(op) + ": expected a preceding forward(..., training = true), got none");
  require_tensor(grad_embeddings, DType::kFloat32, {n, m.spec.cfg.embedding_dim}, *m.ctx, op, "grad_embeddings");
  const auto* g = static_cast<const float*>(grad_embeddings.data);
  if (m.cuda) {
    m.cuda->backward(m.param_buf.data_as<float>(), m.grad_buf.data_as<float>(), g);
  } else {
    m.cpu->backward(m.param_buf.data_as<float>(), m.grad_buf.data_as<float>(), g);
  }
}

// ---- SGD ---------------------------------------------------------------------

void sgd_step(Context& ctx, const SgdConfig& config, float lr, const TensorView& params, const TensorView& grads,
              const TensorView& momentum_buffer, bool first_step, const TensorView& lr_device) {
  constexpr const char* op = "sgd_step";
  NPID_CHECK_ARG(std::isfinite(lr) && lr >= 0.f, op, "lr", "expected a finite lr >= 0, got " << lr);
  NPID_CHECK_ARG(config.momentum >= 0.f, op, "momentum", "expected >= 0, got " << config.momentum);
  NPID_CHECK_ARG(config.weight_decay >= 0.f, op, "weight_decay", "expected >= 0, got " << config.weight_decay);
  NPID_CHECK_ARG(!config.nesterov || config.momentum > 0.f, op, "nesterov",
                 "expected momentum > 0 with Nesterov, got " << config.momentum);
  require_present(params, op, "params");
  require_rank(params, 1, op, "params");
  const Shape shape{params.shape[0]};
  require_tensor(params, DType::kFloat32, shape, ctx, op, "params");
  require_tensor(grads, DType::kFloat32, shape, ctx, op, "grads");
  require_tensor(momentum_buffer, DType::kFloat32, shape, ctx, op, "momentum_buffer");
  require_no_overlap(params, grads, op, "params", "grads");
  require_no_overlap(momentum_buffer, params, op, "momentum_buffer", "params");
  require_no_overlap(momentum_buffer, grads, op, "momentum_buffer", "grads");
  auto* w = static_cast<float*>(params.data);
  const auto* g = static_cast<const float*>(grads.data);
  auto* buf = static_cast<float*>(momentum_buffer.data);
  if (ctx.is_cuda()) {
    const float* lr_ptr = nullptr;
    if (!lr_device.empty()) {
      require_tensor(lr_device, DType::kFloat32, {1}, ctx, op, "lr_device");
      lr_ptr = static_cast<const float*>(lr_device.data);
    }
    layers::launch_sgd_step(ctx, shape[0], w, g, buf, lr, config.momentum, config.weight_decay, config.nesterov,
                            first_step, lr_ptr);
  } else {
    NPID_CHECK_ARG(lr_device.empty(), op, "lr_device", "expected none on the CPU, got " << lr_device.str());
    layers::sgd_step_cpu(shape[0], w, g, buf, lr, config.momentum, config.weight_decay, config.nesterov, first_step);
  }
}

Sgd::Sgd(Context& ctx, const SgdConfig& config, std::int64_t count)
    : ctx_(&ctx), config_(config), buffer_({count}, DType::kFloat32, ctx.device()) {
  fill_zero(ctx, buffer_);
}

void Sgd::step(const TensorView& params, const TensorView& grads, float lr, const TensorView& lr_device) {
  sgd_step(*ctx_, config_, lr, params, grads, buffer_, !started_, lr_device);
  started_ = true;
}

}  // namespace npid

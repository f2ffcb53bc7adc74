// ResNet-18 on CUDA: executes a resnet::NetSpec with cuDNN graph convolutions
// (kernels/cudnn_conv.h), our layer kernels (kernels/resnet_layers.cu) and the
// head's GEMMs on cuBLAS -- the same dataflow as CpuRunner, on device memory.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>

#include "core/check.h"
#include "core/context_impl.h"
#include "cudnn_conv.h"
#include "resnet_net.h"

namespace npid {
namespace resnet {

using cudnn::ConvDirection;
using cudnn::ConvOutput;

namespace {

struct Act {
  std::int64_t h = 0, w = 0, c = 0;
  Tensor value, grad;
};

struct Saved {
  Tensor mean, invstd;
};

struct BlockActs {
  Act z1, y1, z2, out;
  Act zd, res;  // downsampling blocks only: the shortcut's conv output and BatchNorm
  Saved s1, s2, sd;
};

float* f(const Tensor& t) { return t.data_as<float>(); }

}  // namespace

struct CudaRunner::Impl {
  Context* ctx;
  const NetSpec* spec;
  std::int64_t max_batch;
  cudnn::ConvMath math;
  cudnn::ConvPlans plans;
  Tensor conv_ws, norm_ws;
  std::size_t conv_ws_bytes = 0;
  std::uint64_t ws_generation = 0;
  Act stem_z, stem_y, pool;
  Tensor argmax;
  Saved stem_saved;
  std::vector<BlockActs> blocks;
  Tensor pooled, pooled_grad, fc_out, fc_grad, embeddings;
  std::int64_t last_batch = 0;
  const float* last_images = nullptr;

  Impl(Context& c, const NetSpec& s, std::int64_t mb)
      : ctx(&c), spec(&s), max_batch(mb),
        math(s.cfg.tf32_convolutions ? cudnn::ConvMath::kTF32 : cudnn::ConvMath::kFP32),
        plans(c, s.cfg.autotune_convolutions ? cudnn::ConvTuning::kAutotune : cudnn::ConvTuning::kHeuristic,
              s.cfg.deterministic_convolutions ? cudnn::ConvDeterminism::kDeterministic
                                               : cudnn::ConvDeterminism::kAny) {}

  Act act(std::int64_t h, std::int64_t w, std::int64_t c) {
    Act a;
    a.h = h;
    a.w = w;
    a.c = c;
    a.value = Tensor({max_batch, h, w, c}, DType::kFloat32, ctx->device());
    a.grad = Tensor({max_batch, h, w, c}, DType::kFloat32, ctx->device());
    return a;
  }
  Saved saved(std::int64_t c) {
    return {Tensor({c}, DType::kFloat32, ctx->device()), Tensor({c}, DType::kFloat32, ctx->device())};
  }

  // Plans for every convolution at batch n (the backward ones only when
  // training will need them), and the workspace they need. Data gradients
  // accumulate where NetSpec::data_grad_accumulates says (see backward()).
  void prepare(std::int64_t n, bool with_backward = true) {
    std::size_t need = 0;
    for (const Conv* c : spec->convs()) {
      need = std::max(need, plans.prepare(ConvDirection::kForward, c->shape(n), math));
      if (!with_backward) continue;
      need = std::max(need, plans.prepare(ConvDirection::kBackwardFilter, c->shape(n), math));
      if (c != &spec->stem)
        need = std::max(need, plans.prepare(ConvDirection::kBackwardData, c->shape(n), math, data_grad_output(c)));
    }
    if (need > conv_ws_bytes) {
      ctx->synchronize();
      conv_ws = Tensor({static_cast<std::int64_t>(need)}, DType::kUInt8, ctx->device());
      conv_ws_bytes = need;
      ++ws_generation;
    }
  }

  ConvOutput data_grad_output(const Conv* c) const {
    return spec->data_grad_accumulates(c) ? ConvOutput::kAccumulate : ConvOutput::kOverwrite;
  }
  void conv(ConvDirection dir, const Conv& c, std::int64_t n, const float* a, const float* b, float* out) {
    plans.run(dir, c.shape(n), math, a, b, out, conv_ws.data(),
              dir == ConvDirection::kBackwardData ? data_grad_output(&c) : ConvOutput::kOverwrite);
  }

  void norm_forward(const Norm& nm, Saved& sv, std::int64_t count, const float* params, float* stats, const float* x,
                    const float* residual, bool relu, float* y, bool training) {
    const layers::NormShape s{count, nm.channels};
    if (training) {
      layers::launch_batchnorm_train_forward(*ctx, s, x, params + nm.gamma, params + nm.beta, spec->cfg.bn_eps,
                                             spec->cfg.bn_momentum, stats + nm.mean, stats + nm.var, residual, relu, y,
                                             f(sv.mean), f(sv.invstd), norm_ws.data());
    } else {
      layers::launch_batchnorm_eval_forward(*ctx, s, x, params + nm.gamma, params + nm.beta, stats + nm.mean,
                                            stats + nm.var, spec->cfg.bn_eps, residual, relu, y, norm_ws.data());
    }
  }
  void norm_backward(const Norm& nm, const Saved& sv, std::int64_t count, const float* params, float* grads,
                     const float* dy, const float* x, const float* y, bool relu, float* dx, float* residual_grad) {
    layers::launch_batchnorm_backward(*ctx, layers::NormShape{count, nm.channels}, dy, x, y, relu, params + nm.gamma,
                                      f(sv.mean), f(sv.invstd), dx, grads + nm.gamma, grads + nm.beta, residual_grad,
                                      norm_ws.data());
  }
};

CudaRunner::CudaRunner(Context& ctx, const NetSpec& spec, std::int64_t max_batch)
    : impl_(std::make_unique<Impl>(ctx, spec, max_batch)) {
  Impl& m = *impl_;
  DeviceGuard guard(ctx.device());
  m.stem_z = m.act(spec.stem.out_h(), spec.stem.out_w(), spec.stem.out_c);
  m.stem_y = m.act(spec.stem.out_h(), spec.stem.out_w(), spec.stem.out_c);
  m.stem_saved = m.saved(spec.stem.out_c);
  std::size_t norm_bytes = layers::batchnorm_cuda_workspace_bytes(
      {max_batch * spec.stem.out_h() * spec.stem.out_w(), spec.stem.out_c});
  if (spec.maxpool) {
    m.pool = m.act(spec.pool.out_h(), spec.pool.out_w(), spec.pool.c);
    m.argmax = Tensor({max_batch, spec.pool.out_h(), spec.pool.out_w(), spec.pool.c}, DType::kInt64, ctx.device());
  }
  for (const Block& b : spec.blocks) {
    BlockActs a;
    a.z1 = m.act(b.out_h, b.out_w, b.out_c);
    a.y1 = m.act(b.out_h, b.out_w, b.out_c);
    a.z2 = m.act(b.out_h, b.out_w, b.out_c);
    a.out = m.act(b.out_h, b.out_w, b.out_c);
    a.s1 = m.saved(b.out_c);
    a.s2 = m.saved(b.out_c);
    if (b.has_down) {
      a.zd = m.act(b.out_h, b.out_w, b.out_c);
      a.res = m.act(b.out_h, b.out_w, b.out_c);
      a.sd = m.saved(b.out_c);
    }
    norm_bytes = std::max(norm_bytes, layers::batchnorm_cuda_workspace_bytes({max_batch * b.out_h * b.out_w, b.out_c}));
    m.blocks.push_back(std::move(a));
  }
  const std::int64_t d = spec.cfg.embedding_dim;
  m.pooled = Tensor({max_batch, spec.fc_in}, DType::kFloat32, ctx.device());
  m.pooled_grad = Tensor({max_batch, spec.fc_in}, DType::kFloat32, ctx.device());
  m.fc_out = Tensor({max_batch, d}, DType::kFloat32, ctx.device());
  m.fc_grad = Tensor({max_batch, d}, DType::kFloat32, ctx.device());
  m.embeddings = Tensor({max_batch, d}, DType::kFloat32, ctx.device());
  m.norm_ws = Tensor({static_cast<std::int64_t>(norm_bytes)}, DType::kUInt8, ctx.device());
  m.prepare(max_batch);
}

CudaRunner::~CudaRunner() = default;

std::int64_t CudaRunner::pending_batch() const { return impl_->last_batch; }
std::uint64_t CudaRunner::workspace_generation() const { return impl_->ws_generation; }

void CudaRunner::forward(const float* params, float* stats, const float* images, std::int64_t n, float* embeddings,
                         bool training) {
  Impl& m = *impl_;
  const NetSpec& spec = *m.spec;
  DeviceGuard guard(m.ctx->device());
  if (n != m.max_batch) m.prepare(n, training);  // a new batch size: plans (and workspace) for it
  m.conv(ConvDirection::kForward, spec.stem, n, images, params + spec.stem.weight, f(m.stem_z.value));
  m.norm_forward(spec.stem_bn, m.stem_saved, n * m.stem_z.h * m.stem_z.w, params, stats, f(m.stem_z.value), nullptr,
                 true, f(m.stem_y.value), training);
  const float* x = f(m.stem_y.value);
  if (spec.maxpool) {
    layers::PoolShape ps = spec.pool;
    ps.n = n;
    layers::launch_maxpool_forward(*m.ctx, ps, x, f(m.pool.value), m.argmax.data_as<std::int64_t>());
    x = f(m.pool.value);
  }
  for (std::size_t i = 0; i < spec.blocks.size(); ++i) {
    const Block& b = spec.blocks[i];
    BlockActs& a = m.blocks[i];
    const std::int64_t count = n * b.out_h * b.out_w;
    m.conv(ConvDirection::kForward, b.conv1, n, x, params + b.conv1.weight, f(a.z1.value));
    m.norm_forward(b.bn1, a.s1, count, params, stats, f(a.z1.value), nullptr, true, f(a.y1.value), training);
    m.conv(ConvDirection::kForward, b.conv2, n, f(a.y1.value), params + b.conv2.weight, f(a.z2.value));
    const float* residual = x;
    if (b.has_down) {
      m.conv(ConvDirection::kForward, b.down, n, x, params + b.down.weight, f(a.zd.value));
      m.norm_forward(b.down_bn, a.sd, count, params, stats, f(a.zd.value), nullptr, false, f(a.res.value), training);
      residual = f(a.res.value);
    }
    m.norm_forward(b.bn2, a.s2, count, params, stats, f(a.z2.value), residual, true, f(a.out.value), training);
    x = f(a.out.value);
  }
  const Block& last = spec.blocks.back();
  const std::int64_t d = spec.cfg.embedding_dim, in = spec.fc_in;
  layers::launch_avgpool_forward(*m.ctx, n, last.out_h * last.out_w, last.out_c, x, f(m.pooled));
  // fc_out (n, d) = pooled (n, in) W^T + b; column-major: fc_out^T = W * pooled^T.
  const float one = 1.f, zero = 0.f;
  cublasHandle_t h = cublas_handle(*m.ctx);
  NPID_CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(d), static_cast<int>(n),
                                static_cast<int>(in), &one, params + spec.fc_weight, static_cast<int>(in), f(m.pooled),
                                static_cast<int>(in), &zero, f(m.fc_out), static_cast<int>(d)));
  layers::launch_add_bias(*m.ctx, n, d, params + spec.fc_bias, f(m.fc_out));
  layers::launch_l2norm_forward(*m.ctx, n, d, f(m.fc_out), embeddings);
  if (training) {
    m.last_batch = n;
    m.last_images = images;
    NPID_CUDA_CHECK(cudaMemcpyAsync(f(m.embeddings), embeddings, static_cast<std::size_t>(n * d) * sizeof(float),
                                    cudaMemcpyDeviceToDevice, m.ctx->stream()));
  } else {
    m.last_batch = 0;
  }
}

void CudaRunner::backward(const float* params, float* grads, const float* grad_embeddings) {
  Impl& m = *impl_;
  const NetSpec& spec = *m.spec;
  DeviceGuard guard(m.ctx->device());
  const std::int64_t n = m.last_batch, d = spec.cfg.embedding_dim, in = spec.fc_in;
  const Block& last = spec.blocks.back();
  layers::launch_l2norm_backward(*m.ctx, n, d, f(m.fc_out), f(m.embeddings), grad_embeddings, f(m.fc_grad));
  const float one = 1.f, zero = 0.f;
  cublasHandle_t h = cublas_handle(*m.ctx);
  // pooled_grad (n, in) = fc_grad (n, d) W (d, in); column-major: W^T-view (in x d) * fc_grad^T (d x n).
  NPID_CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(in), static_cast<int>(n),
                                static_cast<int>(d), &one, params + spec.fc_weight, static_cast<int>(in), f(m.fc_grad),
                                static_cast<int>(d), &zero, f(m.pooled_grad), static_cast<int>(in)));
  // dW (d, in) = fc_grad^T (d, n) pooled (n, in); column-major: dW^T (in x d) = pooled^T (in x n) * fc_grad (n x d).
  NPID_CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(in), static_cast<int>(d),
                                static_cast<int>(n), &one, f(m.pooled), static_cast<int>(in), f(m.fc_grad),
                                static_cast<int>(d), &zero, grads + spec.fc_weight, static_cast<int>(in)));
  layers::launch_bias_grad(*m.ctx, n, d, f(m.fc_grad), grads + spec.fc_bias);
  layers::launch_avgpool_backward(*m.ctx, n, last.out_h * last.out_w, last.out_c, f(m.pooled_grad),
                                  f(m.blocks.back().out.grad));
  for (std::size_t i = spec.blocks.size(); i-- > 0;) {
    const Block& b = spec.blocks[i];
    BlockActs& a = m.blocks[i];
    const std::int64_t count = n * b.out_h * b.out_w;
    Act& in_act = i > 0 ? m.blocks[i - 1].out : (spec.maxpool ? m.pool : m.stem_y);
    const float* x = f(in_act.value);
    float* gx = f(in_act.grad);
    // The block input's gradient gx is the sum of the main path's (conv1's
    // data gradient) and the shortcut's. cuDNN adds into gx in place (beta
    // 1) instead of a separate add pass: an identity block's BatchNorm
    // backward writes the shortcut's term (the ReLU-masked gradient) straight
    // into gx and conv1 accumulates onto it; a downsampling block's conv1
    // writes gx and the downsampling conv accumulates onto it.
    float* gres = b.has_down ? f(a.res.grad) : gx;
    m.norm_backward(b.bn2, a.s2, count, params, grads, f(a.out.grad), f(a.z2.value), f(a.out.value), true,
                    f(a.z2.grad), gres);
    m.conv(ConvDirection::kBackwardFilter, b.conv2, n, f(a.y1.value), f(a.z2.grad), grads + b.conv2.weight);
    m.conv(ConvDirection::kBackwardData, b.conv2, n, f(a.z2.grad), params + b.conv2.weight, f(a.y1.grad));
    m.norm_backward(b.bn1, a.s1, count, params, grads, f(a.y1.grad), f(a.z1.value), f(a.y1.value), true, f(a.z1.grad),
                    nullptr);
    m.conv(ConvDirection::kBackwardFilter, b.conv1, n, x, f(a.z1.grad), grads + b.conv1.weight);
    m.conv(ConvDirection::kBackwardData, b.conv1, n, f(a.z1.grad), params + b.conv1.weight, gx);  // (+=) identity
    if (b.has_down) {
      m.norm_backward(b.down_bn, a.sd, count, params, grads, gres, f(a.zd.value), nullptr, false, f(a.zd.grad), nullptr);
      m.conv(ConvDirection::kBackwardFilter, b.down, n, x, f(a.zd.grad), grads + b.down.weight);
      m.conv(ConvDirection::kBackwardData, b.down, n, f(a.zd.grad), params + b.down.weight, gx);  // +=
    }
  }
  float* g_stem = f(m.stem_y.grad);
  if (spec.maxpool) {
    layers::PoolShape ps = spec.pool;
    ps.n = n;
    layers::launch_maxpool_backward(*m.ctx, ps, f(m.pool.grad), m.argmax.data_as<std::int64_t>(), g_stem);
  }
  m.norm_backward(spec.stem_bn, m.stem_saved, n * m.stem_z.h * m.stem_z.w, params, grads, g_stem, f(m.stem_z.value),
                  f(m.stem_y.value), true, f(m.stem_z.grad), nullptr);
  m.conv(ConvDirection::kBackwardFilter, spec.stem, n, m.last_images, f(m.stem_z.grad), grads + spec.stem.weight);
}

}  // namespace resnet
}  // namespace npid

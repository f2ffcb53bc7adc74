// ResNet-18 spec (names, shapes, offsets), initialization, and the CPU runner.
#include "resnet_net.h"

#include <algorithm>
#include <cmath>

#include "common/parallel.h"
#include "common/philox.h"
#include "npid/error.h"

namespace npid {
namespace resnet {

layers::ConvShape Conv::shape(std::int64_t n) const {
  return layers::ConvShape::of(n, in_h, in_w, in_c, out_c, k, stride, pad);
}

namespace {

struct Builder {
  NetSpec& spec;

  // Offsets are rounded up to 4 floats so that every parameter (and gradient)
  // view is 16-byte aligned, as cuDNN's vectorized engines require; the
  // padding elements stay zero (their gradient is zero).
  static std::int64_t aligned(std::int64_t offset) { return (offset + 3) / 4 * 4; }
  std::int64_t add_param(const std::string& name, Shape shape, Shape storage) {
    ParameterInfo p{name, shape, storage, 0, shape.numel()};
    p.offset = spec.params.empty() ? 0 : aligned(spec.params.back().offset + spec.params.back().numel);
    spec.by_name[name] = {true, spec.params.size()};
    spec.params.push_back(p);
    return p.offset;
  }
  std::int64_t add_buffer(const std::string& name, std::int64_t c) {
    ParameterInfo b{name, {c}, {c}, 0, c};
    b.offset = spec.bufs.empty() ? 0 : aligned(spec.bufs.back().offset + spec.bufs.back().numel);
    spec.by_name[name] = {false, spec.bufs.size()};
    spec.bufs.push_back(b);
    return b.offset;
  }
  Conv conv(const std::string& name, std::int64_t in_c, std::int64_t out_c, std::int64_t k, std::int64_t stride,
            std::int64_t pad, std::int64_t in_h, std::int64_t in_w) {
    Conv c;
    c.name = name;
    c.in_c = in_c;
    c.out_c = out_c;
    c.k = k;
    c.stride = stride;
    c.pad = pad;
    c.in_h = in_h;
    c.in_w = in_w;
    NPID_CHECK_ARG(c.out_h() >= 1 && c.out_w() >= 1, "ResNet18", "image_size",
                   "layer " << name << ": a " << k << "x" << k << " stride-" << stride << " convolution of a "
                            << in_h << "x" << in_w << " input leaves no output; expected a larger image_size, got "
                            << spec.cfg.image_size);
    c.weight = add_param(name + ".weight", {out_c, in_c, k, k}, {out_c, k, k, in_c});
    return c;
  }
  Norm norm(const std::string& name, std::int64_t channels) {
    Norm n;
    n.name = name;
    n.channels = channels;
    n.gamma = add_param(name + ".weight", {channels}, {channels});
    n.beta = add_param(name + ".bias", {channels}, {channels});
    n.mean = add_buffer(name + ".running_mean", channels);
    n.var = add_buffer(name + ".running_var", channels);
    return n;
  }
};

}  // namespace

std::vector<const Conv*> NetSpec::convs() const {
  std::vector<const Conv*> out{&stem};
  for (const Block& b : blocks) {
    out.push_back(&b.conv1);
    out.push_back(&b.conv2);
    if (b.has_down) out.push_back(&b.down);
  }
  return out;
}

bool NetSpec::data_grad_accumulates(const Conv* conv) const {
  for (const Block& b : blocks)
    if ((conv == &b.conv1 && !b.has_down) || (b.has_down && conv == &b.down)) return true;
  return false;
}

NetSpec NetSpec::build(const ResNetConfig& cfg) {
  NPID_CHECK_ARG(cfg.width >= 1, "ResNet18", "width", "expected >= 1, got " << cfg.width);
  NPID_CHECK_ARG(cfg.embedding_dim >= 1, "ResNet18", "embedding_dim", "expected >= 1, got " << cfg.embedding_dim);
  NPID_CHECK_ARG(cfg.image_size >= 1, "ResNet18", "image_size", "expected >= 1, got " << cfg.image_size);
  NPID_CHECK_ARG(std::isfinite(cfg.bn_eps) && cfg.bn_eps > 0.f, "ResNet18", "bn_eps",
                 "expected > 0, got " << cfg.bn_eps);
  NPID_CHECK_ARG(cfg.bn_momentum >= 0.f && cfg.bn_momentum <= 1.f, "ResNet18", "bn_momentum",
                 "expected [0, 1], got " << cfg.bn_momentum);
  NetSpec spec;
  spec.cfg = cfg;
  Builder b{spec};
  const std::int64_t s = cfg.image_size, w = cfg.width;
  spec.stem = cfg.stem == ResNetStem::kCifar ? b.conv("conv1", 3, w, 3, 1, 1, s, s) : b.conv("conv1", 3, w, 7, 2, 3, s, s);
  spec.stem_bn = b.norm("bn1", w);
  std::int64_t h = spec.stem.out_h(), wd = spec.stem.out_w(), c = w;
  if (cfg.stem == ResNetStem::kImageNet) {
    spec.maxpool = true;
    spec.pool.h = h;
    spec.pool.w = wd;
    spec.pool.c = w;
    NPID_CHECK_ARG(spec.pool.out_h() >= 1 && spec.pool.out_w() >= 1, "ResNet18", "image_size",
                   "layer maxpool: a " << h << "x" << wd << " input leaves no output; expected a larger image_size, got "
                                       << s);
    h = spec.pool.out_h();
    wd = spec.pool.out_w();
  }
  for (int stage = 0; stage < 4; ++stage) {
    const std::int64_t out_c = w << stage;
    for (int i = 0; i < 2; ++i) {
      const std::string prefix = "layer" + std::to_string(stage + 1) + "." + std::to_string(i);
      const std::int64_t stride = (stage > 0 && i == 0) ? 2 : 1;
      Block blk;
      blk.in_h = h;
      blk.in_w = wd;
      blk.in_c = c;
      blk.conv1 = b.conv(prefix + ".conv1", c, out_c, 3, stride, 1, h, wd);
      blk.bn1 = b.norm(prefix + ".bn1", out_c);
      blk.out_h = blk.conv1.out_h();
      blk.out_w = blk.conv1.out_w();
      blk.out_c = out_c;
      blk.conv2 = b.conv(prefix + ".conv2", out_c, out_c, 3, 1, 1, blk.out_h, blk.out_w);
      blk.bn2 = b.norm(prefix + ".bn2", out_c);
      blk.has_down = stride != 1 || c != out_c;
      if (blk.has_down) {
        blk.down = b.conv(prefix + ".downsample.0", c, out_c, 1, stride, 0, h, wd);
        blk.down_bn = b.norm(prefix + ".downsample.1", out_c);
      }
      h = blk.out_h;
      wd = blk.out_w;
      c = out_c;
      spec.blocks.push_back(blk);
    }
  }
  spec.fc_in = c;
  spec.fc_weight = b.add_param("fc.weight", {cfg.embedding_dim, c}, {cfg.embedding_dim, c});
  spec.fc_bias = b.add_param("fc.bias", {cfg.embedding_dim}, {cfg.embedding_dim});
  return spec;
}

namespace {
constexpr std::uint32_t kInitTag = 0x52534E31u;  // "RSN1"

enum class Kind { kConv, kNormWeight, kNormBias, kLinear };

Kind kind_of(const NetSpec& spec, std::size_t index) {
  const ParameterInfo& p = spec.params[index];
  if (p.shape.rank() == 4) return Kind::kConv;
  if (p.name.rfind("fc.", 0) == 0) return Kind::kLinear;
  const bool weight = p.name.size() >= 7 && p.name.compare(p.name.size() - 7, 7, ".weight") == 0;
  return weight ? Kind::kNormWeight : Kind::kNormBias;
}
}  // namespace

void initialize(const NetSpec& spec, std::uint64_t seed, float* params, float* stats, int threads) {
  std::fill(params, params + spec.num_params(), 0.f);  // alignment padding included
  std::fill(stats, stats + spec.num_stats(), 0.f);
  const std::uint32_t k0 = static_cast<std::uint32_t>(seed), k1 = static_cast<std::uint32_t>(seed >> 32);
  const double fc_bound = 1.0 / std::sqrt(static_cast<double>(spec.fc_in));
  parallel_for(static_cast<std::int64_t>(spec.params.size()), threads, [&](std::int64_t idx) {
    const ParameterInfo& info = spec.params[static_cast<std::size_t>(idx)];
    auto bits = [&](std::int64_t e) {
      return philox4x32_10(Philox4{{static_cast<std::uint32_t>(e), static_cast<std::uint32_t>(e >> 32),
                                    static_cast<std::uint32_t>(idx), kInitTag}},
                           k0, k1);
    };
    float* p = params + info.offset;
    switch (kind_of(spec, static_cast<std::size_t>(idx))) {
      case Kind::kConv: {
        // N(0, 2 / (k*k*out)), drawn in logical (O, I, KH, KW) order and
        // stored channels-last (O, KH, KW, I).
        const std::int64_t o = info.shape[0], in = info.shape[1], k = info.shape[2];
        const double sd = std::sqrt(2.0 / static_cast<double>(k * k * o));
        for (std::int64_t e = 0; e < info.numel; ++e) {
          const Philox4 r = bits(e);
          const double z = std::sqrt(-2.0 * std::log(static_cast<double>(uniform_open01(r.v[0])))) *
                           std::cos(6.283185307179586 * static_cast<double>(uniform_open01(r.v[1])));
          const std::int64_t oo = e / (in * k * k), ii = (e / (k * k)) % in, kh = (e / k) % k, kw = e % k;
          p[((oo * k + kh) * k + kw) * in + ii] = static_cast<float>(z * sd);
        }
        break;
      }
      case Kind::kNormWeight: std::fill(p, p + info.numel, 1.f); break;
      case Kind::kNormBias: std::fill(p, p + info.numel, 0.f); break;
      case Kind::kLinear:
        for (std::int64_t e = 0; e < info.numel; ++e)
          p[e] = static_cast<float>((2.0 * static_cast<double>(uniform_open01(bits(e).v[0])) - 1.0) * fc_bound);
        break;
    }
  });
  for (const ParameterInfo& b : spec.bufs) {
    const bool var = b.name.find("running_var") != std::string::npos;
    std::fill(stats + b.offset, stats + b.offset + b.numel, var ? 1.f : 0.f);
  }
}

// ---- CpuRunner --------------------------------------------------------------------

template <typename Real>
typename CpuRunner<Real>::Act CpuRunner<Real>::make_act(std::int64_t h, std::int64_t w, std::int64_t c) const {
  Act a;
  a.h = h;
  a.w = w;
  a.c = c;
  a.value.assign(static_cast<std::size_t>(max_batch_ * h * w * c), Real(0));
  a.grad.assign(a.value.size(), Real(0));
  return a;
}

template <typename Real>
CpuRunner<Real>::CpuRunner(const NetSpec& spec, std::int64_t max_batch, int threads)
    : spec_(spec), max_batch_(max_batch), threads_(threads) {
  stem_z_ = make_act(spec.stem.out_h(), spec.stem.out_w(), spec.stem.out_c);
  stem_y_ = make_act(spec.stem.out_h(), spec.stem.out_w(), spec.stem.out_c);
  if (spec.maxpool) {
    pool_ = make_act(spec.pool.out_h(), spec.pool.out_w(), spec.pool.c);
    argmax_.assign(pool_.value.size(), 0);
  }
  for (const Block& b : spec.blocks) {
    BlockActs a;
    a.z1 = make_act(b.out_h, b.out_w, b.out_c);
    a.y1 = make_act(b.out_h, b.out_w, b.out_c);
    a.z2 = make_act(b.out_h, b.out_w, b.out_c);
    a.out = make_act(b.out_h, b.out_w, b.out_c);
    a.res = make_act(b.out_h, b.out_w, b.out_c);
    if (b.has_down) {
      a.zd = make_act(b.out_h, b.out_w, b.out_c);
      a.tmp.assign(static_cast<std::size_t>(max_batch * b.in_h * b.in_w * b.in_c), Real(0));
    }
    blocks_.push_back(std::move(a));
  }
  const std::int64_t d = spec.cfg.embedding_dim;
  pooled_.assign(static_cast<std::size_t>(max_batch * spec.fc_in), Real(0));
  pooled_grad_.assign(pooled_.size(), Real(0));
  fc_out_.assign(static_cast<std::size_t>(max_batch * d), Real(0));
  fc_grad_.assign(fc_out_.size(), Real(0));
  embeddings_.assign(fc_out_.size(), Real(0));
}

template <typename Real>
void CpuRunner<Real>::norm_forward(const Norm& nm, Saved& sv, std::int64_t count, const Real* params, Real* stats,
                                   const Real* x, const Real* residual, bool relu, Real* y, bool training) const {
  const layers::NormShape s{count, nm.channels};
  const Real eps = static_cast<Real>(spec_.cfg.bn_eps), momentum = static_cast<Real>(spec_.cfg.bn_momentum);
  if (training) {
    sv.mean.resize(static_cast<std::size_t>(nm.channels));
    sv.invstd.resize(static_cast<std::size_t>(nm.channels));
    layers::batchnorm_train_forward_cpu(s, x, params + nm.gamma, params + nm.beta, eps, momentum, stats + nm.mean,
                                        stats + nm.var, residual, relu, y, sv.mean.data(), sv.invstd.data());
  } else {
    layers::batchnorm_eval_forward_cpu(s, x, params + nm.gamma, params + nm.beta, stats + nm.mean, stats + nm.var,
                                       eps, residual, relu, y);
  }
}

template <typename Real>
void CpuRunner<Real>::norm_backward(const Norm& nm, const Saved& sv, std::int64_t count, const Real* params,
                                    Real* grads, const Real* dy, const Real* x, const Real* y, bool relu, Real* dx,
                                    Real* residual_grad) const {
  layers::batchnorm_backward_cpu(layers::NormShape{count, nm.channels}, dy, x, y, relu, params + nm.gamma,
                                 sv.mean.data(), sv.invstd.data(), dx, grads + nm.gamma, grads + nm.beta,
                                 residual_grad);
}

template <typename Real>
void CpuRunner<Real>::forward(const Real* params, Real* stats, const Real* images, std::int64_t n, Real* embeddings,
                              bool training) {
  layers::conv2d_forward_cpu(spec_.stem.shape(n), images, params + spec_.stem.weight, stem_z_.value.data(), threads_);
  norm_forward(spec_.stem_bn, stem_saved_, n * stem_z_.h * stem_z_.w, params, stats, stem_z_.value.data(), nullptr,
               true, stem_y_.value.data(), training);
  const Real* x = stem_y_.value.data();
  if (spec_.maxpool) {
    layers::PoolShape ps = spec_.pool;
    ps.n = n;
    layers::maxpool_forward_cpu(ps, x, pool_.value.data(), argmax_.data());
    x = pool_.value.data();
  }
  for (std::size_t i = 0; i < spec_.blocks.size(); ++i) {
    const Block& b = spec_.blocks[i];
    BlockActs& a = blocks_[i];
    const std::int64_t count = n * b.out_h * b.out_w;
    layers::conv2d_forward_cpu(b.conv1.shape(n), x, params + b.conv1.weight, a.z1.value.data(), threads_);
    norm_forward(b.bn1, a.s1, count, params, stats, a.z1.value.data(), nullptr, true, a.y1.value.data(), training);
    layers::conv2d_forward_cpu(b.conv2.shape(n), a.y1.value.data(), params + b.conv2.weight, a.z2.value.data(),
                               threads_);
    const Real* residual = x;
    if (b.has_down) {
      layers::conv2d_forward_cpu(b.down.shape(n), x, params + b.down.weight, a.zd.value.data(), threads_);
      norm_forward(b.down_bn, a.sd, count, params, stats, a.zd.value.data(), nullptr, false, a.res.value.data(),
                   training);
      residual = a.res.value.data();
    }
    norm_forward(b.bn2, a.s2, count, params, stats, a.z2.value.data(), residual, true, a.out.value.data(), training);
    x = a.out.value.data();
  }
  const Block& last = spec_.blocks.back();
  const std::int64_t d = spec_.cfg.embedding_dim;
  layers::avgpool_forward_cpu(n, last.out_h * last.out_w, last.out_c, x, pooled_.data());
  layers::linear_forward_cpu(n, spec_.fc_in, d, pooled_.data(), params + spec_.fc_weight, params + spec_.fc_bias,
                             fc_out_.data());
  layers::l2norm_forward_cpu(n, d, fc_out_.data(), embeddings);
  if (training) {
    last_batch_ = n;
    last_images_ = images;
    std::copy(embeddings, embeddings + n * d, embeddings_.begin());
  } else {
    last_batch_ = 0;
  }
}

template <typename Real>
void CpuRunner<Real>::backward(const Real* params, Real* grads, const Real* grad_embeddings) {
  const std::int64_t n = last_batch_, d = spec_.cfg.embedding_dim;
  const Block& last = spec_.blocks.back();
  layers::l2norm_backward_cpu(n, d, fc_out_.data(), embeddings_.data(), grad_embeddings, fc_grad_.data());
  layers::linear_backward_cpu(n, spec_.fc_in, d, pooled_.data(), params + spec_.fc_weight, fc_grad_.data(),
                              pooled_grad_.data(), grads + spec_.fc_weight, grads + spec_.fc_bias);
  layers::avgpool_backward_cpu(n, last.out_h * last.out_w, last.out_c, pooled_grad_.data(),
                               blocks_.back().out.grad.data());
  for (std::size_t i = spec_.blocks.size(); i-- > 0;) {
    const Block& b = spec_.blocks[i];
    BlockActs& a = blocks_[i];
    const std::int64_t count = n * b.out_h * b.out_w;
    Act& in = i > 0 ? blocks_[i - 1].out : (spec_.maxpool ? pool_ : stem_y_);
    const Real* x = in.value.data();
    Real* gx = in.grad.data();
    Real* gres = a.res.grad.data();
    norm_backward(b.bn2, a.s2, count, params, grads, a.out.grad.data(), a.z2.value.data(), a.out.value.data(), true,
                  a.z2.grad.data(), gres);
    layers::conv2d_backward_weight_cpu(b.conv2.shape(n), a.y1.value.data(), a.z2.grad.data(),
                                       grads + b.conv2.weight, threads_);
    layers::conv2d_backward_data_cpu(b.conv2.shape(n), a.z2.grad.data(), params + b.conv2.weight, a.y1.grad.data(),
                                     threads_);
    norm_backward(b.bn1, a.s1, count, params, grads, a.y1.grad.data(), a.z1.value.data(), a.y1.value.data(), true,
                  a.z1.grad.data(), nullptr);
    layers::conv2d_backward_weight_cpu(b.conv1.shape(n), x, a.z1.grad.data(), grads + b.conv1.weight, threads_);
    layers::conv2d_backward_data_cpu(b.conv1.shape(n), a.z1.grad.data(), params + b.conv1.weight, gx, threads_);
    const std::int64_t in_elems = n * b.in_h * b.in_w * b.in_c;
    if (b.has_down) {
      norm_backward(b.down_bn, a.sd, count, params, grads, gres, a.zd.value.data(), nullptr, false, a.zd.grad.data(),
                    nullptr);
      layers::conv2d_backward_weight_cpu(b.down.shape(n), x, a.zd.grad.data(), grads + b.down.weight, threads_);
      layers::conv2d_backward_data_cpu(b.down.shape(n), a.zd.grad.data(), params + b.down.weight, a.tmp.data(),
                                       threads_);
      for (std::int64_t e = 0; e < in_elems; ++e) gx[e] += a.tmp[static_cast<std::size_t>(e)];
    } else {
      for (std::int64_t e = 0; e < in_elems; ++e) gx[e] += gres[e];
    }
  }
  Real* g_stem = stem_y_.grad.data();
  if (spec_.maxpool) {
    layers::PoolShape ps = spec_.pool;
    ps.n = n;
    layers::maxpool_backward_cpu(ps, pool_.grad.data(), argmax_.data(), g_stem);
  }
  norm_backward(spec_.stem_bn, stem_saved_, n * stem_z_.h * stem_z_.w, params, grads, g_stem, stem_z_.value.data(),
                stem_y_.value.data(), true, stem_z_.grad.data(), nullptr);
  layers::conv2d_backward_weight_cpu(spec_.stem.shape(n), last_images_, stem_z_.grad.data(),
                                     grads + spec_.stem.weight, threads_);
}

template class CpuRunner<float>;
template class CpuRunner<double>;

}  // namespace resnet
}  // namespace npid

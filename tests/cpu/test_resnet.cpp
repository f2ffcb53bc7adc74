// ResNet-18 on the CPU backend: torchvision names and shapes, initialization,
// the whole network's gradients by finite differences in double (both stems),
// the float network against the double one, BatchNorm modes, errors, SGD.
#include <cmath>
#include <set>

#include "common/fd.h"
#include "resnet_net.h"

using namespace npid;
using test::dot;

namespace {

ResNetConfig small_config(ResNetStem stem) {
  ResNetConfig cfg;
  cfg.stem = stem;
  cfg.width = 2;
  cfg.embedding_dim = 8;
  cfg.image_size = stem == ResNetStem::kCifar ? 8 : 16;
  return cfg;
}

// Parameters and statistics of a spec, initialized, in double; BN affine
// parameters perturbed away from 1 / 0 so every term of their gradient shows.
void init_double(const resnet::NetSpec& spec, std::uint64_t seed, std::vector<double>& params,
                 std::vector<double>& stats) {
  std::vector<float> p(static_cast<std::size_t>(spec.num_params())), s(static_cast<std::size_t>(spec.num_stats()));
  resnet::initialize(spec, seed, p.data(), s.data(), 2);
  params.assign(p.begin(), p.end());
  stats.assign(s.begin(), s.end());
  const auto noise = test::randn(params.size(), seed + 1, 0.2);
  for (const ParameterInfo& info : spec.params)
    if (info.shape.rank() == 1 && info.name.rfind("fc.", 0) != 0)
      for (std::int64_t e = 0; e < info.numel; ++e) params[info.offset + e] += noise[info.offset + e];
}

}  // namespace

TEST_CASE("ResNet-18 parameters follow torchvision's names, shapes and counts", "[resnet]") {
  Context ctx = Context::cpu();
  for (ResNetStem stem : {ResNetStem::kCifar, ResNetStem::kImageNet}) {
    ResNetConfig cfg;
    cfg.stem = stem;
    ResNet18 net(ctx, cfg, 1, 0);
    // torchvision resnet18 has 11,689,512 parameters with its 1000-way fc;
    // less that fc (513,000), plus a 512 -> 128 head (65,664); the CIFAR stem's
    // 3x3 conv1 has 1,728 weights instead of 9,408.
    const std::int64_t imagenet = 11689512 - 513000 + 65664;
    CHECK(net.num_parameters() == (stem == ResNetStem::kImageNet ? imagenet : imagenet - 9408 + 1728));
    const auto& ps = net.parameters();
    CHECK(ps.front().name == "conv1.weight");
    CHECK(ps[1].name == "bn1.weight");
    CHECK(ps[2].name == "bn1.bias");
    CHECK(ps[3].name == "layer1.0.conv1.weight");
    CHECK(ps.back().name == "fc.bias");
    std::set<std::string> names;
    std::int64_t offset = 0;
    for (const ParameterInfo& p : ps) {
      CHECK(names.insert(p.name).second);
      CHECK(p.offset == (offset + 3) / 4 * 4);  // in state_dict order, 16-byte aligned
      offset = p.offset + p.numel;
    }
    CHECK(net.parameter_buffer().numel() == offset);
    auto shape_of = [&](const std::string& name) {
      for (const ParameterInfo& p : ps)
        if (p.name == name) return p.shape;
      FAIL("no parameter " << name);
      return Shape{};
    };
    CHECK(shape_of("conv1.weight") == (stem == ResNetStem::kCifar ? Shape{64, 3, 3, 3} : Shape{64, 3, 7, 7}));
    CHECK(shape_of("layer2.0.downsample.0.weight") == Shape{128, 64, 1, 1});
    CHECK(shape_of("layer2.0.downsample.1.weight") == Shape{128});
    CHECK(shape_of("layer4.1.conv2.weight") == Shape{512, 512, 3, 3});
    CHECK(shape_of("fc.weight") == Shape{128, 512});
    CHECK(net.tensor("layer1.0.conv1.weight").shape == Shape{64, 3, 3, 64});  // stored channels-last
    CHECK(net.buffers().size() == 2 * 20);  // running_mean, running_var of 20 BatchNorms
    CHECK(net.tensor("layer4.1.bn2.running_var").shape == Shape{512});
    test::require_error([&] { net.tensor("layer5.0.conv1.weight"); }, ErrorKind::kInvalidArgument,
                        {"'name'", "layer5.0.conv1.weight"});
  }
}

TEST_CASE("ResNet-18 spec: which data gradients are summed in place", "[resnet]") {
  // Each block's input gradient = main path (conv1's data gradient) +
  // shortcut (identity: the block output's masked gradient; downsampling:
  // the downsampling conv's data gradient). The CUDA backend writes one term
  // and adds the other in place: identity conv1s and downsampling convs add.
  for (const ResNetStem stem : {ResNetStem::kCifar, ResNetStem::kImageNet}) {
    ResNetConfig cfg;
    cfg.stem = stem;
    cfg.image_size = stem == ResNetStem::kCifar ? 32 : 64;
    const resnet::NetSpec spec = resnet::NetSpec::build(cfg);
    int identity = 0, down = 0;
    CHECK_FALSE(spec.data_grad_accumulates(&spec.stem));
    for (const resnet::Block& b : spec.blocks) {
      CHECK_FALSE(spec.data_grad_accumulates(&b.conv2));
      CHECK(spec.data_grad_accumulates(&b.conv1) == !b.has_down);
      if (b.has_down) CHECK(spec.data_grad_accumulates(&b.down));
      identity += !b.has_down;
      down += b.has_down;
    }
    CHECK(identity == 5);  // layer1's two blocks, the second block of layers 2-4
    CHECK(down == 3);      // the first block of layers 2-4
    int accumulating = 0;
    for (const resnet::Conv* c : spec.convs()) accumulating += spec.data_grad_accumulates(c);
    CHECK(accumulating == 8);
  }
}

TEST_CASE("ResNet-18 initialization follows the reference", "[resnet]") {
  Context ctx = Context::cpu();
  ResNet18 net(ctx, ResNetConfig{}, 1, 7);
  const TensorView w = net.tensor("layer3.0.conv1.weight");  // k = 3, out = 256
  const float* p = static_cast<const float*>(w.data);
  double sum = 0, sq = 0;
  for (std::int64_t e = 0; e < w.numel(); ++e) {
    sum += p[e];
    sq += double(p[e]) * p[e];
  }
  const double n = double(w.numel()), sd = std::sqrt(2.0 / (9 * 256));
  CHECK(std::fabs(sum / n) < 5 * sd / std::sqrt(n));
  CHECK(std::sqrt(sq / n) == Approx(sd).epsilon(0.01));
  const float* g = static_cast<const float*>(net.tensor("layer2.1.bn1.weight").data);
  const float* b = static_cast<const float*>(net.tensor("layer2.1.bn1.bias").data);
  const float* rv = static_cast<const float*>(net.tensor("bn1.running_var").data);
  const float* rm = static_cast<const float*>(net.tensor("bn1.running_mean").data);
  for (int c = 0; c < 128; ++c) {
    CHECK(g[c] == 1.f);
    CHECK(b[c] == 0.f);
  }
  CHECK(rv[0] == 1.f);
  CHECK(rm[0] == 0.f);
  const TensorView fc = net.tensor("fc.weight");
  const float* f = static_cast<const float*>(fc.data);
  float lo = 1, hi = -1;
  for (std::int64_t e = 0; e < fc.numel(); ++e) {
    lo = std::min(lo, f[e]);
    hi = std::max(hi, f[e]);
  }
  const float bound = 1.f / std::sqrt(512.f);
  CHECK(hi <= bound);
  CHECK(lo >= -bound);
  CHECK(hi > 0.95f * bound);  // uniform over the whole range
  // Seeded: the same seed gives the same network, another a different one.
  ResNet18 again(ctx, ResNetConfig{}, 1, 7), other(ctx, ResNetConfig{}, 1, 8);
  CHECK(std::equal(p, p + w.numel(), static_cast<const float*>(again.tensor("layer3.0.conv1.weight").data)));
  CHECK(!std::equal(p, p + w.numel(), static_cast<const float*>(other.tensor("layer3.0.conv1.weight").data)));
}

TEST_CASE("ResNet-18 whole-network gradients match finite differences in double", "[resnet][slow]") {
  for (ResNetStem stem : {ResNetStem::kCifar, ResNetStem::kImageNet}) {
    const ResNetConfig cfg = small_config(stem);
    const resnet::NetSpec spec = resnet::NetSpec::build(cfg);
    const std::int64_t n = 3, s = cfg.image_size;
    std::vector<double> params, stats;
    init_double(spec, 5, params, stats);
    auto images = test::randn(static_cast<std::size_t>(n * s * s * 3), 6);
    const auto r = test::randn(static_cast<std::size_t>(n * cfg.embedding_dim), 7);
    resnet::CpuRunner<double> net(spec, n, 1);
    std::vector<double> emb(r.size());
    auto loss = [&] {
      net.forward(params.data(), stats.data(), images.data(), n, emb.data(), true);
      return dot(emb, r);
    };
    loss();
    std::vector<double> grads(params.size(), 0.0);
    net.backward(params.data(), grads.data(), r.data());
    const auto numeric = test::numeric_grad(params, loss);
    INFO("stem " << to_string(stem) << ", " << params.size() << " parameters");
    CHECK(test::relative_error(grads, numeric) < 1e-6);
    // Per parameter tensor too, so that a wrong small tensor cannot hide.
    for (const ParameterInfo& p : spec.params) {
      std::vector<double> a(grads.begin() + p.offset, grads.begin() + p.offset + p.numel);
      std::vector<double> b(numeric.begin() + p.offset, numeric.begin() + p.offset + p.numel);
      INFO(p.name);
      CHECK(test::relative_error(a, b) < 1e-5);
    }
  }
}

TEST_CASE("ResNet18 (float) matches the double-precision network", "[resnet]") {
  Context ctx = Context::cpu();
  for (ResNetStem stem : {ResNetStem::kCifar, ResNetStem::kImageNet}) {
    ResNetConfig cfg = small_config(stem);
    cfg.width = 4;
    cfg.embedding_dim = 16;
    const std::int64_t n = 5, s = cfg.image_size;
    ResNet18 net(ctx, cfg, 8, 11);
    const resnet::NetSpec spec = resnet::NetSpec::build(cfg);
    const float* pf = static_cast<const float*>(net.parameter_buffer().data);
    const float* sf = static_cast<const float*>(net.buffer_buffer().data);
    std::vector<double> params(pf, pf + spec.num_params()), stats(sf, sf + spec.num_stats());
    const auto img = test::randn(static_cast<std::size_t>(n * s * s * 3), 12);
    const auto r = test::randn(static_cast<std::size_t>(n * cfg.embedding_dim), 13);
    std::vector<float> img_f(img.begin(), img.end()), r_f(r.begin(), r.end()), emb_f(r.size());
    net.forward(view(img_f.data(), {n, s, s, 3}), view(emb_f.data(), {n, cfg.embedding_dim}), true);
    net.backward(view(r_f.data(), {n, cfg.embedding_dim}));
    resnet::CpuRunner<double> ref(spec, n, 2);
    std::vector<double> emb(r.size()), grads(params.size());
    ref.forward(params.data(), stats.data(), img.data(), n, emb.data(), true);
    ref.backward(params.data(), grads.data(), r.data());
    const float* gf = static_cast<const float*>(net.gradient_buffer().data);
    INFO(to_string(stem));
    CHECK(test::relative_error(std::vector<double>(emb_f.begin(), emb_f.end()), emb) < 1e-5);
    CHECK(test::relative_error(std::vector<double>(gf, gf + spec.num_params()), grads) < 1e-4);
    CHECK(net.num_batches_tracked() == 1);
  }
}

TEST_CASE("ResNet18: eval uses running statistics and changes nothing", "[resnet]") {
  Context ctx = Context::cpu();
  const ResNetConfig cfg = small_config(ResNetStem::kCifar);
  ResNet18 net(ctx, cfg, 4, 3);
  const std::int64_t n = 4, s = cfg.image_size, d = cfg.embedding_dim;
  const auto img = test::randn(static_cast<std::size_t>(n * s * s * 3), 4);
  std::vector<float> x(img.begin(), img.end()), train(n * d), eval(n * d);
  const float* st = static_cast<const float*>(net.buffer_buffer().data);
  const std::vector<float> stats0(st, st + net.buffer_buffer().numel());
  net.forward(view(x.data(), {n, s, s, 3}), view(eval.data(), {n, d}), false);
  CHECK(std::vector<float>(st, st + stats0.size()) == stats0);  // eval leaves the statistics
  CHECK(net.num_batches_tracked() == 0);
  test::require_error([&] { net.backward(view(eval.data(), {n, d})); }, ErrorKind::kInvalidArgument,
                      {"training = true"});
  net.forward(view(x.data(), {n, s, s, 3}), view(train.data(), {n, d}), true);
  CHECK(std::vector<float>(st, st + stats0.size()) != stats0);  // training moved them
  CHECK(net.num_batches_tracked() == 1);
  CHECK(train != eval);  // batch statistics differ from the initial running ones
}

TEST_CASE("ResNet18 rejects bad configurations and inputs, naming them", "[resnet][errors]") {
  Context ctx = Context::cpu();
  ResNetConfig cfg = small_config(ResNetStem::kCifar);
  cfg.width = 0;
  test::require_error([&] { ResNet18 net(ctx, cfg, 1, 0); }, ErrorKind::kInvalidArgument, {"ResNet18", "'width'"});
  cfg = small_config(ResNetStem::kCifar);
  test::require_error([&] { ResNet18 net(ctx, cfg, 0, 0); }, ErrorKind::kInvalidArgument, {"'max_batch'"});
  ResNet18 net(ctx, cfg, 2, 0);
  std::vector<float> img(3 * 8 * 8 * 3), emb(3 * 8);
  test::require_error([&] { net.forward(view(img.data(), {3, 8, 8, 3}), view(emb.data(), {3, 8}), true); },
                      ErrorKind::kInvalidArgument, {"ResNet18::forward", "'images'", "(B, 8, 8, 3)", "B <= 2", "(3, 8, 8, 3)"});
  test::require_error([&] { net.forward(view(img.data(), {1, 8, 8, 3}), view(emb.data(), {1, 7}), true); },
                      ErrorKind::kInvalidArgument, {"'embeddings'", "(1, 8)", "(1, 7)"});
  test::require_error([&] { net.forward(view(img.data(), {1, 3, 8, 8}), view(emb.data(), {1, 8}), true); },
                      ErrorKind::kInvalidArgument, {"'images'", "(1, 3, 8, 8)"});
  std::vector<float> p(10), g(10), b(10);
  test::require_error(
      [&] { sgd_step(ctx, SgdConfig{}, 0.1f, view(p.data(), {10}), view(g.data(), {9}), view(b.data(), {10}), true); },
      ErrorKind::kInvalidArgument, {"sgd_step", "'grads'", "(10)", "(9)"});
}

TEST_CASE("ResNet18 + SGD: a few steps pull embeddings toward targets", "[resnet][sgd]") {
  Context ctx = Context::cpu();
  const ResNetConfig cfg = small_config(ResNetStem::kCifar);
  const std::int64_t n = 8, s = cfg.image_size, d = cfg.embedding_dim;
  ResNet18 net(ctx, cfg, n, 1);
  Sgd sgd(ctx, SgdConfig{0.9f, 5e-4f, false}, net.parameter_buffer().numel());
  const auto img = test::randn(static_cast<std::size_t>(n * s * s * 3), 2);
  const auto tgt = test::randn(static_cast<std::size_t>(n * d), 3);
  std::vector<float> x(img.begin(), img.end()), emb(n * d), grad(n * d);
  float first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    net.forward(view(x.data(), {n, s, s, 3}), view(emb.data(), {n, d}), true);
    float loss = 0;  // -sum of cosine similarities to the targets
    for (std::int64_t e = 0; e < n * d; ++e) {
      loss -= emb[e] * static_cast<float>(tgt[e]);
      grad[e] = -static_cast<float>(tgt[e]);
    }
    if (step == 0) first = loss;
    last = loss;
    net.backward(view(grad.data(), {n, d}));
    sgd.step(net.parameter_buffer(), net.gradient_buffer(), 0.05f);
  }
  INFO("loss " << first << " -> " << last);
  CHECK(last < first - 1.0f);
  CHECK(sgd.started());
}

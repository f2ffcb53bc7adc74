// bench_resnet18 -- ResNet-18 training throughput: forward + backward + SGD
// images/s. GPU (CUDA events, TF32 convolutions): the CIFAR variant at 32x32,
// batch 128 and 256; the ImageNet variant at 224x224, batch 64 and 256; width
// 64; tune:1 with cuDNN autotuning (ResNetConfig::autotune_convolutions),
// tune:2 autotuned with nondeterministic engines competing too
// (deterministic_convolutions = false, PyTorch's default).
// CPU backend: width 8 at 32x32, batch 32 (the configuration a CPU-only
// training run uses). Counters: images_per_s, and TFLOPs counting 3x the
// forward's multiply-adds (convolutions + head) per image.
//
// BM_ResNet18Convs: where a step's time goes. Every convolution of the
// network at the given batch, each direction timed alone (CUDA events, the
// median of 9 runs) with the heuristic engine, the autotuned one, and the
// one autotuned among nondeterministic engines too; counters: the sums per
// direction in ms (fwd, dgrad, wgrad; _tuned, _any for the autotuned plans),
// how many plans the (deterministic) tuner moved, and conv_ms, the total
// a step spends in cuDNN (compare with BM_ResNet18Gpu's time per step: the
// rest is our BatchNorm/pool/head kernels and launch gaps).
//
// BM_BatchNormGpu: our BatchNorm at each CIFAR stage's shape (B 256): a
// training forward with the residual add and ReLU fused, then the backward
// with the residual gradient -- what a block's second BatchNorm does. The
// counter frac_copy compares the bytes such a pass must move at least (x,
// residual, y; dy, x, y, dx, residual grad: 8 activations) with a device copy
// timed in the same binary (BM_DeviceCopy, copy_GBps): 1.0 would be a
// BatchNorm at the memory floor of its fused form.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <vector>

#include "bench_common.h"
#include "cuda_events.h"
#include "cudnn_conv.h"
#include "npid/npid.h"
#include "resnet_layers.h"
#include "resnet_net.h"

using namespace npid;

namespace {

// Forward multiply-adds x 2 of one image.
double forward_flops(const ResNetConfig& cfg) {
  const resnet::NetSpec spec = resnet::NetSpec::build(cfg);
  auto conv = [](const resnet::Conv& c) {
    return 2.0 * static_cast<double>(c.out_h() * c.out_w() * c.out_c * c.k * c.k * c.in_c);
  };
  double f = conv(spec.stem);
  for (const resnet::Block& b : spec.blocks) {
    f += conv(b.conv1) + conv(b.conv2);
    if (b.has_down) f += conv(b.down);
  }
  return f + 2.0 * static_cast<double>(spec.fc_in * cfg.embedding_dim);
}

// A network, its optimizer and inputs at one configuration.
struct Setup {
  Setup(Context& ctx, const ResNetConfig& config, std::int64_t b)
      : cfg(config), batch(b), net(ctx, cfg, batch, 1), sgd(ctx, SgdConfig{}, net.parameter_buffer().numel()),
        images({batch, cfg.image_size, cfg.image_size, 3}, DType::kFloat32, ctx.device()),
        emb({batch, cfg.embedding_dim}, DType::kFloat32, ctx.device()),
        grad({batch, cfg.embedding_dim}, DType::kFloat32, ctx.device()) {
    const std::int64_t s = cfg.image_size;
    // Inputs: any finite values; reuse the bank initializer for speed and determinism.
    bank_initialize(ctx, TensorView(images.data(), DType::kFloat32, {batch * s * s, 3}, ctx.device()),
                    BankInit::kUnit, 2);
    bank_initialize(ctx, grad, BankInit::kUnit, 3);
  }
  bool same(const ResNetConfig& c, std::int64_t b) const {
    return b == batch && c.stem == cfg.stem && c.image_size == cfg.image_size && c.width == cfg.width &&
           c.autotune_convolutions == cfg.autotune_convolutions &&
           c.deterministic_convolutions == cfg.deterministic_convolutions;
  }
  ResNetConfig cfg;
  std::int64_t batch;
  ResNet18 net;
  Sgd sgd;
  Tensor images, emb, grad;
};

void run(benchmark::State& state, Context& ctx, Setup& m) {
  auto step = [&] {
    m.net.forward(m.images, m.emb, true);
    m.net.backward(m.grad);
    m.sgd.step(m.net.parameter_buffer(), m.net.gradient_buffer(), 0.01f);
  };
  step();  // warm-up: plans, handles
  ctx.synchronize();
  bench::IterationTimer timer(ctx);
  double total = 0;
  for (auto _ : state) {
    const double sec = timer.seconds(step);
    state.SetIterationTime(sec);
    total += sec;
  }
  const double images_per_s = static_cast<double>(m.batch) * static_cast<double>(state.iterations()) / total;
  state.counters["images_per_s"] = images_per_s;
  state.counters["TFLOPs"] = images_per_s * 3.0 * forward_flops(m.cfg) / 1e12;
}

void BM_ResNet18Gpu(benchmark::State& state) {
  if (bench::skip_without_gpu(state)) return;
  static Context ctx = Context::cuda();
  ResNetConfig cfg;
  cfg.stem = state.range(0) ? ResNetStem::kImageNet : ResNetStem::kCifar;
  cfg.image_size = state.range(1);
  cfg.autotune_convolutions = state.range(3) != 0;
  cfg.deterministic_convolutions = state.range(3) != 2;
  // Google Benchmark enters a case several times (to size the iterations):
  // the network, and so its plans and any autotuning, is made once per case.
  static std::unique_ptr<Setup> last;
  if (!last || !last->same(cfg, state.range(2))) {
    last.reset();  // before the next one is allocated
    last = std::make_unique<Setup>(ctx, cfg, state.range(2));
  }
  run(state, ctx, *last);
}

// Median GPU ms of fn() over 9 runs after one warm-up.
template <typename Fn>
double median_ms(Context& ctx, bench::CudaEvents& ev, Fn&& fn) {
  fn();
  std::vector<double> t;
  for (int r = 0; r < 9; ++r) t.push_back(ev.seconds(ctx.stream(), fn) * 1e3);
  std::nth_element(t.begin(), t.begin() + 4, t.end());
  return t[4];
}

void BM_ResNet18Convs(benchmark::State& state) {
  if (bench::skip_without_gpu(state)) return;
  static Context ctx = Context::cuda();
  ResNetConfig cfg;
  cfg.stem = state.range(0) ? ResNetStem::kImageNet : ResNetStem::kCifar;
  cfg.image_size = state.range(1);
  const std::int64_t n = state.range(2);
  const resnet::NetSpec spec = resnet::NetSpec::build(cfg);
  using cudnn::ConvDirection;
  const auto math = cudnn::ConvMath::kTF32;
  // The plans the network runs: data gradients that add in place accumulate.
  auto output = [&spec](ConvDirection dir, const resnet::Conv* c) {
    return dir == ConvDirection::kBackwardData && spec.data_grad_accumulates(c) ? cudnn::ConvOutput::kAccumulate
                                                                                : cudnn::ConvOutput::kOverwrite;
  };
  cudnn::ConvPlans heuristic(ctx), tuned(ctx, cudnn::ConvTuning::kAutotune),
      any(ctx, cudnn::ConvTuning::kAutotune, cudnn::ConvDeterminism::kAny);
  // Buffers for the largest operand of any convolution, and the workspace.
  std::int64_t most = 0;
  std::size_t ws = 1;
  for (const resnet::Conv* c : spec.convs()) {
    const layers::ConvShape s = c->shape(n);
    most = std::max({most, s.n * s.h * s.w * s.c, s.n * s.out_h() * s.out_w() * s.out_c, s.weight_size()});
    for (auto dir : {ConvDirection::kForward, ConvDirection::kBackwardData, ConvDirection::kBackwardFilter}) {
      if (dir == ConvDirection::kBackwardData && c == &spec.stem) continue;
      const auto out = output(dir, c);
      ws = std::max({ws, heuristic.prepare(dir, s, math, out), tuned.prepare(dir, s, math, out),
                     any.prepare(dir, s, math, out)});
    }
  }
  Tensor a({most}, DType::kFloat32, ctx.device()), b({most}, DType::kFloat32, ctx.device());
  Tensor out({most}, DType::kFloat32, ctx.device());
  Tensor work({static_cast<std::int64_t>(ws)}, DType::kUInt8, ctx.device());
  for (const Tensor* t : {&a, &b})  // any finite values (+-1)
    bank_initialize(ctx, TensorView(t->data(), DType::kFloat32, {most, 1}, ctx.device()), BankInit::kUnit, 4);
  bench::CudaEvents ev;
  double sum[3][3] = {};
  for (auto _ : state) {
    for (int p = 0; p < 3; ++p) {
      cudnn::ConvPlans& plans = p == 0 ? heuristic : p == 1 ? tuned : any;
      for (const resnet::Conv* c : spec.convs()) {
        const layers::ConvShape s = c->shape(n);
        int d = 0;
        for (auto dir : {ConvDirection::kForward, ConvDirection::kBackwardData, ConvDirection::kBackwardFilter}) {
          if (!(dir == ConvDirection::kBackwardData && c == &spec.stem))
            sum[p][d] += median_ms(ctx, ev, [&] {
              plans.run(dir, s, math, a.data_as<float>(), b.data_as<float>(), out.data_as<float>(), work.data(),
                        output(dir, c));
            });
          ++d;
        }
      }
    }
    state.SetIterationTime(1e-3 * (sum[0][0] + sum[0][1] + sum[0][2]));
  }
  const double it = static_cast<double>(state.iterations());
  const char* names[3][4] = {{"fwd_ms", "dgrad_ms", "wgrad_ms", "conv_ms"},
                             {"fwd_ms_tuned", "dgrad_ms_tuned", "wgrad_ms_tuned", "conv_ms_tuned"},
                             {"fwd_ms_any", "dgrad_ms_any", "wgrad_ms_any", "conv_ms_any"}};
  for (int p = 0; p < 3; ++p) {
    for (int d = 0; d < 3; ++d) state.counters[names[p][d]] = sum[p][d] / it;
    state.counters[names[p][3]] = (sum[p][0] + sum[p][1] + sum[p][2]) / it;
  }
  state.counters["nondeterministic_plans_any"] = any.summary().nondeterministic;
  const cudnn::ConvPlans::Summary t = tuned.summary();
  state.counters["plans"] = t.plans;
  state.counters["tuned_away"] = t.tuned_away;
  state.counters["tuning_s"] = t.tuning_seconds;
}

void BM_ResNet18Cpu(benchmark::State& state) {
  Context ctx = Context::cpu();
  ResNetConfig cfg;
  cfg.width = state.range(0);
  cfg.image_size = 32;
  Setup m(ctx, cfg, state.range(1));
  run(state, ctx, m);
}

}  // namespace

double g_copy_GBps = 0;  // the last BM_DeviceCopy's, for frac_copy

void BM_BatchNormGpu(benchmark::State& state) {
  if (bench::skip_without_gpu(state)) return;
  static Context ctx = Context::cuda();
  const layers::NormShape s{state.range(0) * state.range(1) * state.range(1), state.range(2)};
  const std::int64_t n = s.count * s.channels, c = s.channels;
  auto buffer = [&](std::int64_t count) {
    Tensor t({count, 1}, DType::kFloat32, ctx.device());
    bank_initialize(ctx, t, BankInit::kUnit, static_cast<std::uint64_t>(count));  // +-1
    return t;
  };
  Tensor x = buffer(n), res = buffer(n), y = buffer(n), dy = buffer(n), dx = buffer(n), dres = buffer(n);
  Tensor gamma = buffer(c), beta = buffer(c), mean = buffer(c), var = buffer(c), smean = buffer(c),
         sinv = buffer(c), dgamma = buffer(c), dbeta = buffer(c);
  Tensor work({static_cast<std::int64_t>(layers::batchnorm_cuda_workspace_bytes(s))}, DType::kUInt8, ctx.device());
  auto f = [](const Tensor& t) { return t.data_as<float>(); };
  auto pass = [&] {
    layers::launch_batchnorm_train_forward(ctx, s, f(x), f(gamma), f(beta), 1e-5f, 0.1f, f(mean), f(var), f(res),
                                           true, f(y), f(smean), f(sinv), work.data());
    layers::launch_batchnorm_backward(ctx, s, f(dy), f(x), f(y), true, f(gamma), f(smean), f(sinv), f(dx),
                                      f(dgamma), f(dbeta), f(dres), work.data());
  };
  pass();
  bench::CudaEvents ev;
  double total = 0;
  for (auto _ : state) {
    const double sec = ev.seconds(ctx.stream(), pass);
    state.SetIterationTime(sec);
    total += sec;
  }
  const double gbps = 8.0 * 4.0 * static_cast<double>(n) * static_cast<double>(state.iterations()) / total / 1e9;
  state.counters["min_bytes_GBps"] = gbps;
  if (g_copy_GBps > 0) state.counters["frac_copy"] = gbps / g_copy_GBps;
}

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  bench::report_cuda();
  auto* g = benchmark::RegisterBenchmark("BM_ResNet18Gpu", BM_ResNet18Gpu);
  g->ArgNames({"imagenet", "S", "B", "tune"})
      ->Args({0, 32, 128, 0})
      ->Args({0, 32, 256, 0})
      ->Args({0, 32, 256, 1})
      ->Args({0, 32, 256, 2})
      ->Args({1, 224, 64, 0})
      ->Args({1, 224, 64, 1})
      ->Args({1, 224, 64, 2})
      ->Args({1, 224, 256, 0});
  g->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(0.5);
  benchmark::RegisterBenchmark("BM_DeviceCopy/1GiB", [](benchmark::State& st) {
    if (bench::skip_without_gpu(st)) return;
    static Context ctx = Context::cuda();
    g_copy_GBps = bench::device_copy_benchmark(st, ctx);
  })->UseManualTime()->Unit(benchmark::kMicrosecond)->MinTime(0.2);
  // CIFAR stages at B 256: positions per image (side) and channels.
  benchmark::RegisterBenchmark("BM_BatchNormGpu", BM_BatchNormGpu)
      ->ArgNames({"B", "side", "C"})
      ->Args({256, 32, 64})
      ->Args({256, 16, 128})
      ->Args({256, 8, 256})
      ->Args({256, 4, 512})
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond)
      ->MinTime(0.2);
  benchmark::RegisterBenchmark("BM_ResNet18Convs", BM_ResNet18Convs)
      ->ArgNames({"imagenet", "S", "B"})
      ->Args({0, 32, 256})
      ->Args({1, 224, 64})
      ->Iterations(1)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("BM_ResNet18Cpu", BM_ResNet18Cpu)
      ->ArgNames({"width", "B"})
      ->Args({8, 32})
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond)
      ->MinTime(1.0);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

// bench_resnet18 -- ResNet-18 training throughput: forward + backward + SGD
// images/s. GPU (CUDA events, TF32 convolutions): the CIFAR variant at 32x32,
// batch 128 and 256; the ImageNet variant at 224x224, batch 64 and 256; width
// 64. CPU backend: width 8 at 32x32, batch 32 (the configuration a CPU-only
// training run uses). Counters: images_per_s, and TFLOPs counting 3x the
// forward's multiply-adds (convolutions + head) per image.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <memory>

#include "bench_common.h"
#include "npid/npid.h"
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

void run(benchmark::State& state, Context& ctx, const ResNetConfig& cfg, std::int64_t batch) {
  ResNet18 net(ctx, cfg, batch, 1);
  Sgd sgd(ctx, SgdConfig{}, net.parameter_buffer().numel());
  const std::int64_t s = cfg.image_size, d = cfg.embedding_dim;
  Tensor images({batch, s, s, 3}, DType::kFloat32, ctx.device()), emb({batch, d}, DType::kFloat32, ctx.device());
  Tensor grad({batch, d}, DType::kFloat32, ctx.device());
  // Inputs: any finite values; reuse the bank initializer for speed and determinism.
  bank_initialize(ctx, TensorView(images.data(), DType::kFloat32, {batch * s * s, 3}, ctx.device()), BankInit::kUnit, 2);
  bank_initialize(ctx, grad, BankInit::kUnit, 3);
  auto step = [&] {
    net.forward(images, emb, true);
    net.backward(grad);
    sgd.step(net.parameter_buffer(), net.gradient_buffer(), 0.01f);
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
  const double images_per_s = static_cast<double>(batch) * static_cast<double>(state.iterations()) / total;
  state.counters["images_per_s"] = images_per_s;
  state.counters["TFLOPs"] = images_per_s * 3.0 * forward_flops(cfg) / 1e12;
}

void BM_ResNet18Gpu(benchmark::State& state) {
  if (bench::skip_without_gpu(state)) return;
  static Context ctx = Context::cuda();
  ResNetConfig cfg;
  cfg.stem = state.range(0) ? ResNetStem::kImageNet : ResNetStem::kCifar;
  cfg.image_size = state.range(1);
  run(state, ctx, cfg, state.range(2));
}

void BM_ResNet18Cpu(benchmark::State& state) {
  Context ctx = Context::cpu();
  ResNetConfig cfg;
  cfg.width = state.range(0);
  cfg.image_size = 32;
  run(state, ctx, cfg, state.range(1));
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  bench::report_cuda();
  auto* g = benchmark::RegisterBenchmark("BM_ResNet18Gpu", BM_ResNet18Gpu);
  g->ArgNames({"imagenet", "S", "B"})->Args({0, 32, 128})->Args({0, 32, 256})->Args({1, 224, 64})->Args({1, 224, 256});
  g->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(0.5);
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

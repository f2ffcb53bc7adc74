// bench_train_step -- images/s of the whole NPID training step (augment from
// the resident set, ResNet-18 forward, criterion, backward, SGD, bank update):
//   BM_TrainStepGpu  CIFAR preset (32x32, width 64, B = 128), NCE K = 4096 or
//                    the full softmax, N = 50,000, TF32 convolutions
//   BM_TrainStepCpu  the CPU backend at the built-in CPU run's size
// graph = 1: the steady-state step replays a captured CUDA graph; 0: every
// kernel is launched directly (TrainStepConfig::cuda_graph).
#include <benchmark/benchmark.h>

#include <chrono>
#include <string>
#include <cstdio>

#include "bench_common.h"
#include "npid/npid.h"

using namespace npid;

namespace {

void run(benchmark::State& state, Context& ctx, TrainStepConfig cfg, std::int64_t n) {
  SyntheticConfig sc;
  sc.count = n;
  sc.image_size = cfg.model.image_size;
  const ImageSet set = make_synthetic(sc).to(ctx);
  TrainStep step(ctx, cfg, n);
  Tensor perm({n}, DType::kInt64, ctx.device());
  epoch_permutation(ctx, 1, 0, perm);
  const std::int64_t B = cfg.batch_size, batches = n / B;
  bench::IterationTimer timer(ctx);
  std::int64_t k = 0;
  double total = 0;
  for (int w = 0; w < 3; ++w) {  // warm-up: plans, workspaces, first-batch Z
    const TensorView idx(perm.data_as<std::int64_t>() + (k++ % batches) * B, DType::kInt64, {B}, ctx.device());
    step.step(set, idx, 0, 0.03f, false);
  }
  ctx.synchronize();
  for (auto _ : state) {
    const TensorView idx(perm.data_as<std::int64_t>() + (k++ % batches) * B, DType::kInt64, {B}, ctx.device());
    const double sec = timer.seconds([&] { step.step(set, idx, 0, 0.03f, false); });
    state.SetIterationTime(sec);
    total += sec;
  }
  state.counters["images_per_s"] = static_cast<double>(B * state.iterations()) / total;
}

void BM_TrainStepGpu(benchmark::State& state) {
  if (bench::skip_without_gpu(state)) return;
  static Context ctx = Context::cuda();
  TrainStepConfig cfg;  // CIFAR preset: ResNet-18 width 64, 32x32, tau 0.1
  cfg.batch_size = 128;
  cfg.temperature = 0.1f;
  cfg.criterion = state.range(0) ? CriterionKind::kSoftmax : CriterionKind::kNce;
  cfg.num_negatives = 4096;
  cfg.validate_indices = false;
  cfg.cuda_graph = state.range(1) != 0;
  run(state, ctx, cfg, 50000);
  state.SetLabel(std::string(state.range(0) ? "full softmax" : "NCE K=4096") +
                 (state.range(1) ? ", CUDA graph" : ", direct launches"));
}

void BM_TrainStepCpu(benchmark::State& state) {
  Context ctx = Context::cpu();
  TrainStepConfig cfg;
  cfg.model.width = 16;
  cfg.model.image_size = 16;
  cfg.augment.out_height = cfg.augment.out_width = 16;
  cfg.batch_size = 64;
  cfg.criterion = CriterionKind::kSoftmax;
  cfg.temperature = 0.1f;
  run(state, ctx, cfg, 2000);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  bench::report_cuda();
  benchmark::RegisterBenchmark("BM_TrainStepGpu", BM_TrainStepGpu)
      ->ArgNames({"softmax", "graph"})->Args({0, 1})->Args({0, 0})->Args({1, 1})->Args({1, 0})->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(1.0);
  benchmark::RegisterBenchmark("BM_TrainStepCpu", BM_TrainStepCpu)
      ->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(5);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

// bench_nce_kernel -- the fused NCE forward+backward (and the step with its
// bank update) against the device's own copy bandwidth, measured in the same
// binary. D = 128; B in {128, 256}; K in {4096, 16384}; N in {50,000 (fits in
// L2), 1,281,167 (ImageNet)}; the bank in float32 and, beside it, bfloat16. GPU cases are timed with CUDA events (manual
// time), inputs allocated and initialized outside the timed loop.
//
// BM_NceLayout sweeps the D <= 128 kernel's variants; BM_NceSplits the column
// splits per sample at B 128 and 256 (every row reports its splits); BM_GatherProbe reads
// the same rows with no arithmetic (the access pattern's ceiling).
//
// Counters:
//   gather_GBps      bytes of gathered bank rows, B*(K+1)*D*sizeof(storage), per second
//   frac_copy_bw     gather_GBps / copy_GBps (copy counts bytes read + written)
//   copy_GBps        device-to-device cudaMemcpy of 1 GiB, read + written
// Without a device the GPU cases report "skipped: no CUDA device" and only the
// CPU reference case runs.
#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "bench_common.h"
#include "core/check.h"
#include "cuda_events.h"
#include "gather_probe.h"
#include "nce.h"
#include "npid/npid.h"

using namespace npid;

namespace {

constexpr std::int64_t kDim = 128;

using bench::CudaEvents;

struct Gpu {
  Context ctx = Context::cuda();
  double copy_bytes_per_s = 0;
};

Gpu* gpu() {
  static std::unique_ptr<Gpu> g = cuda_available() ? std::make_unique<Gpu>() : nullptr;
  return g.get();
}

// Median of 20 timed 1 GiB device-to-device copies, bytes read + written.
double measure_copy_bandwidth(Context& ctx) {
  const std::size_t bytes = std::size_t(1) << 30;
  Tensor a({static_cast<std::int64_t>(bytes)}, DType::kUInt8, ctx.device());
  Tensor b({static_cast<std::int64_t>(bytes)}, DType::kUInt8, ctx.device());
  fill_zero(ctx, a);
  CudaEvents ev;
  std::vector<double> t;
  for (int rep = 0; rep < 23; ++rep) {
    ev.start(ctx.stream());
    NPID_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, ctx.stream()));
    const double s = ev.stop_seconds(ctx.stream());
    if (rep >= 3) t.push_back(s);
  }
  std::sort(t.begin(), t.end());
  return 2.0 * bytes / t[t.size() / 2];
}

// Problem data, cached per (B, K, N, storage) so benchmark re-runs do not re-allocate.
struct Problem {
  std::int64_t B, K, N;
  Tensor features, targets, bank, z, loss, grad;
};

Problem& problem(std::int64_t B, std::int64_t K, std::int64_t N, DType storage) {
  using Key = std::tuple<std::int64_t, std::int64_t, std::int64_t, int>;
  static std::map<Key, std::unique_ptr<Problem>> cache;
  const Key key{B, K, N, static_cast<int>(storage)};
  auto& slot = cache[key];
  if (slot) return *slot;
  Context& ctx = gpu()->ctx;
  cache.clear();  // keep one bank resident at a time
  auto p = std::make_unique<Problem>();
  p->B = B;
  p->K = K;
  p->N = N;
  p->bank = Tensor({N, kDim}, storage, ctx.device());
  bank_initialize(ctx, p->bank, BankInit::kUnit, 1);
  // Features: unit rows taken from the bank's init at another seed.
  p->features = Tensor({B, kDim}, DType::kFloat32, ctx.device());
  bank_initialize(ctx, p->features, BankInit::kUnit, 2);
  std::vector<std::int64_t> y(B);
  for (std::int64_t i = 0; i < B; ++i) y[i] = (i * 7919) % N;
  p->targets = Tensor({B}, DType::kInt64, ctx.device());
  copy(ctx, p->targets, view(y.data(), {B}));
  p->z = Tensor({1}, DType::kFloat32, ctx.device());
  const float z0 = static_cast<float>(N) * 1.2f;
  copy(ctx, p->z, view(&z0, {1}));
  p->loss = Tensor({1}, DType::kFloat32, ctx.device());
  p->grad = Tensor({B, kDim}, DType::kFloat32, ctx.device());
  ctx.synchronize();
  cache[key] = std::move(p);
  return *cache[key];
}

void set_counters(benchmark::State& state, double gathered_bytes, double seconds) {
  const double rate = gathered_bytes * static_cast<double>(state.iterations()) / seconds;
  state.counters["gather_GBps"] = rate / 1e9;
  state.counters["copy_GBps"] = gpu()->copy_bytes_per_s / 1e9;
  state.counters["frac_copy_bw"] = rate / gpu()->copy_bytes_per_s;
}

// with_update = false: NCE forward+backward only; true: plus the bank update.
// kLayout: the 4th to 6th arguments pick the D <= 128 kernel's lanes per row,
// pipeline stages and ring (tuning sweep); kSplits: the 4th argument forces
// the column splits per sample. Every row reports the splits it ran with.
enum class Sweep { kNone, kLayout, kSplits };
void BM_Nce(benchmark::State& state, bool with_update, Sweep sweep, DType storage) {
  if (gpu() == nullptr) {
    state.SkipWithError("skipped: no CUDA device");
    for (auto _ : state) {
    }
    return;
  }
  const std::int64_t B = state.range(0), K = state.range(1), N = state.range(2);
  // The layout arguments (lanes, stages, ring) follow B, K, N (kLayout) or
  // B, K, N, splits (kSplits); lanes = 0 is the default layout.
  if (sweep != Sweep::kNone) {
    const int at = sweep == Sweep::kLayout ? 3 : 4;
    const std::int64_t ring = state.range(at + 2);
    nce_set_layout_override(static_cast<int>(state.range(at)), static_cast<int>(state.range(at + 1)),
                            ring == 0 ? NceRing::kRegisters : ring == 1 ? NceRing::kAsync : NceRing::kTensorCore);
  }
  nce_set_splits_override(sweep == Sweep::kSplits ? static_cast<int>(state.range(3)) : 0);
  Context& ctx = gpu()->ctx;
  Problem& p = problem(B, K, N, storage);
  NceConfig cfg;
  cfg.num_negatives = K;
  cfg.validate_inputs = false;  // steady-state training step: no host sync
  const NceInputs in{p.features, p.targets, p.bank, {}};
  const NceOutputs out{p.loss, p.grad, {}, {}};
  ctx.workspace().reserve(nce_workspace_bytes(ctx, B, kDim, K), ctx.stream());
  CudaEvents ev;
  double total = 0;
  std::uint64_t step = 0;
  for (auto _ : state) {
    ev.start(ctx.stream());
    nce_forward_backward(ctx, cfg, in, step++, ZUpdate::kKeep, p.z, out);
    if (with_update) bank_update(ctx, p.bank, p.features, p.targets, 0.5f, false);
    const double s = ev.stop_seconds(ctx.stream());
    state.SetIterationTime(s);
    total += s;
  }
  nce_set_layout_override(0, 0);
  nce_set_splits_override(0);
  state.counters["splits"] = nce_last_splits();
  // The kernel that ran (nce_last_layout's code): an override that fell back
  // to the default shows here, not as a slow row of the variant it named.
  state.counters["layout"] = nce_last_layout();
  set_counters(state, static_cast<double>(B) * (K + 1) * kDim * dtype_size(storage), total);
}

// The gather alone (bench/gather_probe.cu): the same B*(K+1) rows of the same
// bank, hashed instead of Philox-drawn, with nothing computed: the memory
// system's ceiling for this access pattern, to set the NCE kernel against.
void BM_GatherProbe(benchmark::State& state, DType storage) {
  if (gpu() == nullptr) {
    state.SkipWithError("skipped: no CUDA device");
    for (auto _ : state) {
    }
    return;
  }
  const std::int64_t B = state.range(0), K = state.range(1), N = state.range(2);
  Context& ctx = gpu()->ctx;
  Problem& p = problem(B, K, N, storage);
  const std::int64_t rows = B * (K + 1);
  Tensor sink({bench::gather_probe_sink_floats(rows)}, DType::kFloat32, ctx.device());
  CudaEvents ev;
  double total = 0;
  for (auto _ : state) {
    ev.start(ctx.stream());
    bench::launch_gather_probe(p.bank.data(), storage == DType::kBFloat16, N, rows,
                               static_cast<float*>(sink.data()), ctx.stream());
    const double s = ev.stop_seconds(ctx.stream());
    state.SetIterationTime(s);
    total += s;
  }
  set_counters(state, static_cast<double>(rows) * kDim * dtype_size(storage), total);
}

void BM_DeviceCopy(benchmark::State& state) {
  if (gpu() == nullptr) {
    state.SkipWithError("skipped: no CUDA device");
    for (auto _ : state) {
    }
    return;
  }
  bench::device_copy_benchmark(state, gpu()->ctx);
}

// The CPU reference on a small case (the oracle's cost, not a GPU figure).
void BM_NceCpuReference(benchmark::State& state) {
  Context ctx = Context::cpu();
  const std::int64_t B = 16, K = 512, N = 10000;
  std::vector<float> bank(N * kDim), features(B * kDim), grad(B * kDim);
  bank_initialize(ctx, view(bank.data(), {N, kDim}), BankInit::kUnit, 1);
  bank_initialize(ctx, view(features.data(), {B, kDim}), BankInit::kUnit, 2);
  std::vector<std::int64_t> y(B);
  for (std::int64_t i = 0; i < B; ++i) y[i] = i * 31;
  float z = 1.2f * N, loss = 0;
  NceConfig cfg;
  cfg.num_negatives = K;
  double total = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    nce_forward_backward(ctx, cfg,
                         {view(features.data(), {B, kDim}), view(y.data(), {B}), view(bank.data(), {N, kDim}), {}},
                         0, ZUpdate::kKeep, view(&z, {1}),
                         {view(&loss, {1}), view(grad.data(), {B, kDim}), {}, {}});
    benchmark::DoNotOptimize(loss);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.SetIterationTime(s);
    total += s;
  }
  // Wall-clock rate (the reference runs on several threads).
  state.counters["gather_GBps"] =
      static_cast<double>(B) * (K + 1) * kDim * 4 * static_cast<double>(state.iterations()) / total / 1e9;
  state.counters["threads"] = ctx.cpu_threads();
}

void gpu_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"B", "K", "N"});
  for (std::int64_t B : {128, 256})
    for (std::int64_t K : {4096, 16384})
      for (std::int64_t N : {50000, 1281167}) b->Args({B, K, N});
  b->UseManualTime()->Unit(benchmark::kMicrosecond)->MinTime(0.2);
}

// The D <= 128 kernel's variants side by side: lanes per row x pipeline stages
// x row ring (ring 0: registers, one tile per warp, the fp32 default with 16
// lanes and 2 stages; 1: cp.async into shared memory, the bf16 default with
// 8 lanes and 4 stages; 2: the tensor-core gather, bf16 only, lanes = 32).
// At B 256; the async and tensor-core candidates for bf16 also at B 128.
void lanes_args(benchmark::internal::Benchmark* b, bool bf16) {
  b->ArgNames({"B", "K", "N", "lanes", "stages", "ring"});
  const std::vector<std::int64_t> ns = {50000, 1281167};
  for (std::int64_t lanes : {8, 16}) {
    for (std::int64_t stages : {2, 3, 4})
      for (std::int64_t N : ns) b->Args({256, 4096, N, lanes, stages, 0});
    for (std::int64_t stages : {4, 8})
      for (std::int64_t N : ns) b->Args({256, 4096, N, lanes, stages, 1});
  }
  for (std::int64_t N : ns) b->Args({256, 4096, N, 4, 4, 1});
  if (bf16) {
    for (std::int64_t B : {128, 256}) {
      for (std::int64_t N : ns) {
        if (B == 128) {  // B 256 has these above
          b->Args({B, 4096, N, 8, 4, 1});
          b->Args({B, 4096, N, 4, 4, 1});
        }
        for (std::int64_t stages : {2, 4}) b->Args({B, 4096, N, 32, stages, 2});
      }
    }
  }
  b->UseManualTime()->Unit(benchmark::kMicrosecond)->MinTime(0.1);
}

// Column splits per sample at the target shape, B 128 and 256 (the 2026-12-04
// run found 4 splits 9 % faster than the automatic 16 for fp32 at B 128), for
// the default layout and, with a bf16 bank, the tensor-core gather too.
void splits_args(benchmark::internal::Benchmark* b, bool bf16) {
  b->ArgNames({"B", "K", "N", "splits", "lanes", "stages", "ring"});
  for (std::int64_t B : {128, 256}) {
    for (std::int64_t splits : {4, 8, 12, 16, 24, 32}) {
      b->Args({B, 4096, 1281167, splits, 0, 0, 0});
      if (bf16) b->Args({B, 4096, 1281167, splits, 32, 2, 2});
    }
  }
  b->UseManualTime()->Unit(benchmark::kMicrosecond)->MinTime(0.1);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("npid_version", version());
  benchmark::AddCustomContext("cuda", cuda_status());
  if (gpu() != nullptr) {
    gpu()->copy_bytes_per_s = measure_copy_bandwidth(gpu()->ctx);
    const DeviceInfo& d = gpu()->ctx.device_info();
    benchmark::AddCustomContext("device", d.name);
    benchmark::AddCustomContext("copy_GBps", std::to_string(gpu()->copy_bytes_per_s / 1e9));
    std::fprintf(stderr, "device: %s, measured copy bandwidth %.0f GB/s (read + write)\n",
                 d.name.c_str(), gpu()->copy_bytes_per_s / 1e9);
  } else {
    benchmark::AddCustomContext("device", "none");
    std::fprintf(stderr, "%s: the GPU cases were NOT run (reported as skipped); only the CPU "
                         "reference case is timed.\n",
                 cuda_status().c_str());
  }
  benchmark::RegisterBenchmark("BM_DeviceCopy/1GiB", BM_DeviceCopy)
      ->UseManualTime()->Unit(benchmark::kMicrosecond)->MinTime(0.2);
  gpu_args(benchmark::RegisterBenchmark("BM_NceForwardBackward", BM_Nce, false, Sweep::kNone, DType::kFloat32));
  gpu_args(benchmark::RegisterBenchmark("BM_NceForwardBackward_bf16", BM_Nce, false, Sweep::kNone, DType::kBFloat16));
  gpu_args(benchmark::RegisterBenchmark("BM_NceForwardBackwardUpdate", BM_Nce, true, Sweep::kNone, DType::kFloat32));
  gpu_args(benchmark::RegisterBenchmark("BM_NceForwardBackwardUpdate_bf16", BM_Nce, true, Sweep::kNone,
                                        DType::kBFloat16));
  // The D <= 128 kernel's layouts and pipeline depths (Sweep::kLayout), fp32 and bf16.
  lanes_args(benchmark::RegisterBenchmark("BM_NceLayout", BM_Nce, false, Sweep::kLayout, DType::kFloat32), false);
  lanes_args(benchmark::RegisterBenchmark("BM_NceLayout_bf16", BM_Nce, false, Sweep::kLayout, DType::kBFloat16),
             true);
  splits_args(benchmark::RegisterBenchmark("BM_NceSplits", BM_Nce, false, Sweep::kSplits, DType::kFloat32), false);
  splits_args(benchmark::RegisterBenchmark("BM_NceSplits_bf16", BM_Nce, false, Sweep::kSplits, DType::kBFloat16),
              true);
  // The gather's ceiling at the target shape, fp32 and bf16 rows.
  for (DType storage : {DType::kFloat32, DType::kBFloat16}) {
    benchmark::RegisterBenchmark(storage == DType::kFloat32 ? "BM_GatherProbe" : "BM_GatherProbe_bf16",
                                 BM_GatherProbe, storage)
        ->ArgNames({"B", "K", "N"})
        ->Args({256, 4096, 50000})
        ->Args({256, 4096, 1281167})
        ->UseManualTime()->Unit(benchmark::kMicrosecond)->MinTime(0.1);
  }
  benchmark::RegisterBenchmark("BM_NceCpuReference/B:16/K:512/N:10000", BM_NceCpuReference)
      ->UseManualTime()->Unit(benchmark::kMillisecond);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

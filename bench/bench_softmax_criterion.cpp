// bench_softmax_criterion -- the full non-parametric softmax forward+backward
// (TF32 GEMMs) against cuBLAS's own TF32 GEMM rate at the same shapes,
// measured in the same binary and run. D = 128; B in {128, 256};
// N in {50,000; 1,281,167}; the bank in float32 and bfloat16; the default
// 32 MB workspace budget plus a budget sweep at the ImageNet shape.
//
// Counters:
//   TFLOPs         4*B*N*D / time (the two GEMMs' arithmetic; the softmax
//                  kernels' few FLOPs are not counted)
//   gemm_TFLOPs    the same FLOPs done by two plain cuBLAS TF32 GEMMs over the
//                  whole bank with the B x N logits materialized
//                  (S = f V^T, then S V), timed right before -- the "TF32 GEMM
//                  rate at the same shapes"
//   frac_gemm      TFLOPs / gemm_TFLOPs
//   chunk          rows per chunk chosen from the budget
// Without a device every case reports "skipped: no CUDA device".
#include <benchmark/benchmark.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <vector>

#include "core/check.h"
#include "cuda_events.h"
#include "core/context_impl.h"
#include "npid/npid.h"

using namespace npid;

namespace {

constexpr std::int64_t kDim = 128;

struct Gpu {
  Context ctx = Context::cuda();
};

Gpu* gpu() {
  static std::unique_ptr<Gpu> g = cuda_available() ? std::make_unique<Gpu>() : nullptr;
  return g.get();
}

using Events = bench::CudaEvents;

// Median time of the two plain TF32 GEMMs over the whole (fp32) bank.
double gemm_reference_seconds(Context& ctx, const Tensor& features, const Tensor& bank, std::int64_t B,
                              std::int64_t N) {
  Tensor s({B, N}, DType::kFloat32, ctx.device()), acc({B, kDim}, DType::kFloat32, ctx.device());
  cublasHandle_t h = cublas_handle(ctx);
  const float one = 1.f, zero = 0.f;
  Events ev;
  std::vector<double> t;
  for (int rep = 0; rep < 8; ++rep) {
    const double sec = ev.seconds(ctx.stream(), [&] {
      NPID_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(B),
                                     static_cast<int>(kDim), &one, bank.data(), CUDA_R_32F, static_cast<int>(kDim),
                                     features.data(), CUDA_R_32F, static_cast<int>(kDim), &zero, s.data(),
                                     CUDA_R_32F, static_cast<int>(N), CUBLAS_COMPUTE_32F_FAST_TF32,
                                     CUBLAS_GEMM_DEFAULT));
      NPID_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(kDim), static_cast<int>(B),
                                     static_cast<int>(N), &one, bank.data(), CUDA_R_32F, static_cast<int>(kDim),
                                     s.data(), CUDA_R_32F, static_cast<int>(N), &zero, acc.data(), CUDA_R_32F,
                                     static_cast<int>(kDim), CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT));
    });
    if (rep >= 2) t.push_back(sec);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Args: B, N, storage (0 = float32, 1 = bf16), budget in MiB, GEMM math
// (0 = TF32, the default; 1 = bf16, for a bf16 bank: SoftmaxMath::kBF16).
void BM_Softmax(benchmark::State& state) {
  if (gpu() == nullptr) {
    state.SkipWithError("skipped: no CUDA device");
    for (auto _ : state) {
    }
    return;
  }
  const std::int64_t B = state.range(0), N = state.range(1);
  const DType storage = state.range(2) ? DType::kBFloat16 : DType::kFloat32;
  Context& ctx = gpu()->ctx;
  Tensor features({B, kDim}, DType::kFloat32, ctx.device());
  Tensor bank({N, kDim}, storage, ctx.device()), bank32({N, kDim}, DType::kFloat32, ctx.device());
  bank_initialize(ctx, features, BankInit::kUnit, 2);
  bank_initialize(ctx, bank, BankInit::kUnit, 1);
  bank_initialize(ctx, bank32, BankInit::kUnit, 1);
  std::vector<std::int64_t> y(B);
  for (std::int64_t i = 0; i < B; ++i) y[i] = (i * 7919) % N;
  Tensor targets({B}, DType::kInt64, ctx.device());
  copy(ctx, targets, view(y.data(), {B}));
  Tensor loss({1}, DType::kFloat32, ctx.device()), grad({B, kDim}, DType::kFloat32, ctx.device());

  SoftmaxConfig cfg;
  cfg.temperature = 0.07f;
  cfg.validate_inputs = false;
  cfg.workspace_bytes = static_cast<std::size_t>(state.range(3)) << 20;
  cfg.math = state.range(4) != 0 ? SoftmaxMath::kBF16 : SoftmaxMath::kTF32;
  SoftmaxCriterion criterion(ctx, cfg, B, kDim, N, storage);
  const double gemm_s = gemm_reference_seconds(ctx, features, bank32, B, N);
  bank32 = Tensor();

  Events ev;
  double total = 0;
  for (auto _ : state) {
    const double s = ev.seconds(ctx.stream(), [&] { criterion.forward_backward({features, targets, bank}, {loss, grad}); });
    state.SetIterationTime(s);
    total += s;
  }
  const double flops = 4.0 * B * N * kDim;
  const double rate = flops * static_cast<double>(state.iterations()) / total;
  state.counters["TFLOPs"] = rate / 1e12;
  state.counters["gemm_TFLOPs"] = flops / gemm_s / 1e12;
  state.counters["frac_gemm"] = rate / (flops / gemm_s);
  state.counters["chunk"] = static_cast<double>(softmax_chunk_rows(cfg, B, kDim, N, storage));
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("npid_version", version());
  benchmark::AddCustomContext("cuda", cuda_status());
  if (gpu() != nullptr) {
    benchmark::AddCustomContext("device", gpu()->ctx.device_info().name);
  } else {
    std::fprintf(stderr, "%s: the GPU cases were NOT run (reported as skipped).\n", cuda_status().c_str());
  }
  auto* b = benchmark::RegisterBenchmark("BM_SoftmaxForwardBackward", BM_Softmax);
  b->ArgNames({"B", "N", "bf16", "budget_MiB", "bf16_math"});
  for (std::int64_t storage : {0, 1})
    for (std::int64_t B : {128, 256})
      for (std::int64_t N : {50000, 1281167}) b->Args({B, N, storage, 32, 0});
  // A bf16 bank with bf16 GEMMs (no staging pass), against the same TF32 GEMM rate.
  for (std::int64_t B : {128, 256})
    for (std::int64_t N : {50000, 1281167}) b->Args({B, N, 1, 32, 1});
  for (std::int64_t budget : {8, 16, 64, 256}) b->Args({256, 1281167, 0, budget, 0});
  b->UseManualTime()->Unit(benchmark::kMicrosecond)->MinTime(0.2);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

// bench_knn -- weighted kNN evaluation throughput:
//   BM_KnnClassifyGpu  the whole evaluation (top-k search + vote + accuracy)
//   BM_KnnTopkGpu      the tiled top-k search alone
//   BM_SimilarityGemm  baseline in the same binary: cuBLAS computing every
//                      query x key similarity in the same tiles, nothing else
//                      (the "within 2x of the GEMM" target compares to this)
//   BM_KnnClassifyCpu  the CPU reference at a small size
// Shapes: CIFAR (10,000 x 50,000) and ImageNet (50,000 x 1,281,167), D = 128,
// k = 200; fp32 similarities (tf32 = 1: TF32 tensor cores for the GEMMs).
#include <benchmark/benchmark.h>
#include <cublas_v2.h>

#include <chrono>
#include <cstdio>

#include "core/check.h"
#include "core/context_impl.h"
#include "bench_common.h"
#include "npid/npid.h"

using namespace npid;

namespace {

struct Problem {
  Tensor queries, keys, qlabels, klabels, values, indices;
};

Problem make(Context& ctx, std::int64_t Q, std::int64_t N, std::int64_t k) {
  const std::int64_t D = 128;
  Problem p;
  p.queries = Tensor({Q, D}, DType::kFloat32, ctx.device());
  p.keys = Tensor({N, D}, DType::kFloat32, ctx.device());
  // Unit rows from the bank initializer (cheap on any device).
  MemoryBank a(ctx, Q, D, BankInit::kUnit, 1), b(ctx, N, D, BankInit::kUnit, 2);
  copy(ctx, p.queries, a.view());
  copy(ctx, p.keys, b.view());
  std::vector<std::int64_t> ql(static_cast<std::size_t>(Q)), kl(static_cast<std::size_t>(N));
  for (std::int64_t i = 0; i < Q; ++i) ql[i] = i % 10;
  for (std::int64_t i = 0; i < N; ++i) kl[i] = (i * 7) % 10;
  p.qlabels = Tensor({Q}, DType::kInt64, ctx.device());
  p.klabels = Tensor({N}, DType::kInt64, ctx.device());
  copy(ctx, p.qlabels, view(ql.data(), {Q}));
  copy(ctx, p.klabels, view(kl.data(), {N}));
  p.values = Tensor({Q, k}, DType::kFloat32, ctx.device());
  p.indices = Tensor({Q, k}, DType::kInt64, ctx.device());
  return p;
}

template <typename Fn>
void timed(benchmark::State& state, Context& ctx, std::int64_t Q, Fn&& fn) {
  bench::CudaEvents ev;
  // One untimed call first (cuBLAS heuristics, first-touch allocations), and
  // nothing of the setup still queued when the clock starts.
  fn();
  NPID_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));
  double total = 0;
  for (auto _ : state) {
    const double s = ev.seconds(ctx.stream(), fn);
    state.SetIterationTime(s);
    total += s;
  }
  state.counters["queries_per_s"] = static_cast<double>(Q) * state.iterations() / total;
}

Context& gpu() {
  static Context ctx = Context::cuda();
  return ctx;
}

void BM_KnnClassifyGpu(benchmark::State& state) {
  if (bench::skip_without_gpu(state)) return;
  const std::int64_t Q = state.range(0), N = state.range(1), k = 200;
  Problem p = make(gpu(), Q, N, k);
  KnnConfig cfg;
  cfg.num_classes = 10;
  cfg.tf32 = state.range(2) != 0;
  timed(state, gpu(), Q, [&] { (void)knn_classify(gpu(), cfg, p.queries, p.qlabels, p.keys, p.klabels); });
}

void BM_KnnTopkGpu(benchmark::State& state) {
  if (bench::skip_without_gpu(state)) return;
  const std::int64_t Q = state.range(0), N = state.range(1), k = 200;
  Problem p = make(gpu(), Q, N, k);
  const bool tf32 = state.range(2) != 0;
  timed(state, gpu(), Q, [&] { knn_topk(gpu(), p.queries, p.keys, k, p.values, p.indices, tf32); });
}

// Every similarity, tile by tile (2048 queries x 8192 keys, as knn_topk's
// automatic tiles for these shapes), written and never read.
void BM_SimilarityGemm(benchmark::State& state) {
  if (bench::skip_without_gpu(state)) return;
  Context& ctx = gpu();
  const std::int64_t Q = state.range(0), N = state.range(1), D = 128, QT = 2048, T = 8192;
  Problem p = make(ctx, Q, N, 1);
  Tensor S({QT, T}, DType::kFloat32, ctx.device());
  cublasHandle_t h = cublas_handle(ctx);
  const cublasComputeType_t compute = state.range(2) ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const float one = 1.0f, zero = 0.0f;
  timed(state, ctx, Q, [&] {
    for (std::int64_t q0 = 0; q0 < Q; q0 += QT)
      for (std::int64_t c0 = 0; c0 < N; c0 += T) {
        const int qt = static_cast<int>(std::min(QT, Q - q0)), len = static_cast<int>(std::min(T, N - c0));
        NPID_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, len, qt, static_cast<int>(D), &one,
                                       p.keys.data_as<float>() + c0 * D, CUDA_R_32F, static_cast<int>(D),
                                       p.queries.data_as<float>() + q0 * D, CUDA_R_32F, static_cast<int>(D), &zero,
                                       S.data(), CUDA_R_32F, len, compute, CUBLAS_GEMM_DEFAULT));
      }
  });
  state.counters["TFLOPs"] = benchmark::Counter(2.0 * Q * N * D * state.iterations() / 1e12,
                                                benchmark::Counter::kIsRate);
}

void BM_KnnClassifyCpu(benchmark::State& state) {
  Context ctx = Context::cpu();
  const std::int64_t Q = 500, N = 10000, k = 200;
  Problem p = make(ctx, Q, N, k);
  KnnConfig cfg;
  cfg.num_classes = 10;
  for (auto _ : state) benchmark::DoNotOptimize(knn_classify(ctx, cfg, p.queries, p.qlabels, p.keys, p.klabels).top1);
  state.counters["queries_per_s"] = benchmark::Counter(static_cast<double>(Q) * state.iterations(),
                                                       benchmark::Counter::kIsRate);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  bench::report_cuda();
  for (auto* fn : {&BM_KnnClassifyGpu, &BM_KnnTopkGpu, &BM_SimilarityGemm}) {
    const char* name = fn == &BM_KnnClassifyGpu ? "BM_KnnClassifyGpu" : fn == &BM_KnnTopkGpu ? "BM_KnnTopkGpu"
                                                                                             : "BM_SimilarityGemm";
    benchmark::RegisterBenchmark(name, *fn)
        ->ArgNames({"Q", "N", "tf32"})
        ->Args({10000, 50000, 0})
        ->Args({10000, 50000, 1})
        ->Args({50000, 1281167, 0})
        ->Args({50000, 1281167, 1})
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond)
        ->Iterations(3);
  }
  benchmark::RegisterBenchmark("BM_KnnClassifyCpu", BM_KnnClassifyCpu)->Unit(benchmark::kMillisecond)->Iterations(2);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

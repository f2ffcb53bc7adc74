// kNN on CUDA against the CPU reference: values within fp32 GEMM rounding,
// indices where the values are unique; massive exact ties (radix-select cut
// with index order), k = 1, k = N, k = 1024, N < chunk, queries not a
// multiple of the tile, bf16 keys, forced small tiles; the vote.
#include <cmath>

#include "common/bf16.h"
#include "common/test_util.h"
#include "knn.h"

using namespace npid;
using test::to_device;
using test::to_host;

namespace {

struct Run {
  std::vector<float> values;
  std::vector<std::int64_t> indices;
};

Run gpu_topk(Context& gpu, const std::vector<float>& q, const std::vector<float>& keys, std::int64_t Q, std::int64_t N,
             std::int64_t D, std::int64_t k, std::int64_t query_tile, std::int64_t key_chunk) {
  Tensor qd = to_device(gpu, q, {Q, D}), kd = to_device(gpu, keys, {N, D});
  Tensor v({Q, k}, DType::kFloat32, gpu.device()), i({Q, k}, DType::kInt64, gpu.device());
  KnnTopkProblem p;
  p.queries = qd.data_as<const float>();
  p.keys = kd.data();
  p.num_queries = Q;
  p.num_keys = N;
  p.dim = D;
  p.k = k;
  p.query_tile = query_tile;
  p.key_chunk = key_chunk;
  p.values = v.data_as<float>();
  p.indices = i.data_as<std::int64_t>();
  launch_knn_topk(gpu, p);
  return {to_host<float>(gpu, v), to_host<std::int64_t>(gpu, i)};
}

// The CPU reference itself (kernels/knn.h), so that k may pass the public
// limit by the one extra column compare() wants (k = 1024 + 1).
Run cpu_topk(const std::vector<float>& q, const std::vector<float>& keys, std::int64_t Q, std::int64_t N, std::int64_t D,
             std::int64_t k) {
  Run r{std::vector<float>(Q * k), std::vector<std::int64_t>(Q * k)};
  KnnTopkProblem p;
  p.queries = q.data();
  p.keys = keys.data();
  p.num_queries = Q;
  p.num_keys = N;
  p.dim = D;
  p.k = k;
  p.values = r.values.data();
  p.indices = r.indices.data();
  knn_topk_cpu(p, 2);
  return r;
}

// Values close; indices equal wherever the CPU value is not within tol of a
// neighbour (a near-tie may legitimately swap order). `c` holds kr >= k
// columns: with kr = k + 1 the neighbour just past the cut is known too, so a
// near-tie across the k-th place is not held to one index either.
void compare(const Run& g, const Run& c, std::int64_t Q, std::int64_t k, std::int64_t kr, double tol) {
  std::int64_t checked = 0;
  for (std::int64_t i = 0; i < Q; ++i) {
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int64_t e = i * k + j, ec = i * kr + j;
      REQUIRE(std::fabs(g.values[e] - c.values[ec]) <= tol);
      const bool near_prev = j > 0 && std::fabs(c.values[ec] - c.values[ec - 1]) <= 2 * tol;
      const bool near_next = j + 1 < kr && std::fabs(c.values[ec] - c.values[ec + 1]) <= 2 * tol;
      if (!near_prev && !near_next) {
        REQUIRE(g.indices[e] == c.indices[ec]);
        ++checked;
      }
    }
  }
  REQUIRE(checked > 0);  // the comparison of indices was not vacuous
}

}  // namespace

TEST_CASE("knn_topk: CUDA matches the CPU reference across tilings", "[gpu][knn][heavy]") {
  Context gpu = Context::cuda();
  const std::int64_t D = 128;
  struct Case { std::int64_t Q, N, k, qt, chunk; };
  const Case cases[] = {
      {5, 700, 1, 0, 0},        // N < chunk, k = 1
      {3, 64, 64, 0, 0},        // k = N
      {37, 5000, 200, 16, 777}, // queries not a multiple of the tile, odd chunks
      {300, 20000, 1024, 128, 4096},  // k = 1024: the union buffer full
      {2100, 50000, 200, 0, 0}, // CIFAR-like, automatic tiles (2 query tiles)
      {7, 3000, 500, 4, 97},    // chunks smaller than k: the first merges hold fewer than k candidates
  };
  for (const Case& t : cases) {
    INFO("Q=" << t.Q << " N=" << t.N << " k=" << t.k << " tile=" << t.qt << " chunk=" << t.chunk);
    const auto q = test::random_unit_rows(t.Q, D, 3), keys = test::random_unit_rows(t.N, D, 4);
    // One reference column past k: values 1 ulp apart straddle the cut (measured
    // on these seeds), and the GPU may round them the other way.
    const std::int64_t kr = std::min(t.k + 1, t.N);
    compare(gpu_topk(gpu, q, keys, t.Q, t.N, D, t.k, t.qt, t.chunk), cpu_topk(q, keys, t.Q, t.N, D, kr), t.Q, t.k, kr,
            2e-6);
  }
}

TEST_CASE("knn_topk: CUDA breaks massive exact ties by key index", "[gpu][knn]") {
  Context gpu = Context::cuda();
  // 4 distinct rows repeated: every chunk is one big tie per value, so the
  // radix-select cut lands inside a run of equal keys.
  const std::int64_t Q = 3, N = 9000, D = 4, k = 300;
  // Entries with few significant bits (exact in TF32 too): every product and
  // every partial sum is exact, so each similarity is the same in any order.
  const std::vector<float> rows = {1, 0, 0, 0, 0.5f, 0.5f, 0.5f, 0.5f, 0, 0, 1, 0, 0, 0.75f, 0.5f, 0.25f};
  std::vector<float> keys(N * D);
  for (std::int64_t n = 0; n < N; ++n) std::copy_n(rows.begin() + (n % 4) * D, D, keys.begin() + n * D);
  const std::vector<float> q = {1, 0, 0, 0, 0, 1, 0, 0, 0.5f, 0.5f, 0.5f, 0.5f};
  for (std::int64_t chunk : {0LL, 1000LL, 2500LL}) {
    INFO("chunk=" << chunk);
    const Run g = gpu_topk(gpu, q, keys, Q, N, D, k, 2, chunk), c = cpu_topk(q, keys, Q, N, D, k);
    CHECK(g.indices == c.indices);  // exact: every similarity is exact
    CHECK(g.values == c.values);
  }
}

TEST_CASE("knn_topk and knn_classify: CUDA with bf16 keys and the vote equal the CPU", "[gpu][knn]") {
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  const std::int64_t Q = 500, N = 10000, D = 128, C = 10;
  const auto q = test::random_unit_rows(Q, D, 7), keys = test::random_unit_rows(N, D, 8);
  std::vector<bf16> kb(keys.size());
  for (std::size_t e = 0; e < keys.size(); ++e) kb[e] = float_to_bf16(keys[e]);
  const TensorView kb_host(kb.data(), DType::kBFloat16, {N, D}, Device::cpu());
  Tensor kb_dev({N, D}, DType::kBFloat16, gpu.device());
  copy(gpu, kb_dev, kb_host);
  std::vector<std::int64_t> kl(N), ql(Q);
  for (std::int64_t n = 0; n < N; ++n) kl[n] = (n * 7) % C;
  for (std::int64_t i = 0; i < Q; ++i) ql[i] = i % C;
  Tensor qd = to_device(gpu, q, {Q, D}), kld = to_device(gpu, kl, {N}), qld = to_device(gpu, ql, {Q});
  KnnConfig cfg;
  cfg.num_classes = C;
  const KnnResult g = knn_classify(gpu, cfg, qd, qld, kb_dev, kld);
  const KnnResult c = knn_classify(cpu, cfg, view(q.data(), {Q, D}), view(ql.data(), {Q}), kb_host, view(kl.data(), {N}));
  // Random data: votes are near-ties only rarely; allow 1% disagreement.
  std::int64_t differ = 0;
  for (std::int64_t i = 0; i < Q; ++i) differ += g.predictions[i] != c.predictions[i];
  CHECK(differ <= Q / 100);
  CHECK(std::fabs(g.top1 - c.top1) <= 0.01);
}

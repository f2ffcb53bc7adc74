// kNN on the CPU reference: top-k against brute force in double, ties by
// smaller index, k = 1 and k = N, bf16 keys, the weighted vote by hand, and
// accuracy on separable clusters; argument errors.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/bf16.h"
#include "common/test_util.h"

using namespace npid;

namespace {

struct Ref {
  std::vector<double> values;
  std::vector<std::int64_t> indices;
};

Ref brute_force(const std::vector<float>& q, const std::vector<float>& keys, std::int64_t Q, std::int64_t N,
                std::int64_t D, std::int64_t k) {
  Ref r;
  for (std::int64_t i = 0; i < Q; ++i) {
    std::vector<std::pair<double, std::int64_t>> s;
    for (std::int64_t n = 0; n < N; ++n) {
      double dot = 0;
      for (std::int64_t d = 0; d < D; ++d) dot += double(q[i * D + d]) * keys[n * D + d];
      s.push_back({-dot, n});
    }
    std::sort(s.begin(), s.end());
    for (std::int64_t j = 0; j < k; ++j) {
      r.values.push_back(-s[j].first);
      r.indices.push_back(s[j].second);
    }
  }
  return r;
}

}  // namespace

TEST_CASE("knn_topk: CPU reference equals brute force (k = 1, 7, N)", "[knn]") {
  Context ctx = Context::cpu();
  const std::int64_t Q = 9, N = 300, D = 16;
  const auto q = test::random_unit_rows(Q, D, 1), keys = test::random_unit_rows(N, D, 2);
  for (std::int64_t k : {1LL, 7LL, 300LL}) {
    std::vector<float> v(Q * k);
    std::vector<std::int64_t> idx(Q * k);
    knn_topk(ctx, view(q.data(), {Q, D}), view(keys.data(), {N, D}), k, view(v.data(), {Q, k}), view(idx.data(), {Q, k}));
    const Ref r = brute_force(q, keys, Q, N, D, k);
    INFO("k=" << k);
    for (std::int64_t e = 0; e < Q * k; ++e) {
      REQUIRE(v[e] == Approx(r.values[e]).margin(1e-6));
      if (e % k > 0) REQUIRE(v[e] <= v[e - 1]);  // sorted
    }
    REQUIRE(idx == r.indices);  // random data: no ties
  }
}

TEST_CASE("knn_topk: ties go to the smaller key index; bf16 keys", "[knn]") {
  Context ctx = Context::cpu();
  const std::int64_t N = 12, D = 4, k = 5;
  // Keys 0..11 cycle through 3 distinct unit rows: many exact ties.
  const std::vector<float> rows = {1, 0, 0, 0, 0.6f, 0.8f, 0, 0, 0, 0, 1, 0};
  std::vector<float> keys(N * D);
  for (std::int64_t n = 0; n < N; ++n) std::copy_n(rows.begin() + (n % 3) * D, D, keys.begin() + n * D);
  const std::vector<float> q = {1, 0, 0, 0};
  std::vector<float> v(k);
  std::vector<std::int64_t> idx(k);
  knn_topk(ctx, view(q.data(), {1, D}), view(keys.data(), {N, D}), k, view(v.data(), {1, k}), view(idx.data(), {1, k}));
  REQUIRE(idx == std::vector<std::int64_t>{0, 3, 6, 9, 1});
  REQUIRE(v[0] == 1.0f);
  REQUIRE(v[4] == Approx(0.6f));

  // bf16 keys: the fp32 result on the rounded keys.
  const auto q2 = test::random_unit_rows(3, 8, 5), k2 = test::random_unit_rows(50, 8, 6);
  std::vector<bf16> kb(k2.size());
  std::vector<float> widened(k2.size());
  for (std::size_t e = 0; e < k2.size(); ++e) {
    kb[e] = float_to_bf16(k2[e]);
    widened[e] = bf16_to_float(kb[e]);
  }
  const TensorView bank(kb.data(), DType::kBFloat16, {50, 8}, Device::cpu());
  std::vector<float> vb(3 * 4), vf(3 * 4);
  std::vector<std::int64_t> ib(3 * 4), iff(3 * 4);
  knn_topk(ctx, view(q2.data(), {3, 8}), bank, 4, view(vb.data(), {3, 4}), view(ib.data(), {3, 4}));
  knn_topk(ctx, view(q2.data(), {3, 8}), view(widened.data(), {50, 8}), 4, view(vf.data(), {3, 4}), view(iff.data(), {3, 4}));
  REQUIRE(vb == vf);
  REQUIRE(ib == iff);
}

TEST_CASE("knn_classify: the weighted vote by hand, top-5 and per-class accuracy", "[knn]") {
  Context ctx = Context::cpu();
  // Keys: unit vectors at angles; labels chosen so that the vote needs the
  // weights: two far neighbours of class 1 vs one close neighbour of class 0.
  const std::int64_t D = 2;
  auto unit = [](double a) { return std::vector<float>{float(std::cos(a)), float(std::sin(a))}; };
  std::vector<float> keys;
  for (double a : {0.0, 0.5, 0.55, 2.0, 2.5, 3.0, -2.0, 1.5}) {
    const auto u = unit(a);
    keys.insert(keys.end(), u.begin(), u.end());
  }
  std::vector<std::int64_t> key_labels = {0, 1, 1, 2, 3, 4, 5, 6};
  const auto q = unit(0.0);
  std::vector<std::int64_t> qlabel = {1};
  KnnConfig cfg;
  cfg.k = 3;
  cfg.sigma = 0.1f;
  // sims 1, cos .5 = .8776, cos .55 = .8525: class 0 weight e^10 = 22026,
  // class 1: e^8.776 + e^8.525 = 6487 + 5047 = 11534 -> predicts 0.
  KnnResult r = knn_classify(ctx, cfg, view(q.data(), {1, D}), view(qlabel.data(), {1}), view(keys.data(), {8, D}),
                             view(key_labels.data(), {8}));
  REQUIRE(r.predictions[0] == 0);
  REQUIRE(r.top1 == 0.0);
  REQUIRE(r.top5 == 1.0);
  REQUIRE(r.per_class_top1.size() == 7);
  REQUIRE(r.per_class_top1[1] == 0.0);
  REQUIRE(std::isnan(r.per_class_top1[0]));
  // A large sigma flattens the weights: two votes beat one.
  cfg.sigma = 100.0f;
  r = knn_classify(ctx, cfg, view(q.data(), {1, D}), view(qlabel.data(), {1}), view(keys.data(), {8, D}),
                   view(key_labels.data(), {8}));
  REQUIRE(r.predictions[0] == 1);
  REQUIRE(r.top1 == 1.0);
  // Top-5 misses when the true class has no neighbour and 5+ classes tie at
  // 0 before it (ranked by class index): true class 6, k = 1.
  cfg.k = 1;
  qlabel = {6};
  r = knn_classify(ctx, cfg, view(q.data(), {1, D}), view(qlabel.data(), {1}), view(keys.data(), {8, D}),
                   view(key_labels.data(), {8}));
  REQUIRE(r.top5 == 0.0);
  qlabel = {3};  // classes 1, 2 tie with 3 at zero and come first: rank 3 -> top-5 hit
  r = knn_classify(ctx, cfg, view(q.data(), {1, D}), view(qlabel.data(), {1}), view(keys.data(), {8, D}),
                   view(key_labels.data(), {8}));
  REQUIRE(r.top5 == 1.0);

  // A small sigma: exp(sim / 0.005) = exp(200) overflows fp32, which tied
  // every voting class at infinity (the smallest class won). The vote
  // subtracts the top similarity first: the query at angle 0.5 has two
  // class-1 neighbours (sims 1 and cos 0.05) before class 0 (cos 0.5).
  cfg.k = 3;
  cfg.sigma = 0.005f;
  const auto q2 = unit(0.5);
  qlabel = {1};
  r = knn_classify(ctx, cfg, view(q2.data(), {1, D}), view(qlabel.data(), {1}), view(keys.data(), {8, D}),
                   view(key_labels.data(), {8}));
  REQUIRE(r.predictions[0] == 1);
  REQUIRE(r.top1 == 1.0);
}

TEST_CASE("knn_classify: separable clusters are classified perfectly; query blocks agree", "[knn]") {
  Context ctx = Context::cpu();
  const std::int64_t C = 5, per = 40, D = 8, N = C * per, Q = 37;
  auto noise = test::random_unit_rows(N + Q, D, 9);
  std::vector<float> keys(N * D), q(Q * D);
  std::vector<std::int64_t> kl(N), ql(Q);
  auto make = [&](float* out, std::int64_t row, std::int64_t c) {
    double norm = 0;
    for (std::int64_t d = 0; d < D; ++d) {
      out[d] = (d == c ? 3.0f : 0.0f) + 0.3f * noise[row * D + d];
      norm += out[d] * out[d];
    }
    for (std::int64_t d = 0; d < D; ++d) out[d] = float(out[d] / std::sqrt(norm));
  };
  for (std::int64_t n = 0; n < N; ++n) make(&keys[n * D], n, kl[n] = n % C);
  for (std::int64_t i = 0; i < Q; ++i) make(&q[i * D], N + i, ql[i] = (i * 3) % C);
  KnnConfig cfg;
  cfg.k = 20;
  const KnnResult a = knn_classify(ctx, cfg, view(q.data(), {Q, D}), view(ql.data(), {Q}), view(keys.data(), {N, D}),
                                   view(kl.data(), {N}));
  REQUIRE(a.top1 == 1.0);
  REQUIRE(a.top5 == 1.0);
  for (double pc : a.per_class_top1) REQUIRE(pc == 1.0);
  cfg.query_block = 5;
  const KnnResult b = knn_classify(ctx, cfg, view(q.data(), {Q, D}), view(ql.data(), {Q}), view(keys.data(), {N, D}),
                                   view(kl.data(), {N}));
  REQUIRE(b.predictions == a.predictions);
}

TEST_CASE("kNN rejects bad arguments naming them", "[knn][errors]") {
  Context ctx = Context::cpu();
  const auto q = test::random_unit_rows(2, 4, 1), keys = test::random_unit_rows(10, 4, 2);
  std::vector<float> v(2 * 11, 5.0f);
  std::vector<std::int64_t> idx(2 * 11);
  const auto kind = ErrorKind::kInvalidArgument;
  test::require_error([&] { knn_topk(ctx, view(q.data(), {2, 4}), view(keys.data(), {10, 4}), 11, view(v.data(), {2, 11}), view(idx.data(), {2, 11})); },
                      kind, {"knn_topk", "'k'", "N = 10", "got 11"});
  test::require_error([&] { knn_topk(ctx, view(q.data(), {2, 4}), view(keys.data(), {5, 8}), 1, view(v.data(), {2, 1}), view(idx.data(), {2, 1})); },
                      kind, {"knn_topk", "keys", "(N, 4)", "(5, 8)"});
  std::vector<float> big(2000 * 4, 0.5f), bv(2 * 1025);
  std::vector<std::int64_t> bi(2 * 1025);
  test::require_error([&] { knn_topk(ctx, view(q.data(), {2, 4}), view(big.data(), {2000, 4}), 1025, view(bv.data(), {2, 1025}), view(bi.data(), {2, 1025})); },
                      kind, {"knn_topk", "1024", "got 1025"});
  for (float x : v) REQUIRE(x == 5.0f);
  std::vector<std::int64_t> kl(10, 0), ql = {0, 3};
  KnnConfig cfg;
  cfg.k = 3;
  cfg.num_classes = 3;
  test::require_error([&] { knn_classify(ctx, cfg, view(q.data(), {2, 4}), view(ql.data(), {2}), view(keys.data(), {10, 4}), view(kl.data(), {10})); },
                      kind, {"knn_classify", "query_labels"});
  cfg.sigma = 0.0f;
  test::require_error([&] { knn_classify(ctx, cfg, view(q.data(), {2, 4}), view(ql.data(), {2}), view(keys.data(), {10, 4}), view(kl.data(), {10})); },
                      kind, {"knn_classify", "config.sigma"});
}

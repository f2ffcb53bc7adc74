// Linear evaluation on the CPU reference: loss gradients by finite
// differences (softmax and hinge), accuracy on separable blobs, invariance to
// feature scale and offset (standardization), the held-out choice on ties,
// evaluate() with fewer train images than k, argument errors.
#include <cmath>

#include "common/test_util.h"
#include "linear.h"

using namespace npid;

namespace {

struct Blobs {
  std::vector<float> xtr, xte;
  std::vector<std::int64_t> ytr, yte;
  std::int64_t D = 6, C = 4;
  Blobs(std::int64_t ntr, std::int64_t nte, float spread, std::uint64_t seed) {
    const auto noise = test::random_unit_rows(ntr + nte, D, seed);
    auto fill = [&](std::vector<float>& x, std::vector<std::int64_t>& y, std::int64_t n, std::int64_t off) {
      for (std::int64_t i = 0; i < n; ++i) {
        const std::int64_t c = (i * 5 + off) % C;
        y.push_back(c);
        for (std::int64_t d = 0; d < D; ++d)
          x.push_back((d == c ? 2.0f : 0.0f) + (d == C ? 0.5f * c : 0.0f) + spread * noise[(off + i) * D + d]);
      }
    };
    fill(xtr, ytr, ntr, 0);
    fill(xte, yte, nte, ntr);
  }
};

double mean_loss(const LinearProblem& p, const std::vector<float>& params) {
  std::vector<float> g(params.size()), s(static_cast<std::size_t>(p.n * p.classes)), rl(p.n), cr(p.n);
  LinearProblem q = p;
  q.scores = s.data();
  q.row_loss = rl.data();
  q.correct = cr.data();
  linear_forward_backward_cpu(q, params.data(), g.data(), 1);
  double sum = 0;
  for (float v : rl) sum += v;
  return sum / p.n;
}

}  // namespace

TEST_CASE("linear classifier: gradients match finite differences (softmax, hinge)", "[linear]") {
  const Blobs b(24, 0, 0.8f, 3);
  const std::int64_t n = 24, D = b.D, C = b.C, P = C * D + C;
  for (LinearLoss loss : {LinearLoss::kSoftmax, LinearLoss::kHinge}) {
    INFO(to_string(loss));
    std::vector<float> params = test::random_unit_rows(1, P, 11);
    for (float& v : params) v *= 0.7f;
    std::vector<float> grads(P), s(n * C), rl(n), cr(n);
    LinearProblem p;
    p.x = b.xtr.data();
    p.y = b.ytr.data();
    p.n = n;
    p.dim = D;
    p.classes = C;
    p.loss = loss;
    p.scores = s.data();
    p.row_loss = rl.data();
    p.correct = cr.data();
    linear_forward_backward_cpu(p, params.data(), grads.data(), 2);
    const float eps = 1e-3f;
    int checked = 0;
    for (std::int64_t e = 0; e < P; ++e) {
      std::vector<float> plus = params, minus = params;
      plus[e] += eps;
      minus[e] -= eps;
      const double fd = (mean_loss(p, plus) - mean_loss(p, minus)) / (2 * eps);
      // The hinge is piecewise linear: skip an entry whose step crosses a kink
      // (one-sided differences disagree).
      const double right = (mean_loss(p, plus) - mean_loss(p, params)) / eps;
      const double left = (mean_loss(p, params) - mean_loss(p, minus)) / eps;
      if (std::fabs(right - left) > 1e-2) continue;
      REQUIRE(grads[e] == Approx(fd).margin(2e-3));
      ++checked;
    }
    REQUIRE(checked > P * 3 / 4);
  }
}

TEST_CASE("linear_eval: separable blobs are learned; standardization removes scale and offset", "[linear]") {
  Context ctx = Context::cpu();
  const Blobs b(400, 200, 0.5f, 5);
  const std::int64_t D = b.D;
  for (LinearLoss loss : {LinearLoss::kHinge, LinearLoss::kSoftmax}) {
    INFO(to_string(loss));
    LinearEvalConfig cfg;
    cfg.loss = loss;
    cfg.iterations = 150;
    const LinearEvalResult r = linear_eval(ctx, cfg, view(b.xtr.data(), {400, D}), view(b.ytr.data(), {400}),
                                           view(b.xte.data(), {200, D}), view(b.yte.data(), {200}));
    REQUIRE(r.holdout_accuracy.size() == cfg.l2_grid.size());
    REQUIRE(r.test_accuracy >= 0.97);
    REQUIRE(r.train_accuracy >= 0.97);
    REQUIRE(r.weights.size() == static_cast<std::size_t>(4 * D));
    // Scaled by 1000 and shifted: the same standardized problem.
    std::vector<float> xtr = b.xtr, xte = b.xte;
    for (float& v : xtr) v = 1000.0f * v + 37.0f;
    for (float& v : xte) v = 1000.0f * v + 37.0f;
    const LinearEvalResult s = linear_eval(ctx, cfg, view(xtr.data(), {400, D}), view(b.ytr.data(), {400}),
                                           view(xte.data(), {200, D}), view(b.yte.data(), {200}));
    REQUIRE(s.test_accuracy == Approx(r.test_accuracy).margin(0.011));
    REQUIRE(s.feature_std[0] == Approx(1000.0f * r.feature_std[0]).epsilon(1e-3));
  }
}

TEST_CASE("linear_eval: held-out ties pick the smallest strength whatever the grid's order", "[linear]") {
  Context ctx = Context::cpu();
  const Blobs b(200, 40, 0.05f, 3);  // far apart: every strength of the grid is perfect on the held-out part
  LinearEvalConfig cfg;
  cfg.iterations = 100;
  for (const std::vector<float>& grid : {std::vector<float>{1e-2f, 1e-4f, 1e-3f}, std::vector<float>{1e-4f, 1e-2f}}) {
    cfg.l2_grid = grid;
    const LinearEvalResult r = linear_eval(ctx, cfg, view(b.xtr.data(), {200, b.D}), view(b.ytr.data(), {200}),
                                           view(b.xte.data(), {40, b.D}), view(b.yte.data(), {40}));
    for (double a : r.holdout_accuracy) REQUIRE(a == r.holdout_accuracy[0]);
    REQUIRE(r.best_l2 == 1e-4f);
  }
}

TEST_CASE("evaluate: fewer train images than k lets every one vote instead of failing", "[linear][knn]") {
  Context ctx = Context::cpu();
  ResNetConfig rc;
  rc.width = 4;
  rc.image_size = 8;
  rc.embedding_dim = 16;
  SyntheticConfig sc;
  sc.count = 50;
  sc.image_size = 8;
  const ImageSet train = make_synthetic(sc);
  sc.count = 20;
  sc.seed = 7;
  const ImageSet test = make_synthetic(sc);
  ResNet18 net(ctx, rc, 16, 1);
  EvalConfig ec;  // k = 200 > 50
  ec.linear = false;
  const EvalReport r = evaluate(ctx, ec, net, train, test);
  REQUIRE(r.knn_recompute.has_value());
  REQUIRE(r.knn_recompute->predictions.size() == 20);
  // With all 50 voting, the result is kNN with k = 50.
  ec.knn.k = 50;
  const EvalReport r50 = evaluate(ctx, ec, net, train, test);
  REQUIRE(r50.knn_recompute->predictions == r.knn_recompute->predictions);
}

TEST_CASE("linear_eval rejects bad arguments naming them", "[linear][errors]") {
  Context ctx = Context::cpu();
  const Blobs b(20, 10, 0.5f, 1);
  LinearEvalConfig cfg;
  cfg.l2_grid.clear();
  const auto kind = ErrorKind::kInvalidArgument;
  auto run = [&] {
    linear_eval(ctx, cfg, view(b.xtr.data(), {20, 6}), view(b.ytr.data(), {20}), view(b.xte.data(), {10, 6}),
                view(b.yte.data(), {10}));
  };
  test::require_error(run, kind, {"linear_eval", "config.l2_grid"});
  cfg = LinearEvalConfig();
  cfg.holdout = 1.0f;
  test::require_error(run, kind, {"linear_eval", "config.holdout", "got 1"});
  cfg = LinearEvalConfig();
  cfg.num_classes = 3;
  test::require_error(run, kind, {"linear_eval", "train_labels", "[0, 3)", "got 3"});
  cfg = LinearEvalConfig();
  test::require_error([&] { linear_eval(ctx, cfg, view(b.xtr.data(), {20, 6}), view(b.ytr.data(), {20}), view(b.xte.data(), {12, 5}), view(b.yte.data(), {12})); },
                      kind, {"linear_eval", "test_features", "(12, 6)"});
}

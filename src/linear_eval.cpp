// linear_eval: standardization, held-out grid over l2, refit, accuracy.
#include "npid/linear_eval.h"

#include <cublas_v2.h>

#include <algorithm>
#include <cmath>

#include "augment.h"  // epoch_permutation_cpu: the held-out split
#include "core/args.h"
#include "core/check.h"
#include "core/context_impl.h"
#include "linear.h"
#include "npid/error.h"
#include "npid/knn.h"
#include "npid/resnet.h"

namespace npid {

const char* to_string(LinearLoss loss) noexcept {
  return loss == LinearLoss::kHinge ? "hinge" : "softmax";
}

namespace {

constexpr const char* kOp = "linear_eval";

struct HostSplit {
  std::vector<float> x;  // (n, D)
  std::vector<std::int64_t> y;
  std::int64_t n = 0;
};

// Rows of `src` listed in `rows`.
HostSplit gather(const std::vector<float>& x, const std::vector<std::int64_t>& y, std::int64_t D,
                 const std::vector<std::int64_t>& rows) {
  HostSplit s;
  s.n = static_cast<std::int64_t>(rows.size());
  s.x.resize(rows.size() * static_cast<std::size_t>(D));
  s.y.resize(rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    std::copy_n(x.begin() + rows[i] * D, D, s.x.begin() + static_cast<std::int64_t>(i) * D);
    s.y[i] = y[rows[i]];
  }
  return s;
}

// Largest eigenvalue of [X 1]^T [X 1] / n by power iteration (the curvature
// bound that sets the step).
double curvature(const HostSplit& s, std::int64_t D) {
  std::vector<double> v(static_cast<std::size_t>(D) + 1, 1.0), w(v.size());
  double lambda = 1.0;
  for (int it = 0; it < 30; ++it) {
    std::fill(w.begin(), w.end(), 0.0);
    for (std::int64_t i = 0; i < s.n; ++i) {
      double dot = v[D];
      for (std::int64_t d = 0; d < D; ++d) dot += s.x[i * D + d] * v[d];
      for (std::int64_t d = 0; d < D; ++d) w[d] += dot * s.x[i * D + d];
      w[D] += dot;
    }
    double norm = 0;
    for (double e : w) norm += e * e;
    norm = std::sqrt(norm);
    if (norm == 0) return 1.0;
    lambda = norm / s.n;
    for (std::size_t d = 0; d < v.size(); ++d) v[d] = w[d] / norm;
  }
  return lambda;
}

struct Fitter {
  Context& ctx;
  const LinearEvalConfig& cfg;
  std::int64_t D, C;

  // Device copies of one split and the scratch of a pass.
  struct Data {
    Tensor x, y, scores, row_loss, correct;
    std::int64_t n = 0;
  };
  Data upload(const HostSplit& s) const {
    Data d;
    d.n = s.n;
    d.x = Tensor({std::max<std::int64_t>(s.n, 1), D}, DType::kFloat32, ctx.device());
    d.y = Tensor({std::max<std::int64_t>(s.n, 1)}, DType::kInt64, ctx.device());
    if (s.n > 0) {
      copy(ctx, TensorView(d.x.data(), DType::kFloat32, {s.n, D}, ctx.device()), view(s.x.data(), {s.n, D}));
      copy(ctx, TensorView(d.y.data(), DType::kInt64, {s.n}, ctx.device()), view(s.y.data(), {s.n}));
    }
    d.scores = Tensor({std::max<std::int64_t>(s.n, 1), C}, DType::kFloat32, ctx.device());
    d.row_loss = Tensor({std::max<std::int64_t>(s.n, 1)}, DType::kFloat32, ctx.device());
    d.correct = Tensor({std::max<std::int64_t>(s.n, 1)}, DType::kFloat32, ctx.device());
    return d;
  }
  LinearProblem problem(const Data& d) const {
    LinearProblem p;
    p.x = d.x.data_as<const float>();
    p.y = d.y.data_as<const std::int64_t>();
    p.n = d.n;
    p.dim = D;
    p.classes = C;
    p.loss = cfg.loss;
    p.scores = d.scores.data_as<float>();
    p.row_loss = d.row_loss.data_as<float>();
    p.correct = d.correct.data_as<float>();
    return p;
  }
  // Fraction of rows classified correctly with `params`.
  double accuracy(const Data& d, const Tensor& params, Tensor& scratch) const {
    if (d.n == 0) return std::nan("");
    linear_forward_backward(ctx, problem(d), params.data_as<const float>(), scratch.data_as<float>());
    std::vector<float> correct(static_cast<std::size_t>(d.n));
    copy(ctx, view(correct.data(), {d.n}), TensorView(d.correct.data(), DType::kFloat32, {d.n}, ctx.device()));
    double hits = 0;
    for (float c : correct) hits += c;
    return hits / d.n;
  }
  Tensor fit(const Data& d, double lipschitz, float l2) const {
    const std::int64_t P = C * D + C;
    Tensor params({P}, DType::kFloat32, ctx.device()), grads({P}, DType::kFloat32, ctx.device());
    fill_zero(ctx, params);
    SgdConfig sgd;
    sgd.momentum = 0.9f;
    sgd.weight_decay = 0.0f;  // l2 on W only, added below
    sgd.nesterov = true;
    Sgd opt(ctx, sgd, P);
    const double lr0 = 1.0 / (lipschitz * (cfg.loss == LinearLoss::kSoftmax ? 0.5 : 1.0) + l2);
    const LinearProblem p = problem(d);
    for (std::int64_t t = 0; t < cfg.iterations; ++t) {
      linear_forward_backward(ctx, p, params.data_as<const float>(), grads.data_as<float>());
      if (l2 > 0.0f) {
        if (ctx.is_cuda()) {
          DeviceGuard guard(ctx.device());
          NPID_CUBLAS_CHECK(cublasSaxpy(cublas_handle(ctx), static_cast<int>(C * D), &l2, params.data_as<float>(), 1,
                                        grads.data_as<float>(), 1));
        } else {
          float* g = grads.data_as<float>();
          const float* w = params.data_as<const float>();
          for (std::int64_t e = 0; e < C * D; ++e) g[e] += l2 * w[e];
        }
      }
      const double lr = lr0 * 0.5 * (1.0 + std::cos(M_PI * static_cast<double>(t) / cfg.iterations));
      opt.step(params, grads, static_cast<float>(lr));
    }
    return params;
  }
};

}  // namespace

LinearEvalResult linear_eval(Context& ctx, const LinearEvalConfig& config, const TensorView& train_features,
                             const TensorView& train_labels, const TensorView& test_features,
                             const TensorView& test_labels) {
  NPID_CHECK_ARG(!config.l2_grid.empty(), kOp, "config.l2_grid", "expected at least one strength, got none");
  for (float l2 : config.l2_grid)
    NPID_CHECK_ARG(l2 >= 0.0f && std::isfinite(l2), kOp, "config.l2_grid", "expected finite values >= 0, got " << l2);
  NPID_CHECK_ARG(config.holdout > 0.0f && config.holdout < 1.0f, kOp, "config.holdout",
                 "expected a fraction in (0, 1), got " << config.holdout);
  NPID_CHECK_ARG(config.iterations >= 1, kOp, "config.iterations", "expected >= 1, got " << config.iterations);
  require_present(train_features, kOp, "train_features");
  require_rank(train_features, 2, kOp, "train_features");
  const std::int64_t N = train_features.shape[0], D = train_features.shape[1];
  NPID_CHECK_ARG(N >= 2 && D >= 1, kOp, "train_features", "expected (N, D) with N >= 2, got " << train_features.shape.str());
  require_dtype(train_features, DType::kFloat32, kOp, "train_features");
  require_shape(train_labels, {N}, kOp, "train_labels");
  require_dtype(train_labels, DType::kInt64, kOp, "train_labels");
  require_present(test_features, kOp, "test_features");
  require_rank(test_features, 2, kOp, "test_features");
  const std::int64_t M = test_features.shape[0];
  require_shape(test_features, {M, D}, kOp, "test_features");
  require_dtype(test_features, DType::kFloat32, kOp, "test_features");
  require_shape(test_labels, {M}, kOp, "test_labels");
  require_dtype(test_labels, DType::kInt64, kOp, "test_labels");

  std::vector<float> xtr(static_cast<std::size_t>(N * D)), xte(static_cast<std::size_t>(M * D));
  std::vector<std::int64_t> ytr(static_cast<std::size_t>(N)), yte(static_cast<std::size_t>(M));
  copy(ctx, view(xtr.data(), {N, D}), train_features);
  copy(ctx, view(ytr.data(), {N}), train_labels);
  if (M > 0) {
    copy(ctx, view(xte.data(), {M, D}), test_features);
    copy(ctx, view(yte.data(), {M}), test_labels);
  }
  std::int64_t C = config.num_classes;
  const std::int64_t max_label = *std::max_element(ytr.begin(), ytr.end());
  if (C == 0) C = max_label + 1;
  NPID_CHECK_ARG(C >= 2 && C <= kMaxKnnClasses, kOp, "config.num_classes", "expected 2.." << kMaxKnnClasses << ", got " << C);
  for (const auto* labels : {&ytr, &yte}) {
    for (std::int64_t v : *labels)
      NPID_CHECK_ARG(v >= 0 && v < C, kOp, labels == &ytr ? "train_labels" : "test_labels",
                     "expected labels in [0, " << C << "), got " << v);
  }

  LinearEvalResult result;
  result.loss = config.loss;
  result.l2_grid = config.l2_grid;
  // Standardize with the train split's statistics.
  result.feature_mean.assign(static_cast<std::size_t>(D), 0.0f);
  result.feature_std.assign(static_cast<std::size_t>(D), 1.0f);
  for (std::int64_t d = 0; d < D; ++d) {
    double s = 0, sq = 0;
    for (std::int64_t i = 0; i < N; ++i) {
      s += xtr[i * D + d];
      sq += double(xtr[i * D + d]) * xtr[i * D + d];
    }
    const double mean = s / N, var = std::max(0.0, sq / N - mean * mean);
    result.feature_mean[d] = static_cast<float>(mean);
    result.feature_std[d] = static_cast<float>(var > 1e-24 ? std::sqrt(var) : 1.0);
  }
  for (auto* x : {&xtr, &xte}) {
    for (std::size_t e = 0; e < x->size(); ++e) {
      const std::size_t d = e % static_cast<std::size_t>(D);
      (*x)[e] = ((*x)[e] - result.feature_mean[d]) / result.feature_std[d];
    }
  }
  // Held-out split of the train rows.
  std::vector<std::int64_t> perm(static_cast<std::size_t>(N));
  epoch_permutation_cpu(config.seed, 0, N, perm.data());
  const std::int64_t held = std::clamp<std::int64_t>(static_cast<std::int64_t>(std::lround(config.holdout * N)), 1, N - 1);
  const std::vector<std::int64_t> fit_rows(perm.begin(), perm.end() - held), held_rows(perm.end() - held, perm.end());
  Fitter f{ctx, config, D, C};
  const HostSplit part = gather(xtr, ytr, D, fit_rows), val = gather(xtr, ytr, D, held_rows);
  auto iota = [](std::int64_t n) {
    std::vector<std::int64_t> r(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) r[i] = i;
    return r;
  };
  const HostSplit full = gather(xtr, ytr, D, iota(N)), test = gather(xte, yte, D, iota(M));
  Tensor scratch({C * D + C}, DType::kFloat32, ctx.device());
  {
    const auto part_d = f.upload(part), val_d = f.upload(val);
    const double L = curvature(part, D);
    for (float l2 : config.l2_grid) {
      const Tensor params = f.fit(part_d, L, l2);
      result.holdout_accuracy.push_back(f.accuracy(val_d, params, scratch));
    }
  }
  // The best held-out accuracy; on ties the smallest strength, whatever the
  // grid's order.
  std::size_t best = 0;
  for (std::size_t i = 1; i < config.l2_grid.size(); ++i) {
    const double a = result.holdout_accuracy[i], b = result.holdout_accuracy[best];
    if (a > b || (a == b && config.l2_grid[i] < config.l2_grid[best])) best = i;
  }
  result.best_l2 = config.l2_grid[best];
  const auto full_d = f.upload(full), test_d = f.upload(test);
  const Tensor params = f.fit(full_d, curvature(full, D), result.best_l2);
  result.train_accuracy = f.accuracy(full_d, params, scratch);
  result.test_accuracy = f.accuracy(test_d, params, scratch);
  const std::int64_t P = C * D + C;
  std::vector<float> host(static_cast<std::size_t>(P));
  copy(ctx, view(host.data(), {P}), params);
  result.weights.assign(host.begin(), host.begin() + C * D);
  result.bias.assign(host.begin() + C * D, host.end());
  return result;
}

}  // namespace npid

// NCE CPU reference: against a straightforward formula, finite differences in
// double, Z policies, explicit negatives, exclusion, thread-count determinism.
#include <cmath>

#include "common/nce_fixture.h"
#include "nce.h"

using namespace npid;
using test::NceData;

namespace {

struct NceRun {
  float loss = 0, z = 0;
  std::vector<float> grad, probs;
  std::vector<std::int64_t> indices;
};

NceRun run_op(Context& ctx, const NceConfig& cfg, const NceData& d, std::uint64_t step,
              ZUpdate zu, float z, const std::int64_t* negatives = nullptr) {
  NceRun r;
  r.z = z;
  r.grad.assign(d.B * d.D, 0.f);
  r.probs.assign(d.B * (d.K + 1), 0.f);
  r.indices.assign(d.B * (d.K + 1), -1);
  NceInputs in{view(d.features.data(), {d.B, d.D}), view(d.targets.data(), {d.B}),
               view(d.bank.data(), {d.N, d.D}),
               negatives ? view(negatives, {d.B, d.K}) : TensorView()};
  NceOutputs out{view(&r.loss, {1}), view(r.grad.data(), {d.B, d.D}),
                 view(r.probs.data(), {d.B, d.K + 1}), view(r.indices.data(), {d.B, d.K + 1})};
  nce_forward_backward(ctx, cfg, in, step, zu, view(&r.z, {1}), out);
  return r;
}

// The criterion written out the way the reference code computes it: gather
// the rows into a B x (K+1) x D array, score, normalize by Z, then the
// log-posterior sums; gradient from the closed form in docs/math.md s.3-4.
struct Straightforward {
  double loss = 0, sum_exp = 0;
  std::vector<double> grad;
};

Straightforward straightforward(const NceData& d, const std::vector<std::int64_t>& idx, double tau,
                                double z, double lambda) {
  const std::int64_t B = d.B, D = d.D, K = d.K;
  std::vector<double> x(B * (K + 1) * D);  // materialized gather
  for (std::int64_t i = 0; i < B; ++i)
    for (std::int64_t j = 0; j <= K; ++j)
      for (std::int64_t c = 0; c < D; ++c) x[(i * (K + 1) + j) * D + c] = d.bank[idx[i * (K + 1) + j] * D + c];
  const double pn = 1.0 / d.N, eps = 1e-7;
  Straightforward s;
  s.grad.assign(B * D, 0.0);
  double ln_pmt = 0, ln_pon = 0;
  for (std::int64_t i = 0; i < B; ++i) {
    for (std::int64_t j = 0; j <= K; ++j) {
      double dot = 0;
      for (std::int64_t c = 0; c < D; ++c) dot += x[(i * (K + 1) + j) * D + c] * d.features[i * D + c];
      const double e = std::exp(dot / tau);
      s.sum_exp += e;
      const double p = e / z;
      double ds;
      if (j == 0) {
        const double h = p / (p + K * pn + eps);
        ln_pmt += std::log(h);
        ds = -(1 - h) / (B * tau);
      } else {
        ln_pon += std::log(K * pn / (p + K * pn + eps));
        ds = (p / (p + K * pn + eps)) / (B * tau);
      }
      for (std::int64_t c = 0; c < D; ++c) s.grad[i * D + c] += ds * x[(i * (K + 1) + j) * D + c];
    }
    for (std::int64_t c = 0; c < D; ++c) {
      const double diff = d.features[i * D + c] - d.bank[d.targets[i] * D + c];
      s.loss += lambda / B * diff * diff;
      s.grad[i * D + c] += 2 * lambda / B * diff;
    }
  }
  s.loss += -(ln_pmt + ln_pon) / B;
  return s;
}

std::vector<double> as_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

}  // namespace

TEST_CASE("NCE CPU op matches the straightforward formula", "[nce]") {
  Context ctx = Context::cpu();
  for (double lambda : {0.0, 30.0}) {
    NceData d(5, 16, 300, 40, 100);
    NceConfig cfg;
    cfg.num_negatives = d.K;
    cfg.temperature = 0.1f;
    cfg.proximal_lambda = static_cast<float>(lambda);
    cfg.seed = 77;
    const float z = 6.5f;
    const NceRun r = run_op(ctx, cfg, d, 3, ZUpdate::kKeep, z);

    // The indices used are those of the sampler op.
    std::vector<std::int64_t> idx(r.indices.size());
    sample_nce_indices(ctx, view(d.targets.data(), {d.B}), d.N, d.K, cfg.seed, 3, false,
                       view(idx.data(), {d.B, d.K + 1}));
    CHECK(r.indices == idx);

    const Straightforward s = straightforward(d, idx, cfg.temperature, z, lambda);
    INFO("lambda = " << lambda);
    CHECK(r.loss == Approx(s.loss).epsilon(1e-5));
    CHECK(test::relative_error(as_double(r.grad), s.grad) < 1e-5);
    CHECK(r.z == z);  // kKeep leaves Z alone
    // probs are exp(s/tau)/Z: check one entry by hand.
    double dot = 0;
    for (std::int64_t c = 0; c < d.D; ++c) dot += d.bank[idx[1] * d.D + c] * d.features[c];
    CHECK(r.probs[1] == Approx(std::exp(dot / cfg.temperature) / z).epsilon(1e-5));
  }
}

TEST_CASE("NCE gradient matches finite differences in double, proximal term included", "[nce]") {
  for (double lambda : {0.0, 10.0, 50.0}) {
    for (std::uint64_t seed : {1u, 2u}) {
      NceData d(3, 8, 50, 6, seed * 10);
      std::vector<double> f(d.features.begin(), d.features.end());
      std::vector<double> bank(d.bank.begin(), d.bank.end());
      NceReferenceArgs<double> a;
      a.features = f.data();
      a.targets = d.targets.data();
      a.bank = bank.data();
      a.batch = d.B;
      a.dim = d.D;
      a.bank_size = d.N;
      a.num_negatives = d.K;
      a.temperature = 0.1;
      a.lambda = lambda;
      a.z = 0.8;  // of the order of N * mean exp(s/tau) / N ... P ~ 1 stresses both branches
      a.seed = seed;
      a.step = 4;
      std::vector<double> grad(f.size());
      a.grad = grad.data();
      nce_reference(a, 1);
      a.grad = nullptr;

      std::vector<double> fd(f.size());
      const double h = 1e-6;
      for (std::size_t k = 0; k < f.size(); ++k) {
        const double keep = f[k];
        f[k] = keep + h;
        const double up = nce_reference(a, 1).loss;
        f[k] = keep - h;
        const double down = nce_reference(a, 1).loss;
        f[k] = keep;
        fd[k] = (up - down) / (2 * h);
      }
      INFO("lambda = " << lambda << ", seed = " << seed);
      CHECK(test::relative_error(grad, fd) < 1e-4);
      double norm = 0;
      for (double g : grad) norm += g * g;
      CHECK(norm > 1e-6);  // a silent zero gradient would pass the comparison
    }
  }
}

TEST_CASE("Z policies: first_batch, ema and fixed", "[nce][z]") {
  Context ctx = Context::cpu();
  NceData d(6, 16, 500, 30, 200);
  NceData d2(6, 16, 500, 30, 201);
  d2.bank = d.bank;  // same bank, next batch
  auto estimate = [&](const NceData& data, const std::vector<std::int64_t>& idx) {
    const auto s = straightforward(data, idx, 0.1, 1.0, 0.0);
    return data.N * s.sum_exp / (data.B * (data.K + 1));
  };

  NceConfig cfg;
  cfg.num_negatives = d.K;
  cfg.temperature = 0.1f;

  SECTION("first_batch estimates Z from the first batch, then keeps it") {
    cfg.z_policy = ZPolicy::kFirstBatch;
    NceCriterion crit(ctx, cfg, d.B, d.D);
    CHECK_FALSE(crit.z_initialized());
    NceRun r1;
    r1.grad.assign(d.B * d.D, 0);
    r1.indices.assign(d.B * (d.K + 1), 0);
    crit.forward_backward({view(d.features.data(), {d.B, d.D}), view(d.targets.data(), {d.B}),
                           view(d.bank.data(), {d.N, d.D}), {}},
                          0,
                          {view(&r1.loss, {1}), view(r1.grad.data(), {d.B, d.D}), {},
                           view(r1.indices.data(), {d.B, d.K + 1})});
    const double z1 = estimate(d, r1.indices);
    CHECK(crit.z() == Approx(z1).epsilon(1e-5));
    // The loss of step 0 already uses that Z.
    CHECK(r1.loss == Approx(straightforward(d, r1.indices, 0.1, crit.z(), 0).loss).epsilon(1e-5));
    NceRun r2;
    r2.grad.assign(d.B * d.D, 0);
    crit.forward_backward({view(d2.features.data(), {d.B, d.D}), view(d2.targets.data(), {d.B}),
                           view(d2.bank.data(), {d.N, d.D}), {}},
                          1, {view(&r2.loss, {1}), view(r2.grad.data(), {d.B, d.D}), {}, {}});
    CHECK(crit.z() == Approx(z1).epsilon(1e-5));
  }
  SECTION("ema re-estimates every step after using the previous Z") {
    cfg.z_policy = ZPolicy::kEma;
    cfg.z_ema_decay = 0.9f;
    NceCriterion crit(ctx, cfg, d.B, d.D);
    float loss = 0;
    std::vector<float> grad(d.B * d.D);
    std::vector<std::int64_t> idx1(d.B * (d.K + 1)), idx2(idx1.size());
    crit.forward_backward({view(d.features.data(), {d.B, d.D}), view(d.targets.data(), {d.B}),
                           view(d.bank.data(), {d.N, d.D}), {}},
                          0, {view(&loss, {1}), view(grad.data(), {d.B, d.D}), {}, view(idx1.data(), {d.B, d.K + 1})});
    const double z1 = estimate(d, idx1);
    CHECK(crit.z() == Approx(z1).epsilon(1e-5));
    crit.forward_backward({view(d2.features.data(), {d.B, d.D}), view(d2.targets.data(), {d.B}),
                           view(d2.bank.data(), {d.N, d.D}), {}},
                          1, {view(&loss, {1}), view(grad.data(), {d.B, d.D}), {}, view(idx2.data(), {d.B, d.K + 1})});
    // Step 1's loss used z1; Z afterwards blends in step 1's estimate.
    CHECK(loss == Approx(straightforward(d2, idx2, 0.1, z1, 0).loss).epsilon(1e-5));
    const double z2 = 0.9 * z1 + 0.1 * estimate(d2, idx2);
    CHECK(crit.z() == Approx(z2).epsilon(1e-5));
    CHECK(std::fabs(z2 - z1) > 1e-6 * z1);  // the second batch moved Z
  }
  SECTION("fixed keeps the user's Z; set_z restores a checkpointed Z") {
    cfg.z_policy = ZPolicy::kFixed;
    cfg.z_fixed = 123.0f;
    NceCriterion crit(ctx, cfg, d.B, d.D);
    CHECK(crit.z_initialized());
    float loss = 0;
    std::vector<float> grad(d.B * d.D);
    crit.forward_backward({view(d.features.data(), {d.B, d.D}), view(d.targets.data(), {d.B}),
                           view(d.bank.data(), {d.N, d.D}), {}},
                          0, {view(&loss, {1}), view(grad.data(), {d.B, d.D}), {}, {}});
    CHECK(crit.z() == 123.0f);
    crit.set_z(7.0f);
    CHECK(crit.z() == 7.0f);
  }
}

TEST_CASE("explicit negatives reproduce the in-kernel draw", "[nce]") {
  Context ctx = Context::cpu();
  NceData d(4, 12, 1000, 25, 300);
  NceConfig cfg;
  cfg.num_negatives = d.K;
  cfg.seed = 9;
  cfg.exclude_positive = true;
  const NceRun drawn = run_op(ctx, cfg, d, 5, ZUpdate::kKeep, 3.0f);
  std::vector<std::int64_t> negatives;
  for (std::int64_t i = 0; i < d.B; ++i)
    for (std::int64_t j = 1; j <= d.K; ++j) negatives.push_back(drawn.indices[i * (d.K + 1) + j]);
  NceConfig other = cfg;
  other.seed = 12345;  // ignored when negatives are given
  const NceRun given = run_op(ctx, other, d, 99, ZUpdate::kKeep, 3.0f, negatives.data());
  CHECK(given.indices == drawn.indices);
  CHECK(given.loss == drawn.loss);
  CHECK(given.grad == drawn.grad);
  for (std::int64_t i = 0; i < d.B; ++i)
    for (std::int64_t j = 1; j <= d.K; ++j) CHECK(drawn.indices[i * (d.K + 1) + j] != d.targets[i]);
}

TEST_CASE("NCE CPU results do not depend on the thread count", "[nce]") {
  NceData d(9, 20, 700, 50, 400);
  NceConfig cfg;
  cfg.num_negatives = d.K;
  cfg.proximal_lambda = 10;
  Context one = Context::cpu({false, 1, 0});
  Context four = Context::cpu({false, 4, 0});
  const NceRun a = run_op(one, cfg, d, 1, ZUpdate::kInitFromBatch, 0.f);
  const NceRun b = run_op(four, cfg, d, 1, ZUpdate::kInitFromBatch, 0.f);
  CHECK(a.loss == b.loss);
  CHECK(a.z == b.z);
  CHECK(a.grad == b.grad);
  CHECK(a.probs == b.probs);
}

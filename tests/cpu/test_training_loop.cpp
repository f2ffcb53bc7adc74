// A whole NPID training loop on the CPU backend with the simplest possible
// "network": a free embedding per instance, f_i = w_i / ||w_i||. Steps run
// NCE forward+backward (in-kernel sampling, Z policy), SGD through the
// normalization, then the momentum bank update -- the same order a real
// training step uses. Properties: the loss falls, positives come to dominate
// their rows' scores, the bank stays unit-norm, and two runs are identical.
#include <cmath>
#include <numeric>

#include "common/test_util.h"

using namespace npid;

namespace {

struct RunResult {
  std::vector<float> losses;
  std::vector<float> bank;
  float z = 0;
};

// criterion: NCE with `policy`, or the full softmax when softmax = true.
RunResult train(ZPolicy policy, float lambda, int steps, bool softmax = false) {
  Context ctx = Context::cpu();
  const std::int64_t N = 256, D = 32, B = 32, K = 64;
  std::vector<float> w = test::random_unit_rows(N, D, 1);  // the "network"
  MemoryBank bank(ctx, N, D, BankInit::kUniform, 2);
  NceConfig cfg;
  cfg.num_negatives = K;
  cfg.temperature = 0.1f;
  cfg.proximal_lambda = lambda;
  cfg.z_policy = policy;
  cfg.seed = 3;
  NceCriterion nce(ctx, cfg, B, D);
  SoftmaxConfig scfg;
  scfg.temperature = cfg.temperature;
  scfg.proximal_lambda = lambda;
  SoftmaxCriterion full(ctx, scfg, B, D, N);
  std::vector<float> f(B * D), grad(B * D);
  std::vector<std::int64_t> y(B);
  float loss = 0;
  RunResult r;
  const float lr = 2.0f;
  for (int step = 0; step < steps; ++step) {
    for (std::int64_t i = 0; i < B; ++i) y[i] = (step * B + i) % N;  // epochs in order
    for (std::int64_t i = 0; i < B; ++i) {
      double ss = 0;
      for (std::int64_t c = 0; c < D; ++c) ss += double(w[y[i] * D + c]) * w[y[i] * D + c];
      for (std::int64_t c = 0; c < D; ++c) f[i * D + c] = w[y[i] * D + c] / float(std::sqrt(ss));
    }
    if (softmax) {
      full.forward_backward({view(f.data(), {B, D}), view(y.data(), {B}), bank.view()},
                            {view(&loss, {1}), view(grad.data(), {B, D})});
    } else {
      nce.forward_backward({view(f.data(), {B, D}), view(y.data(), {B}), bank.view(), {}},
                           static_cast<std::uint64_t>(step),
                           {view(&loss, {1}), view(grad.data(), {B, D}), {}, {}});
    }
    r.losses.push_back(loss);
    // Backprop through f = w/||w|| (||w|| = 1 after each renormalization).
    for (std::int64_t i = 0; i < B; ++i) {
      double gf = 0;
      for (std::int64_t c = 0; c < D; ++c) gf += double(grad[i * D + c]) * f[i * D + c];
      double ss = 0;
      for (std::int64_t c = 0; c < D; ++c) {
        float& wc = w[y[i] * D + c];
        wc -= lr * static_cast<float>(grad[i * D + c] - gf * f[i * D + c]);
        ss += double(wc) * wc;
      }
      for (std::int64_t c = 0; c < D; ++c) w[y[i] * D + c] /= float(std::sqrt(ss));
    }
    bank.update(view(f.data(), {B, D}), view(y.data(), {B}), 0.5f);
  }
  const float* bp = static_cast<const float*>(bank.view().data);
  r.bank.assign(bp, bp + N * D);
  r.z = softmax ? 1.f : nce.z();
  return r;
}

float mean(const std::vector<float>& v, std::size_t from, std::size_t to) {
  return std::accumulate(v.begin() + from, v.begin() + to, 0.f) / float(to - from);
}

}  // namespace

TEST_CASE("NPID on free embeddings: the loss falls and the bank stays unit-norm",
          "[training]") {
  for (ZPolicy policy : {ZPolicy::kFirstBatch, ZPolicy::kEma}) {
    for (float lambda : {0.f, 10.f}) {
      const RunResult r = train(policy, lambda, 160);  // 20 epochs of 8 steps
      INFO("policy " << to_string(policy) << ", lambda " << lambda << ": first epoch loss "
                     << mean(r.losses, 0, 8) << ", last epoch " << mean(r.losses, 152, 160));
      CHECK(mean(r.losses, 152, 160) < 0.7f * mean(r.losses, 0, 8));
      for (std::size_t row = 0; row < r.bank.size() / 32; ++row) {
        double ss = 0;
        for (int c = 0; c < 32; ++c) ss += double(r.bank[row * 32 + c]) * r.bank[row * 32 + c];
        REQUIRE(std::sqrt(ss) == Approx(1.0).epsilon(1e-5));
      }
      CHECK(r.z > 0);
    }
  }
}

TEST_CASE("NPID with the full softmax on free embeddings: the loss falls", "[training][softmax]") {
  for (float lambda : {0.f, 10.f}) {
    const RunResult r = train(ZPolicy::kFirstBatch, lambda, 160, /*softmax=*/true);
    INFO("lambda " << lambda << ": first epoch loss " << mean(r.losses, 0, 8) << ", last epoch "
                   << mean(r.losses, 152, 160));
    // Chance level is log N = 5.5; the positive comes to dominate its row.
    CHECK(mean(r.losses, 0, 8) > 4.0f);
    CHECK(mean(r.losses, 152, 160) < 0.5f * mean(r.losses, 0, 8));
  }
}

TEST_CASE("two CPU training runs with one seed are identical", "[training]") {
  const RunResult a = train(ZPolicy::kEma, 0.f, 24);
  const RunResult b = train(ZPolicy::kEma, 0.f, 24);
  CHECK(a.losses == b.losses);
  CHECK(a.bank == b.bank);
  CHECK(a.z == b.z);
}

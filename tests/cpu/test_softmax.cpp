// Full non-parametric softmax, CPU reference: against a naive formula, finite
// differences in double (proximal term included), chunk sizing, errors.
#include <cmath>

#include "common/nce_fixture.h"
#include "softmax.h"

using namespace npid;
using test::NceData;

TEST_CASE("softmax CPU op matches the naive formula", "[softmax]") {
  Context ctx = Context::cpu();
  for (float lambda : {0.f, 20.f}) {
    NceData d(5, 16, 400, 1, 11);
    SoftmaxConfig cfg;
    cfg.temperature = 0.5f;  // large enough that exp() needs no max shift below
    cfg.proximal_lambda = lambda;
    float loss = 0;
    std::vector<float> grad(d.B * d.D);
    softmax_forward_backward(ctx, cfg,
                             {view(d.features.data(), {d.B, d.D}), view(d.targets.data(), {d.B}),
                              view(d.bank.data(), {d.N, d.D})},
                             {view(&loss, {1}), view(grad.data(), {d.B, d.D})});
    // Naive: p = exp(l) / sum exp(l), loss = -mean log p_y, grad by definition.
    double want = 0;
    std::vector<double> want_grad(d.B * d.D, 0.0);
    for (std::int64_t i = 0; i < d.B; ++i) {
      std::vector<double> e(d.N);
      double z = 0;
      for (std::int64_t k = 0; k < d.N; ++k) {
        double s = 0;
        for (std::int64_t c = 0; c < d.D; ++c) s += double(d.bank[k * d.D + c]) * d.features[i * d.D + c];
        e[k] = std::exp(s / cfg.temperature);
        z += e[k];
      }
      want -= std::log(e[d.targets[i]] / z) / d.B;
      for (std::int64_t k = 0; k < d.N; ++k) {
        const double w = e[k] / z - (k == d.targets[i]);
        for (std::int64_t c = 0; c < d.D; ++c)
          want_grad[i * d.D + c] += w * d.bank[k * d.D + c] / (d.B * cfg.temperature);
      }
      for (std::int64_t c = 0; c < d.D; ++c) {
        const double diff = double(d.features[i * d.D + c]) - d.bank[d.targets[i] * d.D + c];
        want += lambda / d.B * diff * diff;
        want_grad[i * d.D + c] += 2.0 * lambda / d.B * diff;
      }
    }
    INFO("lambda = " << lambda);
    CHECK(loss == Approx(want).epsilon(1e-6));
    CHECK(test::relative_error(std::vector<double>(grad.begin(), grad.end()), want_grad) < 1e-5);
  }
}

TEST_CASE("softmax gradient matches finite differences in double", "[softmax]") {
  for (double lambda : {0.0, 10.0}) {
    NceData d(3, 8, 60, 1, 21);
    std::vector<double> f(d.features.begin(), d.features.end()), bank(d.bank.begin(), d.bank.end());
    std::vector<double> grad(f.size());
    softmax_reference<double, double>(f.data(), d.targets.data(), bank.data(), d.B, d.D, d.N, 0.07, lambda,
                                      grad.data(), 1);
    std::vector<double> fd(f.size());
    const double h = 1e-6;
    for (std::size_t k = 0; k < f.size(); ++k) {
      const double keep = f[k];
      f[k] = keep + h;
      const double up = softmax_reference<double, double>(f.data(), d.targets.data(), bank.data(), d.B, d.D,
                                                          d.N, 0.07, lambda, nullptr, 1);
      f[k] = keep - h;
      const double down = softmax_reference<double, double>(f.data(), d.targets.data(), bank.data(), d.B,
                                                            d.D, d.N, 0.07, lambda, nullptr, 1);
      f[k] = keep;
      fd[k] = (up - down) / (2 * h);
    }
    INFO("lambda = " << lambda);
    CHECK(test::relative_error(grad, fd) < 1e-4);
    double norm = 0;
    for (double g : grad) norm += g * g;
    CHECK(norm > 1e-6);
  }
}

TEST_CASE("softmax chunk size follows the workspace budget", "[softmax]") {
  SoftmaxConfig cfg;
  const std::int64_t B = 256, D = 128, N = 1281167;
  cfg.workspace_bytes = std::size_t(32) << 20;
  const std::int64_t c32 = softmax_chunk_rows(cfg, B, D, N, DType::kFloat32);
  CHECK(c32 % 128 == 0);
  // The chunk's buffers fit the budget.
  CHECK(softmax_cuda_workspace_bytes(B, D, c32, DType::kFloat32, SoftmaxMath::kTF32) <= cfg.workspace_bytes);
  CHECK(softmax_cuda_workspace_bytes(B, D, c32 + 128, DType::kFloat32, SoftmaxMath::kTF32) > cfg.workspace_bytes);
  // A bf16 bank needs an fp32 staging copy of the chunk: fewer rows per chunk.
  CHECK(softmax_chunk_rows(cfg, B, D, N, DType::kBFloat16) < c32);
  cfg.workspace_bytes = std::size_t(128) << 20;
  CHECK(softmax_chunk_rows(cfg, B, D, N, DType::kFloat32) > c32);
  CHECK(softmax_chunk_rows(cfg, B, D, 1000, DType::kFloat32) == 1000);  // capped at N
  cfg.workspace_bytes = 1;
  CHECK(softmax_chunk_rows(cfg, B, D, N, DType::kFloat32) == 128);  // the floor
  // kBF16 on a bf16 bank: bf16 weights (B x C x 2 bytes) instead of a staging
  // copy; the chunk fits the budget exactly as the others do.
  cfg.workspace_bytes = std::size_t(32) << 20;
  cfg.math = SoftmaxMath::kBF16;
  const std::int64_t c16 = softmax_chunk_rows(cfg, B, D, N, DType::kBFloat16);
  CHECK(c16 % 128 == 0);
  CHECK(softmax_cuda_workspace_bytes(B, D, c16, DType::kBFloat16, SoftmaxMath::kBF16) <= cfg.workspace_bytes);
  CHECK(softmax_cuda_workspace_bytes(B, D, c16 + 128, DType::kBFloat16, SoftmaxMath::kBF16) > cfg.workspace_bytes);
}

TEST_CASE("softmax rejects bad input with a named argument", "[softmax][errors]") {
  Context ctx = Context::cpu();
  NceData d(4, 8, 50, 1, 3);
  float loss = 0;
  std::vector<float> grad(d.B * d.D);
  SoftmaxConfig cfg;
  auto run = [&](SoftmaxInputs in) {
    softmax_forward_backward(ctx, cfg, in, {view(&loss, {1}), view(grad.data(), {d.B, d.D})});
  };
  const SoftmaxInputs good{view(d.features.data(), {d.B, d.D}), view(d.targets.data(), {d.B}),
                           view(d.bank.data(), {d.N, d.D})};
  const auto kind = ErrorKind::kInvalidArgument;
  SECTION("temperature") {
    cfg.temperature = -1.f;
    test::require_error([&] { run(good); }, kind, {"softmax_forward_backward", "'temperature'", "got -1"});
  }
  SECTION("target out of range") {
    d.targets[3] = 50;
    test::require_error([&] { run(good); }, kind, {"'targets'", "[0, 50)", "got 50"});
  }
  SECTION("bank width") {
    SoftmaxInputs in = good;
    in.bank.shape = {d.N * 2, d.D / 2};
    test::require_error([&] { run(in); }, kind, {"'bank'", "D = 8"});
  }
  SECTION("bank dtype") {
    SoftmaxInputs in = good;
    in.bank.dtype = DType::kInt32;
    test::require_error([&] { run(in); }, kind, {"'bank'", "float32 or bfloat16", "got int32"});
  }
  SECTION("non-finite feature") {
    d.features[0] = std::nanf("");
    test::require_error([&] { run(good); }, kind, {"'features'", "finite"});
  }
  SECTION("bf16 GEMMs need a bf16 bank") {
    cfg.math = SoftmaxMath::kBF16;
    const float before = loss;
    test::require_error([&] { run(good); }, kind, {"'math'", "kBF16 only with a bfloat16 bank", "got a float32 bank"});
    CHECK(loss == before);  // nothing written
    test::require_error([&] { SoftmaxCriterion(ctx, cfg, d.B, d.D, d.N, DType::kFloat32); }, kind,
                        {"SoftmaxCriterion", "'math'"});
  }
}

// The bf16 bank: rounding, and every op on a bf16 bank against the same op on
// an fp32 bank. Tolerances: bf16 keeps 8 significant bits, so one rounding to
// nearest has relative error <= u = 2^-8; a row's norm is then off by at most
// u, and a score s = v.f (unit vectors) by at most u, i.e. s/tau by u/tau.
#include <cmath>
#include <cstring>
#include <limits>

#include "common/bf16.h"
#include "common/nce_fixture.h"

using namespace npid;
using test::NceData;

namespace {
std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (std::size_t k = 0; k < v.size(); ++k) out[k] = float_to_bf16(v[k]);
  return out;
}
std::vector<float> widen(const std::vector<bf16>& v) {
  std::vector<float> out(v.size());
  for (std::size_t k = 0; k < v.size(); ++k) out[k] = bf16_to_float(v[k]);
  return out;
}
TensorView bank_view(std::vector<bf16>& v, std::int64_t n, std::int64_t d) {
  return TensorView(v.data(), DType::kBFloat16, {n, d}, Device::cpu());
}
}  // namespace

TEST_CASE("bf16 rounding: nearest, ties to even, specials", "[bf16]") {
  CHECK(bf16_to_float(float_to_bf16(1.0f)) == 1.0f);
  CHECK(bf16_to_float(float_to_bf16(-2.5f)) == -2.5f);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1).
  CHECK(bf16_to_float(float_to_bf16(1.0f + std::ldexp(1.0f, -8))) == 1.0f);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties to even (1 + 2^-6).
  CHECK(bf16_to_float(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8))) == 1.0f + std::ldexp(1.0f, -6));
  CHECK(std::isinf(bf16_to_float(float_to_bf16(std::numeric_limits<float>::infinity()))));
  CHECK(std::isnan(bf16_to_float(float_to_bf16(std::nanf("")))));
  const std::vector<float> v = test::random_unit_rows(1, 10000, 1);
  for (float x : v) {
    const float r = bf16_to_float(float_to_bf16(x));
    REQUIRE(std::fabs(r - x) <= std::ldexp(std::fabs(x), -8));
  }
}

TEST_CASE("bf16 bank init: the fp32 values rounded once, unit rows within 2^-8", "[bf16][bank]") {
  Context ctx = Context::cpu();
  for (BankInit init : {BankInit::kUniform, BankInit::kUnit}) {
    const std::int64_t N = 300, D = 128;
    std::vector<float> f32(N * D);
    std::vector<bf16> b16(N * D);
    bank_initialize(ctx, view(f32.data(), {N, D}), init, 9);
    bank_initialize(ctx, bank_view(b16, N, D), init, 9);
    const std::vector<bf16> rounded = to_bf16(f32);
    CHECK(std::memcmp(rounded.data(), b16.data(), b16.size() * sizeof(bf16)) == 0);
    if (init == BankInit::kUnit) {
      const std::vector<float> w = widen(b16);
      for (std::int64_t r = 0; r < N; ++r) {
        double ss = 0;
        for (std::int64_t c = 0; c < D; ++c) ss += double(w[r * D + c]) * w[r * D + c];
        REQUIRE(std::fabs(std::sqrt(ss) - 1.0) <= std::ldexp(1.0, -8));
      }
    }
  }
}

TEST_CASE("bf16 bank update: fp32 math, one rounding, stays unit-norm", "[bf16][bank]") {
  Context ctx = Context::cpu();
  const std::int64_t N = 64, D = 128, B = 16;
  std::vector<bf16> bank = to_bf16(test::random_unit_rows(N, D, 1));
  for (int step = 0; step < 200; ++step) {
    std::vector<float> f = test::random_unit_rows(B, D, 100 + step);
    std::vector<std::int64_t> y = test::random_indices(B, N, 200 + step);
    // The same update on an fp32 copy of the bf16 values, rounded afterwards,
    // must give the same bits: the bf16 path rounds exactly once.
    std::vector<float> expect = widen(bank);
    bank_update(ctx, view(expect.data(), {N, D}), view(f.data(), {B, D}), view(y.data(), {B}), 0.5f);
    bank_update(ctx, bank_view(bank, N, D), view(f.data(), {B, D}), view(y.data(), {B}), 0.5f);
    const std::vector<bf16> rounded = to_bf16(expect);
    REQUIRE(std::memcmp(rounded.data(), bank.data(), bank.size() * sizeof(bf16)) == 0);
  }
  // No drift: each update renormalizes in fp32 before rounding, so a row's
  // norm is off by at most the one rounding's 2^-8 however many steps passed.
  const std::vector<float> w = widen(bank);
  for (std::int64_t r = 0; r < N; ++r) {
    double ss = 0;
    for (std::int64_t c = 0; c < D; ++c) ss += double(w[r * D + c]) * w[r * D + c];
    REQUIRE(std::fabs(std::sqrt(ss) - 1.0) <= std::ldexp(1.0, -8));
  }
}

TEST_CASE("NCE and softmax on a bf16 bank", "[bf16][nce][softmax]") {
  Context ctx = Context::cpu();
  NceData d(8, 128, 2000, 256, 5);
  std::vector<bf16> b16 = to_bf16(d.bank);
  std::vector<float> widened = widen(b16);
  const float tau = 0.1f;

  auto nce = [&](TensorView bank, float* grad) {
    NceConfig cfg;
    cfg.num_negatives = d.K;
    cfg.temperature = tau;
    cfg.proximal_lambda = 5.f;
    float loss = 0, z = static_cast<float>(d.N);  // Z ~ N, as estimated for unit vectors
    nce_forward_backward(ctx, cfg, {view(d.features.data(), {d.B, d.D}), view(d.targets.data(), {d.B}), bank, {}},
                         3, ZUpdate::kKeep, view(&z, {1}),
                         {view(&loss, {1}), view(grad, {d.B, d.D}), {}, {}});
    return loss;
  };
  auto softmax = [&](TensorView bank, float* grad) {
    SoftmaxConfig cfg;
    cfg.temperature = tau;
    float loss = 0;
    softmax_forward_backward(ctx, cfg, {view(d.features.data(), {d.B, d.D}), view(d.targets.data(), {d.B}), bank},
                             {view(&loss, {1}), view(grad, {d.B, d.D})});
    return loss;
  };
  for (int op = 0; op < 2; ++op) {
    auto run = op == 0 ? std::function<float(TensorView, float*)>(nce) : softmax;
    std::vector<float> g16(d.B * d.D), gw(d.B * d.D), g32(d.B * d.D);
    const float l16 = run(bank_view(b16, d.N, d.D), g16.data());
    const float lw = run(view(widened.data(), {d.N, d.D}), gw.data());
    const float l32 = run(view(d.bank.data(), {d.N, d.D}), g32.data());
    INFO((op == 0 ? "nce" : "softmax"));
    // Identical arithmetic on identical values: the storage type is invisible.
    CHECK(l16 == lw);
    CHECK(g16 == gw);
    // Against the unrounded fp32 bank: scores move by <= 2^-8/tau = 0.04, so
    // probabilities by <= 4% (typically far less: rounding errors of the
    // 128 terms partly cancel); loss and gradient follow.
    INFO("loss " << l16 << " vs " << l32 << ", grad rel err " << test::relative_error(g16, g32));
    CHECK(l16 == Approx(l32).epsilon(0.04));
    CHECK(test::relative_error(g16, g32) < 0.04);
  }
}

// Memory bank: initialization statistics and the momentum update.
#include <cmath>

#include "common/test_util.h"

using namespace npid;

namespace {
double row_norm(const std::vector<float>& v, std::int64_t r, std::int64_t D) {
  double ss = 0;
  for (std::int64_t c = 0; c < D; ++c) ss += double(v[r * D + c]) * v[r * D + c];
  return std::sqrt(ss);
}
}  // namespace

TEST_CASE("uniform bank init: range, moments, near-unit rows, seeded", "[bank]") {
  Context ctx = Context::cpu();
  const std::int64_t N = 2000, D = 128;
  std::vector<float> a(N * D), b(N * D), c(N * D);
  bank_initialize(ctx, view(a.data(), {N, D}), BankInit::kUniform, 5);
  bank_initialize(ctx, view(b.data(), {N, D}), BankInit::kUniform, 5);
  bank_initialize(ctx, view(c.data(), {N, D}), BankInit::kUniform, 6);
  CHECK(a == b);
  CHECK(a != c);
  const double s = 1.0 / std::sqrt(D / 3.0);
  double sum = 0, sq = 0, norm_sum = 0;
  for (float x : a) {
    REQUIRE(std::fabs(x) <= s);
    sum += x;
    sq += double(x) * x;
  }
  for (std::int64_t r = 0; r < N; ++r) norm_sum += row_norm(a, r, D);
  const double n = double(N * D);
  CHECK(std::fabs(sum / n) < 5 * s / std::sqrt(3.0 * n));  // mean 0 within 5 sd
  CHECK(sq / n == Approx(s * s / 3).epsilon(0.01));         // variance s^2/3 = 1/D
  CHECK(norm_sum / N == Approx(1.0).epsilon(0.01));         // rows ~ unit, not normalized
  CHECK(std::fabs(row_norm(a, 0, D) - 1.0) > 1e-6);
}

TEST_CASE("unit bank init: unit rows, isotropic, any D", "[bank]") {
  Context ctx = Context::cpu();
  for (std::int64_t D : {1, 3, 50, 128}) {
    const std::int64_t N = 500;
    std::vector<float> a(N * D);
    bank_initialize(ctx, view(a.data(), {N, D}), BankInit::kUnit, 1);
    for (std::int64_t r = 0; r < N; ++r) REQUIRE(row_norm(a, r, D) == Approx(1.0).epsilon(1e-6));
    if (D >= 50) {
      // Mean of each coordinate ~ 0 (sd 1/sqrt(D*N)).
      for (std::int64_t col = 0; col < D; col += 7) {
        double m = 0;
        for (std::int64_t r = 0; r < N; ++r) m += a[r * D + col];
        CHECK(std::fabs(m / N) < 6.0 / std::sqrt(double(D) * N));
      }
    }
  }
}

TEST_CASE("bank update: momentum formula, renormalization, untouched rows", "[bank]") {
  Context ctx = Context::cpu();
  const std::int64_t N = 10, D = 4, B = 2;
  std::vector<float> bank = test::random_unit_rows(N, D, 3);
  const std::vector<float> before = bank;
  std::vector<float> f = test::random_unit_rows(B, D, 4);
  std::vector<std::int64_t> y = {7, 2};
  const float m = 0.5f;
  bank_update(ctx, view(bank.data(), {N, D}), view(f.data(), {B, D}), view(y.data(), {B}), m);
  for (std::int64_t i = 0; i < B; ++i) {
    std::vector<double> v(D);
    double ss = 0;
    for (std::int64_t c = 0; c < D; ++c) {
      v[c] = m * before[y[i] * D + c] + (1 - m) * f[i * D + c];
      ss += v[c] * v[c];
    }
    for (std::int64_t c = 0; c < D; ++c)
      CHECK(bank[y[i] * D + c] == Approx(v[c] / std::sqrt(ss)).epsilon(1e-6));
  }
  for (std::int64_t r = 0; r < N; ++r)
    if (r != 7 && r != 2)
      for (std::int64_t c = 0; c < D; ++c) CHECK(bank[r * D + c] == before[r * D + c]);
}

TEST_CASE("bank update: repeated index, last occurrence wins", "[bank]") {
  Context ctx = Context::cpu();
  const std::int64_t N = 6, D = 8, B = 4;
  std::vector<float> bank = test::random_unit_rows(N, D, 5);
  const std::vector<float> before = bank;
  std::vector<float> f = test::random_unit_rows(B, D, 6);
  std::vector<std::int64_t> y = {3, 1, 3, 3};  // sample 3 is the last occurrence of row 3
  bank_update(ctx, view(bank.data(), {N, D}), view(f.data(), {B, D}), view(y.data(), {B}), 0.25f);
  // Row 3 = normalize(0.25 * old + 0.75 * f_3): old row, not a chained update.
  double ss = 0;
  std::vector<double> v(D);
  for (std::int64_t c = 0; c < D; ++c) {
    v[c] = 0.25 * before[3 * D + c] + 0.75 * f[3 * D + c];
    ss += v[c] * v[c];
  }
  for (std::int64_t c = 0; c < D; ++c) CHECK(bank[3 * D + c] == Approx(v[c] / std::sqrt(ss)).epsilon(1e-6));
}

TEST_CASE("bank update: momentum extremes", "[bank]") {
  Context ctx = Context::cpu();
  const std::int64_t N = 3, D = 5;
  std::vector<float> bank = {3, 0, 0, 0, 4, /**/ 1, 1, 1, 1, 1, /**/ 0, 0, 0, 0, 2};
  std::vector<float> f = {0, 0, 0, 0, 1};
  std::vector<std::int64_t> y = {0};
  SECTION("m = 1 keeps the row, normalized") {
    bank_update(ctx, view(bank.data(), {N, D}), view(f.data(), {1, D}), view(y.data(), {1}), 1.f);
    CHECK(bank[0] == Approx(0.6f));
    CHECK(bank[4] == Approx(0.8f));
  }
  SECTION("m = 0 replaces the row by the feature") {
    bank_update(ctx, view(bank.data(), {N, D}), view(f.data(), {1, D}), view(y.data(), {1}), 0.f);
    CHECK(bank[0] == 0.f);
    CHECK(bank[4] == 1.f);
  }
  SECTION("MemoryBank owns, initializes and updates") {
    MemoryBank mb(ctx, 4, D, BankInit::kUnit, 3);
    CHECK(mb.size() == 4);
    CHECK(mb.dim() == D);
    mb.update(view(f.data(), {1, D}), view(y.data(), {1}), 0.f);
    const float* row = static_cast<const float*>(mb.view().data);
    CHECK(row[4] == 1.f);
  }
}

#include "common/test_util.h"

#include <cmath>
#include <limits>
#include <random>

namespace npid::test {

std::vector<float> random_unit_rows(std::int64_t rows, std::int64_t dim, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> v(static_cast<std::size_t>(rows * dim));
  for (std::int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (std::int64_t d = 0; d < dim; ++d) {
      const float x = normal(rng);
      v[r * dim + d] = x;
      ss += double(x) * x;
    }
    const float inv = static_cast<float>(1.0 / std::sqrt(ss));
    for (std::int64_t d = 0; d < dim; ++d) v[r * dim + d] *= inv;
  }
  return v;
}

std::vector<std::int64_t> random_indices(std::int64_t count, std::int64_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int64_t> dist(0, n - 1);
  std::vector<std::int64_t> v(static_cast<std::size_t>(count));
  for (auto& x : v) x = dist(rng);
  return v;
}

template <typename T>
static double rel_err(const std::vector<T>& a, const std::vector<T>& b) {
  REQUIRE(a.size() == b.size());
  double num = 0, den = 0;
  for (std::size_t k = 0; k < a.size(); ++k) {
    const double d = double(a[k]) - double(b[k]);
    num += d * d;
    den += double(b[k]) * double(b[k]);
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-300);
}

double relative_error(const std::vector<float>& a, const std::vector<float>& b) { return rel_err(a, b); }
double relative_error(const std::vector<double>& a, const std::vector<double>& b) { return rel_err(a, b); }

double max_abs_diff(const float* a, const float* b, std::size_t n) {
  double m = 0;
  for (std::size_t k = 0; k < n; ++k) {
    const double d = std::fabs(double(a[k]) - double(b[k]));
    if (std::isnan(d)) return std::numeric_limits<double>::infinity();  // std::max would drop it
    m = std::max(m, d);
  }
  return m;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  return max_abs_diff(a.data(), b.data(), a.size());
}

void require_error(const std::function<void()>& fn, ErrorKind kind,
                   const std::vector<std::string>& needles) {
  try {
    fn();
  } catch (const Error& e) {
    INFO("message: " << e.what());
    CHECK(e.kind() == kind);
    for (const auto& n : needles) CHECK(std::string(e.what()).find(n) != std::string::npos);
    return;
  }
  FAIL("expected an npid::Error mentioning " << (needles.empty() ? "" : needles.front()));
}

Tensor to_device(Context& ctx, const std::vector<float>& host, Shape shape) {
  Tensor t(shape, DType::kFloat32, ctx.device());
  copy(ctx, t.view(), view(host.data(), shape));
  return t;
}

Tensor to_device(Context& ctx, const std::vector<std::int64_t>& host, Shape shape) {
  Tensor t(shape, DType::kInt64, ctx.device());
  copy(ctx, t.view(), view(host.data(), shape));
  return t;
}

}  // namespace npid::test

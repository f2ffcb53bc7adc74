// Finite differences in double: central differences of a scalar function of
// one array, compared with an analytic gradient by relative error.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "common/test_util.h"

namespace npid::test {

inline std::vector<double> randn(std::size_t n, std::uint64_t seed, double scale = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> dist(0.0, scale);
  std::vector<double> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// d loss / d v[k] for every k by central differences (v is restored).
inline std::vector<double> numeric_grad(std::vector<double>& v, const std::function<double()>& loss,
                                        double h = 1e-6) {
  std::vector<double> g(v.size());
  for (std::size_t k = 0; k < v.size(); ++k) {
    const double keep = v[k];
    v[k] = keep + h;
    const double up = loss();
    v[k] = keep - h;
    const double down = loss();
    v[k] = keep;
    g[k] = (up - down) / (2 * h);
  }
  return g;
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t k = 0; k < a.size(); ++k) s += a[k] * b[k];
  return s;
}

}  // namespace npid::test

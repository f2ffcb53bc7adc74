// Test helpers: seeded random data, error measures, error-message matching.
#pragma once

#include <catch2/catch.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "npid/npid.h"

namespace npid::test {

// Rows of unit-norm Gaussian vectors, (rows, dim), from a fixed seed.
std::vector<float> random_unit_rows(std::int64_t rows, std::int64_t dim, std::uint64_t seed);
// Uniform integers in [0, n).
std::vector<std::int64_t> random_indices(std::int64_t count, std::int64_t n, std::uint64_t seed);

// ||a - b|| / max(||b||, tiny) over whole arrays.
double relative_error(const std::vector<float>& a, const std::vector<float>& b);
double relative_error(const std::vector<double>& a, const std::vector<double>& b);
// max |a - b|; +infinity when any difference is NaN (a NaN on either side, or
// inf - inf), so that `max_abs_diff(...) < tol` fails on NaNs.
double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b);
double max_abs_diff(const float* a, const float* b, std::size_t n);

// Runs fn, requires an npid::Error of `kind` whose message contains every
// string in `needles`.
void require_error(const std::function<void()>& fn, ErrorKind kind,
                   const std::vector<std::string>& needles);

// Host <-> device helpers for the GPU tests.
template <typename T>
std::vector<T> to_host(Context& ctx, const TensorView& v) {
  std::vector<T> out(static_cast<std::size_t>(v.numel()));
  copy(ctx, TensorView(out.data(), v.dtype, v.shape, Device::cpu()), v);
  return out;
}

Tensor to_device(Context& ctx, const std::vector<float>& host, Shape shape);
Tensor to_device(Context& ctx, const std::vector<std::int64_t>& host, Shape shape);

}  // namespace npid::test

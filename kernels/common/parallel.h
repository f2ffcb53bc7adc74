// common/parallel.h -- a minimal parallel-for for the CPU references.
//
// Splits [0, n) into `threads` contiguous chunks run on std::threads. Each
// index is handled by exactly one call, so callers that write per-index
// results and reduce them afterwards in index order stay deterministic.
#pragma once

#include <algorithm>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace npid {

template <typename Fn>
void parallel_for(std::int64_t n, int threads, Fn&& fn) {
  const std::int64_t t = std::max<std::int64_t>(1, std::min<std::int64_t>(threads, n));
  if (t <= 1) {
    for (std::int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::exception_ptr error;
  std::mutex error_mutex;
  std::vector<std::thread> pool;
  pool.reserve(static_cast<std::size_t>(t));
  for (std::int64_t w = 0; w < t; ++w) {
    const std::int64_t begin = n * w / t, end = n * (w + 1) / t;
    pool.emplace_back([&, begin, end] {
      try {
        for (std::int64_t i = begin; i < end; ++i) fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
      }
    });
  }
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace npid

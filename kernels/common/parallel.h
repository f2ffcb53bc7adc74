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
#include <system_error>
#include <thread>
#include <vector>

namespace npid {

// Threads to use: `requested` when > 0, else every core (at least 1).
inline int resolve_threads(int requested) {
  if (requested > 0) return requested;
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

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
  auto run_range = [&](std::int64_t begin, std::int64_t end) {
    try {
      for (std::int64_t i = begin; i < end; ++i) fn(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
  };
  // Chunk 0 runs on the calling thread; if a thread cannot be started, its
  // chunk runs here too, so no std::thread is ever destroyed joinable.
  for (std::int64_t w = 1; w < t; ++w) {
    const std::int64_t begin = n * w / t, end = n * (w + 1) / t;
    try {
      pool.emplace_back(run_range, begin, end);
    } catch (const std::system_error&) {
      run_range(begin, end);
    }
  }
  run_range(0, n / t);
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace npid

// bench_common.h -- what every Google Benchmark program here shares: skipping
// GPU cases without a device (reported, never silently passed), the CUDA
// context line, and timing one iteration (CUDA events on a device, the wall
// clock on the CPU).
#pragma once

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <memory>

#include "core/check.h"
#include "cuda_events.h"
#include "npid/context.h"
#include "npid/device.h"
#include "npid/tensor.h"

namespace npid::bench {

// True (and the case marked skipped) when there is no CUDA device.
inline bool skip_without_gpu(benchmark::State& state) {
  if (cuda_available()) return false;
  state.SkipWithError("skipped: no CUDA device");
  for (auto _ : state) {
  }
  return true;
}

// The "cuda" context line, and a note on stderr when GPU cases will not run.
inline void report_cuda() {
  benchmark::AddCustomContext("cuda", cuda_status());
  if (!cuda_available())
    std::fprintf(stderr, "%s: the GPU cases were NOT run (reported as skipped).\n", cuda_status().c_str());
}

// Seconds one call of fn() takes: GPU time of the work it enqueues on ctx's
// stream, or wall-clock time on the CPU.
class IterationTimer {
 public:
  explicit IterationTimer(const Context& ctx) : ctx_(ctx) {
    if (ctx.is_cuda()) events_ = std::make_unique<CudaEvents>();
  }
  template <typename Fn>
  double seconds(Fn&& fn) {
    if (events_) return events_->seconds(ctx_.stream(), fn);
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

 private:
  const Context& ctx_;
  std::unique_ptr<CudaEvents> events_;
};

// The device's copy bandwidth, the baseline of the bandwidth fractions: a
// 1 GiB device-to-device copy per iteration (CUDA events); counter copy_GBps
// (bytes read + written per second), which it also returns.
inline double device_copy_benchmark(benchmark::State& state, Context& ctx) {
  const std::size_t bytes = std::size_t(1) << 30;
  Tensor a({static_cast<std::int64_t>(bytes)}, DType::kUInt8, ctx.device());
  Tensor b({static_cast<std::int64_t>(bytes)}, DType::kUInt8, ctx.device());
  fill_zero(ctx, a);
  CudaEvents ev;
  double total = 0;
  for (auto _ : state) {
    const double s = ev.seconds(ctx.stream(), [&] {
      NPID_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, ctx.stream()));
    });
    state.SetIterationTime(s);
    total += s;
  }
  const double gbps = 2.0 * static_cast<double>(bytes) * static_cast<double>(state.iterations()) / total / 1e9;
  state.counters["copy_GBps"] = gbps;
  return gbps;
}

}  // namespace npid::bench

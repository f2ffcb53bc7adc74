// cuda_events.h -- CUDA-event timing for the benchmarks (GPU time of the work
// enqueued on a stream between start and stop).
#pragma once

#include <cuda_runtime_api.h>

#include "core/check.h"
#include "npid/context.h"

namespace npid::bench {

class CudaEvents {
 public:
  CudaEvents() {
    NPID_CUDA_CHECK(cudaEventCreate(&start_));
    NPID_CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~CudaEvents() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  CudaEvents(const CudaEvents&) = delete;
  CudaEvents& operator=(const CudaEvents&) = delete;

  void start(StreamHandle s) { NPID_CUDA_CHECK(cudaEventRecord(start_, s)); }
  double stop_seconds(StreamHandle s) {
    NPID_CUDA_CHECK(cudaEventRecord(stop_, s));
    NPID_CUDA_CHECK(cudaEventSynchronize(stop_));
    float ms = 0;
    NPID_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    return ms * 1e-3;
  }
  // Seconds of GPU time taken by the work fn() enqueues on s.
  template <typename Fn>
  double seconds(StreamHandle s, Fn&& fn) {
    start(s);
    fn();
    return stop_seconds(s);
  }

 private:
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

}  // namespace npid::bench

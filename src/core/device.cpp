// CUDA device discovery that degrades to "no CUDA device" without a driver.
#include "npid/device.h"

#include <cuda_runtime_api.h>

#include <cstdio>
#include <string>

#include "core/check.h"
#include "npid/error.h"

namespace npid {

namespace {
// cudaGetDeviceCount's error when there is no usable device (cleared so that
// it cannot surface later as somebody else's error).
cudaError_t probe(int* count) {
  *count = 0;
  const cudaError_t err = cudaGetDeviceCount(count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    *count = 0;
  }
  return err;
}
}  // namespace

int cuda_device_count() noexcept {
  int count = 0;
  probe(&count);
  return count;
}

std::string cuda_status() noexcept {
  try {
    int count = 0;
    const cudaError_t err = probe(&count);
    if (err != cudaSuccess || count == 0) {
      return std::string("no CUDA device (") +
             (err != cudaSuccess ? cudaGetErrorString(err) : "device count is 0") + ")";
    }
    std::string s = std::to_string(count) + (count == 1 ? " CUDA device:" : " CUDA devices:");
    for (int i = 0; i < count; ++i) {
      const DeviceInfo d = cuda_device_info(i);
      char buf[256];
      std::snprintf(buf, sizeof buf, " [%d] %s (sm_%d%d, %d SMs, %.1f GiB)", i,
                    d.name.c_str(), d.compute_major, d.compute_minor,
                    d.multiprocessors, d.global_memory_bytes / 1073741824.0);
      s += buf;
    }
    return s;
  } catch (...) {
    return "no CUDA device (device query failed)";
  }
}

DeviceInfo cuda_device_info(int index) {
  const int count = cuda_device_count();
  if (index < 0 || index >= count)
    throw Error(ErrorKind::kNoDevice,
                "cuda_device_info: argument 'index': expected [0, " +
                    std::to_string(count) + "), got " + std::to_string(index) +
                    "; " + (count == 0 ? cuda_status() : std::string()));
  cudaDeviceProp prop{};
  NPID_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  DeviceInfo d;
  d.index = index;
  d.name = prop.name;
  d.compute_major = prop.major;
  d.compute_minor = prop.minor;
  d.multiprocessors = prop.multiProcessorCount;
  d.global_memory_bytes = prop.totalGlobalMem;
  d.l2_cache_bytes = static_cast<std::size_t>(prop.l2CacheSize);
  d.max_threads_per_multiprocessor = prop.maxThreadsPerMultiProcessor;
  d.shared_memory_per_block_optin = prop.sharedMemPerBlockOptin;
  return d;
}

std::vector<DeviceInfo> cuda_devices() {
  std::vector<DeviceInfo> out;
  const int count = cuda_device_count();
  for (int i = 0; i < count; ++i) out.push_back(cuda_device_info(i));
  return out;
}

}  // namespace npid

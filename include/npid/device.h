// npid/device.h -- CUDA device discovery that works without a driver.
//
// On a machine with no GPU, or no driver, these functions report "no CUDA
// device" (count 0 and a reason) instead of failing, so the same binary runs
// its CPU path anywhere.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace npid {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  int multiprocessors = 0;
  std::size_t global_memory_bytes = 0;
  std::size_t l2_cache_bytes = 0;
  int max_threads_per_multiprocessor = 0;
  // Dynamic shared memory one block may opt into (cudaDevAttrMaxSharedMemoryPerBlockOptin).
  std::size_t shared_memory_per_block_optin = 0;
};

// Number of usable CUDA devices; 0 when there is no device or no driver.
int cuda_device_count() noexcept;

// True when at least one CUDA device is usable.
inline bool cuda_available() noexcept { return cuda_device_count() > 0; }

// One line for logs: "2 CUDA devices: NVIDIA H200 (sm_90, 132 SMs, 139.8 GiB)..."
// or "no CUDA device (CUDA driver version is insufficient for CUDA runtime version)".
std::string cuda_status() noexcept;

// Properties of device `index`; throws npid::Error (kNoDevice) when absent.
DeviceInfo cuda_device_info(int index);

std::vector<DeviceInfo> cuda_devices();

}  // namespace npid

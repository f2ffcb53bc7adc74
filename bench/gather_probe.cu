// gather_probe.cu -- see gather_probe.h. A warp reads 2 rows per step (16
// lanes x 16-byte loads per row for fp32: two loads per lane; bf16: one), and
// issues kUnroll steps of loads before it uses any of them: 2 * kUnroll rows
// in flight per warp. Row r is hash(r) mod N (a multiplicative hash: as
// scattered as the NCE sampler's draws for this purpose, and nearly free).
#include "gather_probe.h"

#include <cuda_runtime.h>

#include "core/check.h"

namespace npid::bench {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 8;
constexpr int kRowsPerWarpIter = 2 * kUnroll;

__device__ __forceinline__ std::int64_t row_of(std::int64_t r, std::int64_t n) {
  const std::uint64_t h = static_cast<std::uint64_t>(r) * 0x9E3779B97F4A7C15ull;
  return static_cast<std::int64_t>((h >> 32) % static_cast<std::uint64_t>(n));
}

// kLoads 16-byte loads per lane per row: 2 for fp32 (512 B / 16 lanes), 1 for bf16.
template <int kLoads>
__global__ void __launch_bounds__(kThreads) gather_probe_kernel(const uint4* __restrict__ bank,
                                                                std::int64_t bank_size, std::int64_t rows,
                                                                float* __restrict__ sink) {
  constexpr int kRowChunks = 16 * kLoads;  // 16-byte chunks per row
  const int lane = threadIdx.x & 31;
  const int sub = lane & 15, group = lane >> 4;
  const std::int64_t warp = (static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x) >> 5;
  const std::int64_t warps = static_cast<std::int64_t>(gridDim.x) * (kThreads / 32);
  unsigned acc = 0;
  for (std::int64_t base = warp * kRowsPerWarpIter; base < rows; base += warps * kRowsPerWarpIter) {
    uint4 v[kUnroll][kLoads];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const std::int64_t r = base + 2 * u + group;
      const std::int64_t row = row_of(r < rows ? r : 0, bank_size);
#pragma unroll
      for (int c = 0; c < kLoads; ++c) v[u][c] = __ldg(bank + row * kRowChunks + c * 16 + sub);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
#pragma unroll
      for (int c = 0; c < kLoads; ++c) acc ^= v[u][c].x ^ v[u][c].y ^ v[u][c].z ^ v[u][c].w;
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) acc ^= __shfl_xor_sync(0xffffffffu, acc, offset);
  if (lane == 0) sink[warp] = __uint_as_float(acc & 0x007fffffu);  // a finite float
}

unsigned probe_blocks(std::int64_t rows) {
  int device = 0, sms = 0;
  NPID_CUDA_CHECK(cudaGetDevice(&device));
  NPID_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  // Enough warps for the memory system (8 blocks of 8 warps per SM), never
  // more than there are rows.
  const std::int64_t want = static_cast<std::int64_t>(sms) * 8;
  const std::int64_t cap = (rows + kRowsPerWarpIter * 8 - 1) / (kRowsPerWarpIter * 8);
  return static_cast<unsigned>(want < cap ? want : cap);
}

}  // namespace

std::int64_t gather_probe_sink_floats(std::int64_t rows) {
  return static_cast<std::int64_t>(probe_blocks(rows)) * (kThreads / 32);
}

void launch_gather_probe(const void* bank, bool bf16, std::int64_t bank_size, std::int64_t rows, float* sink,
                         StreamHandle stream) {
  const unsigned blocks = probe_blocks(rows);
  const auto* b = static_cast<const uint4*>(bank);
  if (bf16) {
    gather_probe_kernel<1><<<blocks, kThreads, 0, stream>>>(b, bank_size, rows, sink);
  } else {
    gather_probe_kernel<2><<<blocks, kThreads, 0, stream>>>(b, bank_size, rows, sink);
  }
  NPID_CUDA_CHECK(cudaGetLastError());
}

}  // namespace npid::bench

// Scoped choices of the fused NCE kernel's layout and column splits (tuning
// hooks), restored to the defaults even when a test fails mid-way.
#pragma once

#include <cstddef>

#include "nce.h"
#include "npid/context.h"

namespace npid::test {

// nce_last_layout()'s code of a variant: ring (1000 async, 2000 tensor core)
// + lanes * 10 + stages.
inline int layout_code(int lanes, int stages, NceRing ring) {
  return (ring == NceRing::kAsync ? 1000 : ring == NceRing::kTensorCore ? 2000 : 0) + lanes * 10 + stages;
}

// Shared memory a variant's ring takes per block, written out independently
// of kernels/nce.cu: 8 warps x stages x one step of rows -- for the async
// ring 32 lanes x (D_max = 128 elements / lanes / 16-byte chunk) chunks of
// 16 bytes, for the tensor-core gather 16 rows of 128 bf16. None for the
// register ring.
inline std::size_t ring_smem_bytes(int lanes, int stages, NceRing ring, std::size_t element_bytes) {
  const std::size_t step = ring == NceRing::kAsync        ? 32 * (128 * element_bytes / 16 / lanes) * 16
                           : ring == NceRing::kTensorCore ? 16 * 128 * 2
                                                          : 0;
  return 8 * static_cast<std::size_t>(stages) * step;
}

// The code nce_last_layout() must report for a variant on `ctx`'s device:
// its own, or `default_code` where its ring exceeds what a block may opt
// into (99 KB on sm_86 / sm_89: the 128 KB rings fall back there).
inline int expected_layout_code(const Context& ctx, int lanes, int stages, NceRing ring, std::size_t element_bytes,
                                int default_code) {
  return ring_smem_bytes(lanes, stages, ring, element_bytes) <= ctx.device_info().shared_memory_per_block_optin
             ? layout_code(lanes, stages, ring)
             : default_code;
}

class LayoutOverride {
 public:
  LayoutOverride(int lanes, int stages, NceRing ring = NceRing::kRegisters) {
    nce_set_layout_override(lanes, stages, ring);
  }
  ~LayoutOverride() { nce_set_layout_override(0, 0); }
  LayoutOverride(const LayoutOverride&) = delete;
  LayoutOverride& operator=(const LayoutOverride&) = delete;
};

class SplitsOverride {
 public:
  explicit SplitsOverride(int splits) { nce_set_splits_override(splits); }
  ~SplitsOverride() { nce_set_splits_override(0); }
  SplitsOverride(const SplitsOverride&) = delete;
  SplitsOverride& operator=(const SplitsOverride&) = delete;
};

}  // namespace npid::test

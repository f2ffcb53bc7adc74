// Scoped choices of the fused NCE kernel's layout and column splits (tuning
// hooks), restored to the defaults even when a test fails mid-way.
#pragma once

#include "nce.h"

namespace npid::test {

// nce_last_layout()'s code of a variant: ring (1000 async, 2000 tensor core)
// + lanes * 10 + stages.
inline int layout_code(int lanes, int stages, NceRing ring) {
  return (ring == NceRing::kAsync ? 1000 : ring == NceRing::kTensorCore ? 2000 : 0) + lanes * 10 + stages;
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

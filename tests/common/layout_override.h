// Scoped choice of the fused NCE kernel's layout (tuning hook), restored to
// the default even when a test fails mid-way.
#pragma once

#include "nce.h"

namespace npid::test {

class LayoutOverride {
 public:
  LayoutOverride(int lanes, int stages, NceRing ring = NceRing::kRegisters) {
    nce_set_layout_override(lanes, stages, ring);
  }
  ~LayoutOverride() { nce_set_layout_override(0, 0); }
  LayoutOverride(const LayoutOverride&) = delete;
  LayoutOverride& operator=(const LayoutOverride&) = delete;
};

}  // namespace npid::test

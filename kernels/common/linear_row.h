// common/linear_row.h -- one row of a linear classifier's loss: scores in,
// dLoss/dscores out (in place), shared by the CUDA kernel and the CPU reference.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/hostdevice.h"
#include "npid/linear_eval.h"

namespace npid {

NPID_HD void linear_row(float* s, std::int64_t C, std::int64_t y, LinearLoss loss, float* row_loss,
                        float* correct) {
  std::int64_t best = 0;
  for (std::int64_t c = 1; c < C; ++c)
    if (s[c] > s[best]) best = c;
  *correct = best == y ? 1.0f : 0.0f;
  if (loss == LinearLoss::kSoftmax) {
    const float m = s[best];
    float sum = 0.0f;
    for (std::int64_t c = 0; c < C; ++c) sum += expf(s[c] - m);
    *row_loss = logf(sum) - (s[y] - m);
    const float inv = 1.0f / sum;
    for (std::int64_t c = 0; c < C; ++c) s[c] = expf(s[c] - m) * inv - (c == y ? 1.0f : 0.0f);
  } else {
    const float sy = s[y];
    float total = 0.0f, active = 0.0f;
    for (std::int64_t c = 0; c < C; ++c) {
      if (c == y) continue;
      const float margin = 1.0f + s[c] - sy;
      total += margin > 0.0f ? margin : 0.0f;
      s[c] = margin > 0.0f ? 1.0f : 0.0f;
      active += s[c];
    }
    s[y] = -active;
    *row_loss = total;
  }
}

}  // namespace npid

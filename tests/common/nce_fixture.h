// A seeded NCE problem on the host: features, bank, targets.
#pragma once

#include "common/test_util.h"

namespace npid::test {

struct NceData {
  std::int64_t B, D, N, K;
  std::vector<float> features;        // (B, D) unit rows
  std::vector<float> bank;            // (N, D) unit rows
  std::vector<std::int64_t> targets;  // (B)

  NceData(std::int64_t b, std::int64_t d, std::int64_t n, std::int64_t k, std::uint64_t seed)
      : B(b), D(d), N(n), K(k),
        features(random_unit_rows(b, d, seed)),
        bank(random_unit_rows(n, d, seed + 1)),
        targets(random_indices(b, n, seed + 2)) {
    // Pull each feature toward its positive so P_i0 is realistic (not noise).
    for (std::int64_t i = 0; i < B; ++i) {
      double ss = 0;
      for (std::int64_t c = 0; c < D; ++c) {
        float& f = features[i * D + c];
        f = 0.5f * f + 0.5f * bank[targets[i] * D + c];
        ss += double(f) * f;
      }
      if (ss == 0) {  // f = -bank row (possible at tiny D, e.g. D = 1): take the positive itself
        for (std::int64_t c = 0; c < D; ++c) features[i * D + c] = bank[targets[i] * D + c];
        continue;
      }
      for (std::int64_t c = 0; c < D; ++c) features[i * D + c] /= static_cast<float>(std::sqrt(ss));
    }
  }
};

}  // namespace npid::test

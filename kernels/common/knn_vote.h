// common/knn_vote.h -- the weighted kNN vote for one query, shared by the
// CUDA kernel and the CPU reference (npid/knn.h states the rule).
#pragma once

#include <cmath>
#include <cstdint>

#include "common/hostdevice.h"

namespace npid {

// scores: C floats of scratch. Returns the prediction; *top5 = true class in
// the top 5. Neighbours are summed in their order (value descending), so the
// result does not depend on the backend's thread layout. Each weight is
// exp((sim - sims[0]) / sigma), i.e. exp(sim / sigma) times the common factor
// exp(-sims[0] / sigma), which changes no class's rank: the largest weight
// is 1 and the sum at most k, where exp(sim / sigma) itself overflows fp32
// for sigma below ~0.0113 and ties every class at infinity.
NPID_HD std::int64_t knn_vote(const float* sims, const std::int64_t* neighbours, std::int64_t k,
                              const std::int64_t* key_labels, std::int64_t num_classes,
                              float inv_sigma, std::int64_t true_label, float* scores,
                              bool* top5) {
  for (std::int64_t c = 0; c < num_classes; ++c) scores[c] = 0.0f;
  const float top = k > 0 ? sims[0] : 0.0f;  // the largest similarity (neighbours are sorted)
  for (std::int64_t j = 0; j < k; ++j) scores[key_labels[neighbours[j]]] += expf((sims[j] - top) * inv_sigma);
  std::int64_t best = 0, rank = 0;
  const float mine = scores[true_label];
  for (std::int64_t c = 0; c < num_classes; ++c) {
    if (scores[c] > scores[best]) best = c;
    if (scores[c] > mine || (scores[c] == mine && c < true_label)) ++rank;
  }
  *top5 = rank < 5;
  return best;
}

}  // namespace npid

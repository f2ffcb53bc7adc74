// knn_cpu.cpp -- CPU reference of the top-k similarity search (exact fp32 dot
// products, full sort per query) and of the vote.
#include <algorithm>
#include <numeric>
#include <vector>

#include "common/bf16.h"
#include "common/knn_vote.h"
#include "common/parallel.h"
#include "knn.h"

namespace npid {

void knn_topk_cpu(const KnnTopkProblem& p, int threads) {
  const std::int64_t N = p.num_keys, D = p.dim, k = p.k;
  // Keys widened to fp32 once.
  std::vector<float> widened;
  const float* keys = static_cast<const float*>(p.keys);
  if (p.key_dtype == DType::kBFloat16) {
    widened.resize(static_cast<std::size_t>(N * D));
    const auto* b = static_cast<const bf16*>(p.keys);
    for (std::int64_t e = 0; e < N * D; ++e) widened[e] = bf16_to_float(b[e]);
    keys = widened.data();
  }
  parallel_for(p.num_queries, threads, [&](std::int64_t q) {
    std::vector<float> sims(static_cast<std::size_t>(N));
    const float* f = p.queries + q * D;
    for (std::int64_t n = 0; n < N; ++n) {
      float s = 0.0f;
      for (std::int64_t d = 0; d < D; ++d) s += f[d] * keys[n * D + d];
      sims[n] = s;
    }
    std::vector<std::int64_t> order(static_cast<std::size_t>(N));
    std::iota(order.begin(), order.end(), std::int64_t(0));
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](std::int64_t a, std::int64_t b) {
      return sims[a] > sims[b] || (sims[a] == sims[b] && a < b);
    });
    for (std::int64_t j = 0; j < k; ++j) {
      p.values[q * k + j] = sims[order[j]];
      p.indices[q * k + j] = order[j];
    }
  });
}

void knn_vote_cpu(const KnnVoteProblem& p, int threads) {
  parallel_for(p.num_queries, threads, [&](std::int64_t q) {
    std::vector<float> scores(static_cast<std::size_t>(p.num_classes));
    bool top5 = false;
    p.predictions[q] = knn_vote(p.values + q * p.k, p.indices + q * p.k, p.k, p.key_labels,
                                p.num_classes, p.inv_sigma, p.query_labels[q], scores.data(), &top5);
    p.top5[q] = top5 ? 1 : 0;
  });
}

}  // namespace npid

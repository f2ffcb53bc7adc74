// kernels/knn.h -- tiled top-k similarity search and the kNN vote (internal).
#pragma once

#include <cstdint>

#include "npid/context.h"
#include "npid/tensor.h"

namespace npid {

struct KnnTopkProblem {
  const float* queries = nullptr;  // (Q, D)
  const void* keys = nullptr;      // (N, D) float32 or bf16
  DType key_dtype = DType::kFloat32;
  std::int64_t num_queries = 0, num_keys = 0, dim = 0, k = 0;
  bool tf32 = false;
  std::int64_t query_tile = 0, key_chunk = 0;  // CUDA tiling; 0 = automatic (tests force small tiles)
  float* values = nullptr;         // (Q, k)
  std::int64_t* indices = nullptr; // (Q, k)
};

struct KnnVoteProblem {
  const float* values = nullptr;           // (Q, k)
  const std::int64_t* indices = nullptr;   // (Q, k)
  const std::int64_t* key_labels = nullptr;
  const std::int64_t* query_labels = nullptr;
  std::int64_t num_queries = 0, k = 0, num_classes = 0;
  float inv_sigma = 10.0f;
  std::int64_t* predictions = nullptr;     // (Q)
  std::int64_t* top5 = nullptr;            // (Q) 0/1
};

void launch_knn_topk(Context& ctx, const KnnTopkProblem& p);
void knn_topk_cpu(const KnnTopkProblem& p, int threads);
void launch_knn_vote(Context& ctx, const KnnVoteProblem& p);
void knn_vote_cpu(const KnnVoteProblem& p, int threads);

}  // namespace npid

// npid/knn.h -- weighted k-nearest-neighbour evaluation (docs/math.md s.9).
//
// knn_topk: for every query row, the k largest dot products with the key rows
// (cosine similarities for unit rows) and their key indices, sorted by value
// descending, ties broken by the smaller key index. Tiled: a similarity tile
// (queries x key chunk) from cuBLAS, then a selection kernel merges the chunk
// into each query's running top-k, so the full queries x N matrix never exists
// (50,000 x 1,281,167 would be 256 GB). 1 <= k <= min(N, 1024). Inputs must
// be finite (a NaN similarity ranks differently on the two backends).
//
// knn_classify: weighted vote over the top-k: each neighbour adds
// exp(sim / sigma) to its class (computed as exp((sim - max sim) / sigma),
// the same ranking without fp32 overflow at small sigma); the prediction is
// the arg-max (smallest class
// on ties); a query counts as top-5 correct when fewer than 5 classes score
// above its true class (ties ranked by class index). Keys may be the memory
// bank (float32 or bfloat16) or recomputed features.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "npid/context.h"
#include "npid/tensor.h"

namespace npid {

constexpr std::int64_t kMaxKnnK = 1024;
constexpr std::int64_t kMaxKnnClasses = 4096;

// queries (Q, D) float32; keys (N, D) float32 or bfloat16; values (Q, k)
// float32 and indices (Q, k) int64, written. tf32: let cuBLAS use TF32 tensor
// cores for the similarity tiles (CUDA; ~1e-3 relative error in the values).
void knn_topk(Context& ctx, const TensorView& queries, const TensorView& keys, std::int64_t k,
              const TensorView& values, const TensorView& indices, bool tf32 = false);

struct KnnConfig {
  std::int64_t k = 200;
  float sigma = 0.1f;            // neighbour weight exp(sim / sigma)
  std::int64_t num_classes = 0;  // 0: 1 + the largest key label
  bool tf32 = false;
  std::int64_t query_block = 8192;  // queries per knn_topk call (bounds memory)
};

struct KnnResult {
  std::int64_t queries = 0;
  double top1 = 0, top5 = 0;          // fractions of the queries
  std::vector<double> per_class_top1; // by true class (NaN for a class with no query)
  std::vector<std::int64_t> predictions;  // per query
};

// query_labels (Q) and key_labels (N) int64 in [0, num_classes), on ctx's device.
KnnResult knn_classify(Context& ctx, const KnnConfig& config, const TensorView& queries,
                       const TensorView& query_labels, const TensorView& keys,
                       const TensorView& key_labels);

}  // namespace npid

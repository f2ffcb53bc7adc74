// npid/evaluate.h -- evaluating an embedding network (docs/math.md s.9):
// features of a data set, weighted kNN (bank and recompute modes), the linear
// classifier, and a retrieval picture.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "npid/augment.h"
#include "npid/data.h"
#include "npid/knn.h"
#include "npid/linear_eval.h"
#include "npid/resnet.h"

namespace npid {

// Embeds every image of `set` (host or resident) with `transform` (an eval
// transform producing net's image size), in batches of at most
// net.max_batch(): features (N, D) float32 on ctx's device, in set order.
// A streaming source is decoded batch by batch on CPU threads (Loader::streaming).
Tensor embed_dataset(Context& ctx, ResNet18& net, const DataSource& set, const AugmentConfig& transform);

// The eval transform matching a network: cifar10_eval for the CIFAR stem,
// imagenet_eval (resize shorter to 256/224 of the size, centre crop) for the
// ImageNet stem, at net's image size.
AugmentConfig eval_transform_for(const ResNetConfig& config);

struct RetrievalGridConfig {
  std::int64_t neighbours = 8;  // per query row
  std::int64_t cell = 64;       // pixels per image (nearest-neighbour scaling)
};

// One row per query: the query framed grey, then its neighbours framed green
// (same label) or red (different). neighbours: (queries.size() x n) rows of
// `train`, best first. Written atomically.
void write_retrieval_grid(const std::string& path, const ImageSet& queries, const std::vector<std::int64_t>& query_rows,
                          const ImageSet& train, const std::vector<std::int64_t>& neighbours,
                          const RetrievalGridConfig& config = {});

struct EvalConfig {
  KnnConfig knn;                 // k = 200, sigma = 0.1
  bool knn_recompute = true;     // train features recomputed with the eval transform
  bool knn_bank = true;          // train features = the memory bank (when one is given)
  bool linear = true;
  LinearEvalConfig linear_config;
  std::string retrieval_png;     // empty: no picture
  std::int64_t retrieval_queries = 8;
  RetrievalGridConfig retrieval;
};

struct EvalReport {
  std::int64_t train_size = 0, test_size = 0, classes = 0;
  std::optional<KnnResult> knn_recompute, knn_bank;
  std::int64_t knn_k = 0;  // the k and sigma the kNN results used (k clamped to the train size)
  float knn_sigma = 0;
  std::optional<LinearEvalResult> linear;
  std::string retrieval_png;
  double seconds = 0;
  std::string to_json() const;   // everything above, as JSON
  std::string to_table() const;  // a short human-readable summary
};

// bank: (train.size(), D) float32/bf16 on ctx's device, or empty. Streaming
// sources are embedded batch by batch; the retrieval picture then decodes
// just the images it shows.
EvalReport evaluate(Context& ctx, const EvalConfig& config, ResNet18& net, const DataSource& train,
                    const DataSource& test, const TensorView& bank = {});

}  // namespace npid

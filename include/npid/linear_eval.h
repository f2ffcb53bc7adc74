// npid/linear_eval.h -- linear classifiers on frozen features
// (docs/math.md s.9: the paper's CIFAR "linear SVM" column).
//
// linear_eval standardizes the features (per-dimension mean and std of the
// training rows), holds out a seeded fraction of the train split, fits a
// linear classifier for every regularization strength of the grid on the rest,
// picks the strength with the best held-out accuracy (the smallest on ties),
// refits on the whole train split and reports train and test accuracy.
//
// Classifiers: multiclass hinge loss (Weston-Watkins SVM:
// sum over j != y of max(0, 1 + s_j - s_y)) or softmax cross-entropy, plus
// l2/2 ||W||^2 (bias not regularized). Fitted by full-batch gradient descent
// with Nesterov momentum 0.9, step 1/L (L from a power iteration on the
// standardized features) and a cosine decay. On CUDA the scores and weight
// gradients are cuBLAS GEMMs and the loss/gradient rows one kernel; the CPU
// reference computes the same steps.
#pragma once

#include <cstdint>
#include <vector>

#include "npid/context.h"
#include "npid/tensor.h"

namespace npid {

enum class LinearLoss { kHinge, kSoftmax };
const char* to_string(LinearLoss loss) noexcept;

struct LinearEvalConfig {
  LinearLoss loss = LinearLoss::kHinge;
  std::vector<float> l2_grid = {1e-6f, 1e-5f, 1e-4f, 1e-3f, 1e-2f};
  float holdout = 0.1f;         // fraction of the train split held out for the grid
  std::int64_t iterations = 300;
  std::uint64_t seed = 0;       // the held-out split
  std::int64_t num_classes = 0; // 0: 1 + the largest train label
};

struct LinearEvalResult {
  LinearLoss loss = LinearLoss::kHinge;
  std::vector<float> l2_grid;
  std::vector<double> holdout_accuracy;  // per grid value
  float best_l2 = 0;
  double train_accuracy = 0, test_accuracy = 0;
  std::vector<float> weights;  // (C, D) on standardized features, host
  std::vector<float> bias;     // (C)
  std::vector<float> feature_mean, feature_std;  // (D)
};

// train_features (N, D), test_features (M, D) float32; labels int64 (N), (M);
// any device (the features are read to the host once for standardization).
LinearEvalResult linear_eval(Context& ctx, const LinearEvalConfig& config, const TensorView& train_features,
                             const TensorView& train_labels, const TensorView& test_features,
                             const TensorView& test_labels);

}  // namespace npid

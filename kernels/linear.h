// kernels/linear.h -- the steps of a linear classifier fit (internal):
// scores = X W^T + b, per-row loss gradients, weight gradients.
#pragma once

#include <cstdint>

#include "npid/context.h"
#include "npid/linear_eval.h"

namespace npid {

struct LinearProblem {
  const float* x = nullptr;          // (n, D) standardized features
  const std::int64_t* y = nullptr;   // (n)
  std::int64_t n = 0, dim = 0, classes = 0;
  LinearLoss loss = LinearLoss::kHinge;
  float* scores = nullptr;           // (n, C) scratch, becomes dL/dscores
  float* row_loss = nullptr;         // (n)
  float* correct = nullptr;          // (n) 1 when the arg-max is y
};

// params: W (C, D) then b (C); grads the same layout (overwritten):
// grad = mean over rows of the loss gradient.
void linear_forward_backward(Context& ctx, const LinearProblem& p, const float* params, float* grads);
void linear_forward_backward_cpu(const LinearProblem& p, const float* params, float* grads, int threads);

}  // namespace npid

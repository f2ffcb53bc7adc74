// linear_cpu.cpp -- CPU reference of a linear classifier's forward+backward.
#include <vector>

#include "common/linear_row.h"
#include "common/parallel.h"
#include "linear.h"

namespace npid {

void linear_forward_backward_cpu(const LinearProblem& p, const float* params, float* grads, int threads) {
  const std::int64_t n = p.n, D = p.dim, C = p.classes;
  const float* W = params;
  const float* b = params + C * D;
  parallel_for(n, threads, [&](std::int64_t i) {
    float* s = p.scores + i * C;
    for (std::int64_t c = 0; c < C; ++c) {
      float acc = 0.0f;
      for (std::int64_t d = 0; d < D; ++d) acc += p.x[i * D + d] * W[c * D + d];
      s[c] = acc + b[c];
    }
    linear_row(s, C, p.y[i], p.loss, p.row_loss + i, p.correct + i);
  });
  // Gradients: each class row summed over samples in sample order (deterministic).
  parallel_for(C, threads, [&](std::int64_t c) {
    std::vector<double> acc(static_cast<std::size_t>(D) + 1, 0.0);
    for (std::int64_t i = 0; i < n; ++i) {
      const double g = p.scores[i * C + c];
      if (g == 0.0) continue;
      for (std::int64_t d = 0; d < D; ++d) acc[d] += g * p.x[i * D + d];
      acc[D] += g;
    }
    for (std::int64_t d = 0; d < D; ++d) grads[c * D + d] = static_cast<float>(acc[d] / n);
    grads[C * D + c] = static_cast<float>(acc[D] / n);
  });
}

}  // namespace npid

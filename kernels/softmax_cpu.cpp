// softmax_cpu.cpp -- CPU reference of the full non-parametric softmax.
//
// Straight from the definition: all N logits of a sample, a max-shifted
// log-sum-exp, then the weighted sum of rows; accumulation in double. Samples
// run in parallel and are reduced in batch order (thread-count independent).
#include <cmath>
#include <limits>
#include <vector>

#include "common/parallel.h"
#include "softmax.h"

namespace npid {

template <typename Real, typename BankT>
Real softmax_reference(const Real* features, const std::int64_t* targets, const BankT* bank,
                       std::int64_t B, std::int64_t D, std::int64_t N, Real temperature, Real lambda,
                       Real* grad, int threads) {
  const double inv_tau = 1.0 / static_cast<double>(temperature);
  const double lam = static_cast<double>(lambda);
  std::vector<double> sample_loss(static_cast<std::size_t>(B), 0.0);
  parallel_for(B, threads, [&](std::int64_t i) {
    const Real* f = features + i * D;
    std::vector<double> logits(static_cast<std::size_t>(N));
    double m = -std::numeric_limits<double>::infinity();
    for (std::int64_t k = 0; k < N; ++k) {
      double s = 0.0;
      for (std::int64_t d = 0; d < D; ++d)
        s += static_cast<double>(to_float(bank[k * D + d])) * static_cast<double>(f[d]);
      logits[k] = s * inv_tau;
      m = std::max(m, logits[k]);
    }
    double sum = 0.0;
    for (std::int64_t k = 0; k < N; ++k) sum += std::exp(logits[k] - m);
    const std::int64_t y = targets[i];
    double loss = (m + std::log(sum) - logits[y]) / static_cast<double>(B);
    std::vector<double> g(static_cast<std::size_t>(D), 0.0);
    if (grad != nullptr) {
      for (std::int64_t k = 0; k < N; ++k) {
        const double w = std::exp(logits[k] - m) / sum - (k == y ? 1.0 : 0.0);
        for (std::int64_t d = 0; d < D; ++d) g[d] += w * static_cast<double>(to_float(bank[k * D + d]));
      }
    }
    const double scale = inv_tau / static_cast<double>(B);
    double prox = 0.0;
    for (std::int64_t d = 0; d < D; ++d) {
      const double diff = static_cast<double>(f[d]) - static_cast<double>(to_float(bank[y * D + d]));
      prox += diff * diff;
      if (grad != nullptr)
        grad[i * D + d] = static_cast<Real>(g[d] * scale + 2.0 * lam / static_cast<double>(B) * diff);
    }
    sample_loss[static_cast<std::size_t>(i)] = loss + lam / static_cast<double>(B) * prox;
  });
  double total = 0.0;
  for (double l : sample_loss) total += l;
  return static_cast<Real>(total);
}

template float softmax_reference(const float*, const std::int64_t*, const float*, std::int64_t,
                                 std::int64_t, std::int64_t, float, float, float*, int);
template float softmax_reference(const float*, const std::int64_t*, const bf16*, std::int64_t,
                                 std::int64_t, std::int64_t, float, float, float*, int);
template double softmax_reference(const double*, const std::int64_t*, const double*, std::int64_t,
                                  std::int64_t, std::int64_t, double, double, double*, int);

void softmax_forward_backward_cpu(const SoftmaxProblem& p, int threads) {
  if (p.bank_dtype == DType::kBFloat16) {
    *p.loss = softmax_reference(p.features, p.targets, static_cast<const bf16*>(p.bank), p.batch,
                                p.dim, p.bank_size, p.temperature, p.lambda, p.grad, threads);
  } else {
    *p.loss = softmax_reference(p.features, p.targets, static_cast<const float*>(p.bank), p.batch,
                                p.dim, p.bank_size, p.temperature, p.lambda, p.grad, threads);
  }
}

}  // namespace npid

// nce_cpu.cpp -- CPU reference of the fused NCE forward+backward.
//
// Same contract as launch_nce_forward_backward (kernels/nce.cu): the same
// indices (common/sampling.h), the same formulas, the same Z semantics. It is
// the oracle of the GPU tests, so it favours clarity and accumulates in
// double; samples run in parallel and are reduced in batch order, so results
// do not depend on the thread count.
#include <cmath>
#include <vector>

#include "common/parallel.h"
#include "common/sampling.h"
#include "nce.h"

namespace npid {

template <typename Real, typename BankT>
NceReferenceResult<Real> nce_reference(const NceReferenceArgs<Real, BankT>& a, int threads) {
  const std::int64_t B = a.batch, D = a.dim, N = a.bank_size, K = a.num_negatives;
  const std::int64_t kp1 = K + 1;
  const double inv_tau = 1.0 / static_cast<double>(a.temperature);
  const double kpn = static_cast<double>(K) / static_cast<double>(N);  // K * Pn
  const double noise = kpn + kNceEps;                                  // a
  const double inv_batch = 1.0 / static_cast<double>(B);
  const double z = static_cast<double>(a.z);
  const double lambda = static_cast<double>(a.lambda);

  std::vector<double> sample_loss(static_cast<std::size_t>(B), 0.0);
  std::vector<double> sample_sum_exp(static_cast<std::size_t>(B), 0.0);

  parallel_for(B, threads, [&](std::int64_t i) {
    const Real* f = a.features + i * D;
    const std::int64_t y = a.targets[i];
    std::vector<double> grad(static_cast<std::size_t>(D), 0.0);
    double loss = 0.0, sum_exp = 0.0;
    for (std::int64_t j = 0; j < kp1; ++j) {
      std::int64_t idx;
      if (j == 0) {
        idx = y;
      } else if (a.negatives != nullptr) {
        idx = a.negatives[i * K + (j - 1)];
      } else {
        idx = nce_negative_index(a.seed, a.step, i, j, N, y, a.exclude_positive);
      }
      if (a.indices != nullptr) a.indices[i * kp1 + j] = idx;
      const BankT* v = a.bank + idx * D;
      double s = 0.0;
      for (std::int64_t d = 0; d < D; ++d) s += static_cast<double>(to_float(v[d])) * static_cast<double>(f[d]);
      const double e = std::exp(s * inv_tau);
      const double p = e / z;
      sum_exp += e;
      if (a.probs != nullptr) a.probs[i * kp1 + j] = static_cast<Real>(p);
      double coef;
      if (j == 0) {
        loss -= std::log(p / (p + noise));  // -log h_i0
        coef = -(1.0 - p / (p + noise));    // dL/ds_i0 * B * tau
      } else {
        loss -= std::log(kpn / (p + noise));
        coef = p / (p + noise);
      }
      if (a.grad != nullptr)
        for (std::int64_t d = 0; d < D; ++d) grad[d] += coef * static_cast<double>(to_float(v[d]));
    }
    loss *= inv_batch;
    const double scale = inv_batch * inv_tau;
    // Proximal term against the positive's row as it was before the update.
    const BankT* pos = a.bank + y * D;
    double prox = 0.0;
    for (std::int64_t d = 0; d < D; ++d) {
      const double diff = static_cast<double>(f[d]) - static_cast<double>(to_float(pos[d]));
      prox += diff * diff;
      grad[d] = grad[d] * scale + 2.0 * lambda * inv_batch * diff;
    }
    loss += lambda * inv_batch * prox;
    if (a.grad != nullptr)
      for (std::int64_t d = 0; d < D; ++d) a.grad[i * D + d] = static_cast<Real>(grad[d]);
    sample_loss[static_cast<std::size_t>(i)] = loss;
    sample_sum_exp[static_cast<std::size_t>(i)] = sum_exp;
  });

  double loss = 0.0, sum_exp = 0.0;
  for (std::int64_t i = 0; i < B; ++i) {
    loss += sample_loss[static_cast<std::size_t>(i)];
    sum_exp += sample_sum_exp[static_cast<std::size_t>(i)];
  }
  return {static_cast<Real>(loss), static_cast<Real>(sum_exp)};
}

template NceReferenceResult<float> nce_reference(const NceReferenceArgs<float, float>&, int);
template NceReferenceResult<double> nce_reference(const NceReferenceArgs<double, double>&, int);
template NceReferenceResult<float> nce_reference(const NceReferenceArgs<float, bf16>&, int);

namespace {
template <typename BankT>
void run_cpu(const NceProblem& p, ZUpdate z_update, int threads) {
  NceReferenceArgs<float, BankT> a;
  a.features = p.features;
  a.targets = p.targets;
  a.bank = static_cast<const BankT*>(p.bank);
  a.negatives = p.negatives;
  a.batch = p.batch;
  a.dim = p.dim;
  a.bank_size = p.bank_size;
  a.num_negatives = p.num_negatives;
  a.temperature = p.temperature;
  a.lambda = p.lambda;
  a.exclude_positive = p.exclude_positive;
  a.seed = p.seed;
  a.step = p.step;
  const double entries = static_cast<double>(p.batch) * static_cast<double>(p.num_negatives + 1);
  const double n = static_cast<double>(p.bank_size);

  if (z_update == ZUpdate::kInitFromBatch) {
    a.z = 1.0f;  // only sum_exp is used from this pass
    const auto scores = nce_reference(a, threads);
    *p.z = static_cast<float>(n * static_cast<double>(scores.sum_exp) / entries);
  }
  a.z = *p.z;
  a.grad = p.grad;
  a.probs = p.probs;
  a.indices = p.indices;
  const auto r = nce_reference(a, threads);
  *p.loss = r.loss;
  if (z_update == ZUpdate::kEmaFromBatch) {
    const double estimate = n * static_cast<double>(r.sum_exp) / entries;
    *p.z = static_cast<float>(p.z_decay * static_cast<double>(*p.z) + (1.0 - p.z_decay) * estimate);
  }
}
}  // namespace

void nce_forward_backward_cpu(const NceProblem& p, ZUpdate z_update, int threads) {
  if (p.bank_dtype == DType::kBFloat16) {
    run_cpu<bf16>(p, z_update, threads);
  } else {
    run_cpu<float>(p, z_update, threads);
  }
}

}  // namespace npid

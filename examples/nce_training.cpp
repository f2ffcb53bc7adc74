// nce_training -- the NCE op, the memory bank and Z estimation from host code.
//
// Trains the simplest NPID model there is: a free, L2-normalized embedding per
// instance (no network), with the reference recipe -- NCE against K sampled
// bank rows, first-batch Z, momentum-0.5 bank updates -- on the CPU reference
// backend or on CUDA. It then checks its own result: the loss must fall, and
// each instance's positive must come to outscore its sampled negatives.
//
//   nce_training [--device cpu|cuda|auto] [--steps N]
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "npid/npid.h"

int main(int argc, char** argv) {
  std::string device = "auto";
  int steps = 300;
  for (int a = 1; a < argc; ++a) {
    if (!std::strcmp(argv[a], "--device") && a + 1 < argc) device = argv[++a];
    else if (!std::strcmp(argv[a], "--steps") && a + 1 < argc) steps = std::atoi(argv[++a]);
    else {
      std::fprintf(stderr, "usage: %s [--device cpu|cuda|auto] [--steps N]\n", argv[0]);
      return 2;
    }
  }
  try {
    const bool use_cuda = device == "cuda" || (device == "auto" && npid::cuda_available());
    npid::Context ctx = use_cuda ? npid::Context::cuda() : npid::Context::cpu();
    std::printf("device: %s (%s)\n", ctx.device().str().c_str(), npid::cuda_status().c_str());

    const std::int64_t N = 4096, D = 128, B = 128, K = 1024;
    npid::MemoryBank bank(ctx, N, D, npid::BankInit::kUniform, /*seed=*/1);
    npid::NceConfig cfg;
    cfg.num_negatives = K;
    cfg.temperature = 0.07f;
    cfg.seed = 2;
    npid::NceCriterion nce(ctx, cfg, B, D);

    // The "network": one free embedding per instance, kept on the host.
    std::vector<float> w(N * D);
    {
      npid::Context host = npid::Context::cpu();
      npid::bank_initialize(host, npid::view(w.data(), {N, D}), npid::BankInit::kUnit, 3);
    }
    std::vector<float> f(B * D), grad(B * D), probs(B * (K + 1));
    std::vector<std::int64_t> indices(B * (K + 1));
    std::vector<std::int64_t> y(B);
    npid::Tensor f_dev({B, D}, npid::DType::kFloat32, ctx.device());
    npid::Tensor y_dev({B}, npid::DType::kInt64, ctx.device());
    npid::Tensor loss_dev({1}, npid::DType::kFloat32, ctx.device());
    npid::Tensor grad_dev({B, D}, npid::DType::kFloat32, ctx.device());
    npid::Tensor probs_dev({B, K + 1}, npid::DType::kFloat32, ctx.device());
    npid::Tensor indices_dev({B, K + 1}, npid::DType::kInt64, ctx.device());

    const float lr = 3.0f;
    double first_epoch = 0, last_epoch = 0, pos_wins = 0;
    const int steps_per_epoch = static_cast<int>(N / B);
    for (int step = 0; step < steps; ++step) {
      for (std::int64_t i = 0; i < B; ++i) y[i] = (static_cast<std::int64_t>(step) * B + i * 97) % N;
      for (std::int64_t i = 0; i < B; ++i)
        std::copy_n(&w[y[i] * D], D, &f[i * D]);
      npid::copy(ctx, f_dev, npid::view(f.data(), {B, D}));
      npid::copy(ctx, y_dev, npid::view(y.data(), {B}));

      nce.forward_backward({f_dev, y_dev, bank.view(), {}}, static_cast<std::uint64_t>(step),
                           {loss_dev, grad_dev, probs_dev, indices_dev});
      bank.update(f_dev, y_dev, 0.5f);  // after every read of the step

      float loss = 0;
      npid::copy(ctx, npid::view(&loss, {1}), loss_dev);
      npid::copy(ctx, npid::view(grad.data(), {B, D}), grad_dev);
      if (step < steps_per_epoch) first_epoch += loss / steps_per_epoch;
      if (step >= steps - steps_per_epoch) {
        last_epoch += loss / steps_per_epoch;
        npid::copy(ctx, npid::view(probs.data(), {B, K + 1}), probs_dev);
        npid::copy(ctx, npid::view(indices.data(), {B, K + 1}), indices_dev);
        for (std::int64_t i = 0; i < B; ++i) {
          bool wins = true;
          // A negative drawn equal to the positive (no exclusion) is no rival.
          for (std::int64_t j = 1; j <= K && wins; ++j)
            wins = indices[i * (K + 1) + j] == y[i] || probs[i * (K + 1)] > probs[i * (K + 1) + j];
          pos_wins += wins ? 1.0 / (B * steps_per_epoch) : 0.0;
        }
      }
      if (step % 50 == 0 || step == steps - 1)
        std::printf("step %4d  loss %.4f  Z %.1f\n", step, loss, nce.z());

      // SGD through f = w/||w||, then renormalize w.
      for (std::int64_t i = 0; i < B; ++i) {
        float* wi = &w[y[i] * D];
        double gf = 0, ss = 0;
        for (std::int64_t c = 0; c < D; ++c) gf += grad[i * D + c] * f[i * D + c];
        for (std::int64_t c = 0; c < D; ++c) {
          wi[c] -= lr * static_cast<float>(grad[i * D + c] - gf * f[i * D + c]);
          ss += double(wi[c]) * wi[c];
        }
        for (std::int64_t c = 0; c < D; ++c) wi[c] /= static_cast<float>(std::sqrt(ss));
      }
    }
    std::printf("mean loss: first epoch %.4f, last epoch %.4f; positive outscored all %lld "
                "negatives for %.1f%% of the last epoch's samples\n",
                first_epoch, last_epoch, static_cast<long long>(K), 100 * pos_wins);
    const bool ok = steps < 2 * steps_per_epoch || (last_epoch < 0.8 * first_epoch && pos_wins > 0.5);
    std::printf("%s\n", ok ? "OK" : "FAILED: the loss did not fall as expected");
    return ok ? 0 : 1;
  } catch (const npid::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}

// Built against the installed package only: public headers, npid::npid_cuda.
#include <cmath>
#include <cstdio>
#include <vector>

#include <npid/npid.h>

int main() {
  npid::Context ctx = npid::Context::cpu();
  const std::int64_t N = 64, D = 16, B = 4;
  npid::MemoryBank bank(ctx, N, D, npid::BankInit::kUnit, 1);
  std::vector<float> f(B * D), grad(B * D);
  npid::bank_initialize(ctx, npid::view(f.data(), {B, D}), npid::BankInit::kUnit, 2);
  std::vector<std::int64_t> y = {0, 5, 9, 63};
  npid::NceConfig cfg;
  cfg.num_negatives = 8;
  npid::NceCriterion nce(ctx, cfg, B, D);
  float loss = 0;
  nce.forward_backward({npid::view(f.data(), {B, D}), npid::view(y.data(), {B}), bank.view(), {}}, 0,
                       {npid::view(&loss, {1}), npid::view(grad.data(), {B, D}), {}, {}});
  bank.update(npid::view(f.data(), {B, D}), npid::view(y.data(), {B}), 0.5f);
  std::printf("libnpid_cuda %s: loss %.4f, Z %.2f\n", npid::version(), loss, nce.z());
  return std::isfinite(loss) && loss > 0 ? 0 : 1;
}

// Bank initialization and momentum update on CUDA against the CPU reference.
#include "common/test_util.h"

using namespace npid;
using test::to_device;
using test::to_host;

TEST_CASE("bank init: CUDA matches the CPU reference", "[gpu][bank]") {
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  for (BankInit init : {BankInit::kUniform, BankInit::kUnit}) {
    for (std::int64_t D : {128, 50, 1, 512}) {
      const std::int64_t N = 3001;
      Tensor g({N, D}, DType::kFloat32, gpu.device());
      bank_initialize(gpu, g, init, 1234);
      std::vector<float> c(N * D);
      bank_initialize(cpu, view(c.data(), {N, D}), init, 1234);
      INFO(to_string(init) << " D=" << D);
      // Same Philox bits; only libm's last bits (log/cos/sqrt) may differ.
      CHECK(test::max_abs_diff(to_host<float>(gpu, g), c) < 2e-6);
    }
  }
}

TEST_CASE("bank update: CUDA matches the CPU reference, repeated indices included", "[gpu][bank]") {
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  for (std::int64_t B : {1, 7, 256, 1000}) {
    for (std::int64_t D : {128, 50, 300, 512}) {
      const std::int64_t N = 300;  // small N: many repeats within a batch
      std::vector<float> bank = test::random_unit_rows(N, D, 1);
      std::vector<float> f = test::random_unit_rows(B, D, 2);
      std::vector<std::int64_t> y = test::random_indices(B, N, static_cast<std::uint64_t>(B));
      Tensor gb = to_device(gpu, bank, {N, D});
      bank_update(gpu, gb, to_device(gpu, f, {B, D}), to_device(gpu, y, {B}), 0.5f);
      bank_update(cpu, view(bank.data(), {N, D}), view(f.data(), {B, D}), view(y.data(), {B}), 0.5f);
      INFO("B=" << B << " D=" << D);
      CHECK(test::max_abs_diff(to_host<float>(gpu, gb), bank) < 1e-6);
    }
  }
}

TEST_CASE("bank update on CUDA: the last occurrence wins under heavy index collisions", "[gpu][bank]") {
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  const std::int64_t N = 4, D = 128, B = 4096;
  std::vector<float> bank = test::random_unit_rows(N, D, 1);
  std::vector<float> f = test::random_unit_rows(B, D, 2);
  std::vector<std::int64_t> y = test::random_indices(B, N, 3);
  std::vector<float> expect = bank;  // the CPU reference implements last-wins
  bank_update(cpu, view(expect.data(), {N, D}), view(f.data(), {B, D}), view(y.data(), {B}), 0.5f);
  for (int rep = 0; rep < 3; ++rep) {
    Tensor gb = to_device(gpu, bank, {N, D});
    bank_update(gpu, gb, to_device(gpu, f, {B, D}), to_device(gpu, y, {B}), 0.5f);
    CHECK(test::max_abs_diff(to_host<float>(gpu, gb), expect) < 1e-6);
  }
}

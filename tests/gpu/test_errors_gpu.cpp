// Bad input on CUDA: the device-side checks report the argument, the value and
// its position, and nothing is launched against the bank.
#include <limits>

#include "common/nce_fixture.h"

using namespace npid;
using test::NceData;
using test::to_device;
using test::to_host;

TEST_CASE("CUDA NCE and bank update reject bad indices and NaN features, bank untouched",
          "[gpu][errors]") {
  Context gpu = Context::cuda();
  NceData d(16, 128, 1000, 64, 1);
  Tensor bank = to_device(gpu, d.bank, {d.N, d.D});
  Tensor loss({1}, DType::kFloat32, gpu.device()), grad({d.B, d.D}, DType::kFloat32, gpu.device());
  Tensor z = to_device(gpu, std::vector<float>{1.f}, {1});
  NceConfig cfg;
  cfg.num_negatives = d.K;
  const auto kind = ErrorKind::kInvalidArgument;

  SECTION("target out of range") {
    auto y = d.targets;
    y[11] = d.N + 5;
    Tensor ty = to_device(gpu, y, {d.B});
    Tensor f = to_device(gpu, d.features, {d.B, d.D});
    test::require_error([&] { nce_forward_backward(gpu, cfg, {f, ty, bank, {}}, 0, ZUpdate::kKeep, z, {loss, grad, {}, {}}); },
                        kind, {"'targets'", "got 1005", "position 11"});
    test::require_error([&] { bank_update(gpu, bank, f, ty, 0.5f); }, kind, {"bank_update", "'targets'"});
  }
  SECTION("NaN feature") {
    auto fh = d.features;
    fh[130] = std::numeric_limits<float>::quiet_NaN();
    Tensor f = to_device(gpu, fh, {d.B, d.D});
    Tensor ty = to_device(gpu, d.targets, {d.B});
    test::require_error([&] { nce_forward_backward(gpu, cfg, {f, ty, bank, {}}, 0, ZUpdate::kKeep, z, {loss, grad, {}, {}}); },
                        kind, {"'features'", "nan", "row 1, column 2"});
    test::require_error([&] { bank_update(gpu, bank, f, ty, 0.5f); }, kind, {"'features'"});
  }
  SECTION("host tensor passed to a CUDA context") {
    Tensor ty = to_device(gpu, d.targets, {d.B});
    test::require_error(
        [&] {
          nce_forward_backward(gpu, cfg, {view(d.features.data(), {d.B, d.D}), ty, bank, {}}, 0,
                               ZUpdate::kKeep, z, {loss, grad, {}, {}});
        },
        kind, {"'features'", "cuda:0", "got cpu"});
  }
  CHECK(to_host<float>(gpu, bank) == d.bank);
}

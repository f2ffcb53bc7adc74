// Bad input: an npid::Error naming the argument, expected and got; the bank
// (and every other input) untouched.
#include <cmath>
#include <limits>

#include "common/nce_fixture.h"

using namespace npid;
using test::NceData;
using test::require_error;

namespace {

struct Case {
  NceData d{4, 8, 100, 10, 500};
  NceConfig cfg;
  float loss = 0, z = 1.5f;
  std::vector<float> grad = std::vector<float>(4 * 8);
  std::vector<std::int64_t> negatives = std::vector<std::int64_t>(4 * 10, 1);
  Case() { cfg.num_negatives = 10; }
  NceInputs inputs() {
    return {view(d.features.data(), {d.B, d.D}), view(d.targets.data(), {d.B}),
            view(d.bank.data(), {d.N, d.D}), {}};
  }
  NceOutputs outputs() { return {view(&loss, {1}), view(grad.data(), {d.B, d.D}), {}, {}}; }
  void run(Context& ctx, const NceInputs& in, const NceOutputs& out, ZUpdate zu = ZUpdate::kKeep) {
    nce_forward_backward(ctx, cfg, in, 0, zu, view(&z, {1}), out);
  }
};

}  // namespace

TEST_CASE("NCE rejects bad input with a named argument and leaves the bank untouched",
          "[errors][nce]") {
  Context ctx = Context::cpu();
  Case c;
  const std::vector<float> bank_before = c.d.bank;
  const auto kind = ErrorKind::kInvalidArgument;

  SECTION("targets shape mismatch") {
    auto in = c.inputs();
    in.targets.shape = {c.d.B - 1};
    require_error([&] { c.run(ctx, in, c.outputs()); }, kind, {"'targets'", "expected shape (4)", "got (3)"});
  }
  SECTION("target index >= N") {
    c.d.targets[2] = c.d.N;
    require_error([&] { c.run(ctx, c.inputs(), c.outputs()); }, kind,
                  {"'targets'", "[0, 100)", "got 100", "position 2"});
  }
  SECTION("target index < 0") {
    c.d.targets[0] = -1;
    require_error([&] { c.run(ctx, c.inputs(), c.outputs()); }, kind, {"'targets'", "got -1"});
  }
  SECTION("explicit negative out of range") {
    c.negatives[13] = 1000;
    auto in = c.inputs();
    in.negatives = view(c.negatives.data(), {c.d.B, 10});
    require_error([&] { c.run(ctx, in, c.outputs()); }, kind,
                  {"'negatives'", "got 1000", "row 1, column 3"});
  }
  SECTION("explicit negatives of the wrong width") {
    auto in = c.inputs();
    in.negatives = view(c.negatives.data(), {c.d.B * 2, 5});
    require_error([&] { c.run(ctx, in, c.outputs()); }, kind, {"'negatives'", "(4, 10)", "(8, 5)"});
  }
  SECTION("K = 0") {
    c.cfg.num_negatives = 0;
    require_error([&] { c.run(ctx, c.inputs(), c.outputs()); }, kind, {"'num_negatives'", "got 0"});
  }
  SECTION("tau <= 0 and tau NaN") {
    c.cfg.temperature = 0.f;
    require_error([&] { c.run(ctx, c.inputs(), c.outputs()); }, kind, {"'temperature'", "got 0"});
    c.cfg.temperature = std::numeric_limits<float>::quiet_NaN();
    require_error([&] { c.run(ctx, c.inputs(), c.outputs()); }, kind, {"'temperature'"});
  }
  SECTION("negative lambda") {
    c.cfg.proximal_lambda = -1.f;
    require_error([&] { c.run(ctx, c.inputs(), c.outputs()); }, kind, {"'proximal_lambda'"});
  }
  SECTION("non-finite features") {
    c.d.features[9] = std::numeric_limits<float>::infinity();
    require_error([&] { c.run(ctx, c.inputs(), c.outputs()); }, kind,
                  {"'features'", "finite", "got inf", "row 1, column 1"});
  }
  SECTION("bank rows not D wide") {
    auto in = c.inputs();
    in.bank.shape = {c.d.N * 2, c.d.D / 2};
    require_error([&] { c.run(ctx, in, c.outputs()); }, kind, {"'bank'", "D = 8", "(200, 4)"});
  }
  SECTION("wrong dtype") {
    auto in = c.inputs();
    in.targets.dtype = DType::kInt32;
    require_error([&] { c.run(ctx, in, c.outputs()); }, kind, {"'targets'", "int64", "int32"});
  }
  SECTION("Z not positive with kKeep") {
    c.z = 0.f;
    require_error([&] { c.run(ctx, c.inputs(), c.outputs()); }, kind, {"'z'", "got 0"});
  }
  SECTION("grad output overlapping the bank") {
    auto out = c.outputs();
    out.grad_features = view(c.d.bank.data(), {c.d.B, c.d.D});
    require_error([&] { c.run(ctx, c.inputs(), out); }, kind, {"'grad_features'", "'bank'"});
  }
  SECTION("Z state inside the bank") {
    require_error(
        [&] {
          nce_forward_backward(ctx, c.cfg, c.inputs(), 0, ZUpdate::kInitFromBatch, view(c.d.bank.data() + 5, {1}),
                               c.outputs());
        },
        kind, {"'z'", "'bank'"});
  }
  SECTION("indices output overlapping the explicit negatives") {
    auto in = c.inputs();
    auto out = c.outputs();
    std::vector<std::int64_t> shared(c.d.B * 11, 1);
    in.negatives = view(shared.data(), {c.d.B, 10});
    out.indices = view(shared.data(), {c.d.B, 11});
    require_error([&] { c.run(ctx, in, out); }, kind, {"'indices'", "'negatives'"});
  }
  SECTION("two outputs overlapping each other") {
    auto out = c.outputs();
    out.probs = view(c.grad.data(), {c.d.B, 8});  // (B, K+1) would be (4, 11); shape first
    require_error([&] { c.run(ctx, c.inputs(), out); }, kind, {"'probs'"});
    std::vector<float> shared(c.d.B * 11 + 1);
    out.probs = view(shared.data(), {c.d.B, 11});
    out.loss = view(shared.data() + 3, {1});
    require_error([&] { c.run(ctx, c.inputs(), out); }, kind, {"'loss'", "'probs'"});
  }
  SECTION("tau below the fp32 limit") {
    c.cfg.temperature = 0.01f;
    require_error([&] { c.run(ctx, c.inputs(), c.outputs()); }, kind, {"'temperature'", "0.015", "got 0.01"});
  }
  SECTION("batch beyond the grid limit") {
    const std::int64_t B = 65536;
    std::vector<float> f(B * c.d.D, 0.1f);
    auto in = c.inputs();
    in.features = view(f.data(), {B, c.d.D});
    require_error([&] { c.run(ctx, in, c.outputs()); }, kind, {"'features'", "1 to 65535 rows", "(65536, 8)"});
  }
  SECTION("tensor on the wrong device") {
    auto in = c.inputs();
    in.bank.device = Device::cuda(0);
    require_error([&] { c.run(ctx, in, c.outputs()); }, kind, {"'bank'", "on cpu", "got cuda:0"});
  }
  SECTION("missing output") {
    auto out = c.outputs();
    out.loss = {};
    require_error([&] { c.run(ctx, c.inputs(), out); }, kind, {"'loss'", "empty"});
  }
  SECTION("exclude_positive with a one-row bank") {
    c.cfg.exclude_positive = true;
    auto in = c.inputs();
    in.bank.shape = {1, c.d.D};
    std::vector<std::int64_t> zeros(c.d.B, 0);
    in.targets = view(zeros.data(), {c.d.B});
    require_error([&] { c.run(ctx, in, c.outputs()); }, kind, {"'bank'", "N >= 2"});
  }
  CHECK(c.d.bank == bank_before);
}

TEST_CASE("bank_update rejects bad input and leaves the bank untouched", "[errors][bank]") {
  Context ctx = Context::cpu();
  const std::int64_t N = 20, D = 8, B = 3;
  std::vector<float> bank = test::random_unit_rows(N, D, 1);
  const std::vector<float> before = bank;
  std::vector<float> f = test::random_unit_rows(B, D, 2);
  std::vector<std::int64_t> y = {1, 2, 3};
  const auto kind = ErrorKind::kInvalidArgument;
  auto run = [&](float m = 0.5f) {
    bank_update(ctx, view(bank.data(), {N, D}), view(f.data(), {B, D}), view(y.data(), {B}), m);
  };
  SECTION("index out of range") {
    y[1] = N;
    require_error([&] { run(); }, kind, {"bank_update", "'targets'", "got 20"});
  }
  SECTION("NaN feature") {
    f[5] = std::nanf("");
    require_error([&] { run(); }, kind, {"'features'", "nan"});
  }
  SECTION("momentum outside [0, 1]") {
    require_error([&] { run(1.5f); }, kind, {"'momentum'", "got 1.5"});
  }
  SECTION("features not D wide") {
    require_error(
        [&] {
          bank_update(ctx, view(bank.data(), {N, D}), view(f.data(), {B * 2, D / 2}),
                      view(y.data(), {B}), 0.5f);
        },
        kind, {"'features'", "D = 8"});
  }
  CHECK(bank == before);
}

TEST_CASE("config errors surface at construction", "[errors]") {
  Context ctx = Context::cpu();
  NceConfig cfg;
  cfg.z_policy = ZPolicy::kFixed;
  cfg.z_fixed = -2.f;
  require_error([&] { NceCriterion c(ctx, cfg, 4, 128); }, ErrorKind::kInvalidArgument,
                {"NceCriterion", "'z_fixed'", "got -2"});
  cfg.z_fixed = 1.f;
  require_error([&] { NceCriterion c(ctx, cfg, 4, 100000); }, ErrorKind::kInvalidArgument,
                {"'dim'", "got 100000"});
  require_error([&] { MemoryBank b(ctx, 0, 128); }, ErrorKind::kInvalidArgument, {"'size'"});
}

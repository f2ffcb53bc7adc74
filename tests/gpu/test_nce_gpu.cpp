// Fused NCE on CUDA against the CPU reference, on awkward shapes:
// B in {1, 7, 256}, K in {1, 15, 4096}, D in {32, 128, 50 (not a multiple of 4)}.
#include <cmath>

#include "common/nce_fixture.h"
#include "common/layout_override.h"

using namespace npid;
using test::NceData;
using test::to_device;
using test::to_host;

namespace {

struct Result {
  float loss = 0, z = 0;
  std::vector<float> grad, probs;
  std::vector<std::int64_t> indices;
};

Result run(Context& ctx, const NceConfig& cfg, const NceData& d, std::uint64_t step, ZUpdate zu,
           float z0, const std::vector<std::int64_t>* negatives = nullptr,
           std::int64_t feature_offset = 0) {
  const std::int64_t B = d.B, D = d.D, K = d.K;
  Result r;
  if (ctx.is_cuda()) {
    // feature_offset shifts the features view off 16-byte alignment (scalar path).
    std::vector<float> padded(static_cast<std::size_t>(feature_offset) + d.features.size(), 0.f);
    std::copy(d.features.begin(), d.features.end(), padded.begin() + feature_offset);
    Tensor f = to_device(ctx, padded, {static_cast<std::int64_t>(padded.size())});
    TensorView fv(static_cast<float*>(f.data()) + feature_offset, DType::kFloat32, {B, D}, ctx.device());
    Tensor y = to_device(ctx, d.targets, {B});
    Tensor bank = to_device(ctx, d.bank, {d.N, D});
    Tensor neg;
    if (negatives) neg = to_device(ctx, *negatives, {B, K});
    Tensor z = to_device(ctx, std::vector<float>{z0}, {1});
    Tensor loss({1}, DType::kFloat32, ctx.device());
    Tensor grad({B, D}, DType::kFloat32, ctx.device());
    Tensor probs({B, K + 1}, DType::kFloat32, ctx.device());
    Tensor idx({B, K + 1}, DType::kInt64, ctx.device());
    nce_forward_backward(ctx, cfg, {fv, y, bank, negatives ? neg.view() : TensorView()}, step, zu, z,
                         {loss, grad, probs, idx});
    r.loss = to_host<float>(ctx, loss)[0];
    r.z = to_host<float>(ctx, z)[0];
    r.grad = to_host<float>(ctx, grad);
    r.probs = to_host<float>(ctx, probs);
    r.indices = to_host<std::int64_t>(ctx, idx);
  } else {
    r.z = z0;
    r.grad.resize(B * D);
    r.probs.resize(B * (K + 1));
    r.indices.resize(B * (K + 1));
    nce_forward_backward(ctx, cfg,
                         {view(d.features.data(), {B, D}), view(d.targets.data(), {B}),
                          view(d.bank.data(), {d.N, D}),
                          negatives ? view(negatives->data(), {B, K}) : TensorView()},
                         step, zu, view(&r.z, {1}),
                         {view(&r.loss, {1}), view(r.grad.data(), {B, D}),
                          view(r.probs.data(), {B, K + 1}), view(r.indices.data(), {B, K + 1})});
  }
  return r;
}

void compare(const Result& gpu, const Result& cpu) {
  CHECK(gpu.indices == cpu.indices);
  CHECK(gpu.loss == Approx(cpu.loss).epsilon(2e-5));
  CHECK(gpu.z == Approx(cpu.z).epsilon(2e-5));
  CHECK(test::relative_error(gpu.grad, cpu.grad) < 2e-5);
  CHECK(test::relative_error(gpu.probs, cpu.probs) < 2e-5);
  double norm = 0;
  for (float g : gpu.grad) norm += double(g) * g;
  CHECK(norm > 0);
}

}  // namespace

TEST_CASE("fused NCE: CUDA matches the CPU reference on awkward shapes", "[gpu][nce]") {
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  for (std::int64_t B : {1, 7, 256}) {
    for (std::int64_t K : {1, 15, 4096}) {
      for (std::int64_t D : {32, 128, 50}) {
        NceData d(B, D, 5000, K, static_cast<std::uint64_t>(B * 1000 + K + D));
        NceConfig cfg;
        cfg.num_negatives = K;
        cfg.temperature = 0.07f;
        cfg.seed = 17;
        cfg.proximal_lambda = (B + K) % 2 ? 10.f : 0.f;
        INFO("B=" << B << " K=" << K << " D=" << D << " lambda=" << cfg.proximal_lambda);
        compare(run(gpu, cfg, d, 5, ZUpdate::kInitFromBatch, 0.f),
                run(cpu, cfg, d, 5, ZUpdate::kInitFromBatch, 0.f));
      }
    }
  }
}

TEST_CASE("fused NCE: Z updates, exclusion, explicit negatives, unaligned views", "[gpu][nce]") {
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  NceData d(37, 128, 20000, 1000, 7);
  NceConfig cfg;
  cfg.num_negatives = d.K;
  cfg.temperature = 0.1f;
  cfg.z_ema_decay = 0.9f;
  SECTION("kKeep") { compare(run(gpu, cfg, d, 1, ZUpdate::kKeep, 3.f), run(cpu, cfg, d, 1, ZUpdate::kKeep, 3.f)); }
  SECTION("kEmaFromBatch") {
    compare(run(gpu, cfg, d, 2, ZUpdate::kEmaFromBatch, 3.f), run(cpu, cfg, d, 2, ZUpdate::kEmaFromBatch, 3.f));
  }
  SECTION("exclude_positive on a small bank") {
    NceData small(64, 128, 3, 300, 8);
    cfg.num_negatives = small.K;
    cfg.exclude_positive = true;
    const Result g = run(gpu, cfg, small, 3, ZUpdate::kKeep, 1.f);
    compare(g, run(cpu, cfg, small, 3, ZUpdate::kKeep, 1.f));
    for (std::int64_t i = 0; i < small.B; ++i)
      for (std::int64_t j = 1; j <= small.K; ++j) REQUIRE(g.indices[i * (small.K + 1) + j] != small.targets[i]);
  }
  SECTION("explicit negatives") {
    std::vector<std::int64_t> neg = test::random_indices(d.B * d.K, d.N, 99);
    compare(run(gpu, cfg, d, 0, ZUpdate::kKeep, 2.f, &neg), run(cpu, cfg, d, 0, ZUpdate::kKeep, 2.f, &neg));
  }
  SECTION("features view not 16-byte aligned (scalar path)") {
    compare(run(gpu, cfg, d, 4, ZUpdate::kKeep, 2.f, nullptr, 1), run(cpu, cfg, d, 4, ZUpdate::kKeep, 2.f));
  }
  SECTION("wide embeddings (D = 256, 512, 300)") {
    for (std::int64_t D : {256, 512, 300}) {
      NceData w(9, D, 4000, 200, static_cast<std::uint64_t>(D));
      cfg.num_negatives = w.K;
      cfg.proximal_lambda = 5.f;
      INFO("D=" << D);
      compare(run(gpu, cfg, w, 4, ZUpdate::kInitFromBatch, 0.f), run(cpu, cfg, w, 4, ZUpdate::kInitFromBatch, 0.f));
    }
  }
}

TEST_CASE("fused NCE is bitwise deterministic run to run", "[gpu][nce]") {
  Context gpu = Context::cuda();
  NceData d(256, 128, 50000, 4096, 3);
  NceConfig cfg;
  cfg.num_negatives = d.K;
  const Result a = run(gpu, cfg, d, 1, ZUpdate::kInitFromBatch, 0.f);
  const Result b = run(gpu, cfg, d, 1, ZUpdate::kInitFromBatch, 0.f);
  CHECK(a.loss == b.loss);
  CHECK(a.z == b.z);
  CHECK(a.grad == b.grad);
  CHECK(a.probs == b.probs);
}

TEST_CASE("NceCriterion on CUDA follows the same Z policy as on the CPU", "[gpu][nce][z]") {
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  NceData d1(16, 128, 3000, 100, 1), d2(16, 128, 3000, 100, 2);
  d2.bank = d1.bank;
  NceConfig cfg;
  cfg.num_negatives = d1.K;
  cfg.z_policy = ZPolicy::kEma;
  NceCriterion cg(gpu, cfg, 16, 128), cc(cpu, cfg, 16, 128);
  Tensor bank = to_device(gpu, d1.bank, {d1.N, 128});
  Tensor loss({1}, DType::kFloat32, gpu.device()), grad({16, 128}, DType::kFloat32, gpu.device());
  float closs = 0;
  std::vector<float> cgrad(16 * 128);
  int step = 0;
  for (const NceData* d : {&d1, &d2}) {
    Tensor f = to_device(gpu, d->features, {16, 128});
    Tensor y = to_device(gpu, d->targets, {16});
    cg.forward_backward({f, y, bank, {}}, step, {loss, grad, {}, {}});
    cc.forward_backward({view(d->features.data(), {16, 128}), view(d->targets.data(), {16}),
                         view(d1.bank.data(), {d1.N, 128}), {}},
                        step, {view(&closs, {1}), view(cgrad.data(), {16, 128}), {}, {}});
    ++step;
    CHECK(to_host<float>(gpu, loss)[0] == Approx(closs).epsilon(2e-5));
    CHECK(cg.z() == Approx(cc.z()).epsilon(2e-5));
    CHECK(test::relative_error(to_host<float>(gpu, grad), cgrad) < 2e-5);
  }
}

TEST_CASE("sync_after_launch contexts run the same ops", "[gpu][core]") {
  Context gpu = Context::cuda(0, {true, 0, 0});
  CHECK(gpu.sync_after_launch());
  Context cpu = Context::cpu();
  NceData d(8, 128, 1000, 64, 5);
  NceConfig cfg;
  cfg.num_negatives = d.K;
  compare(run(gpu, cfg, d, 0, ZUpdate::kInitFromBatch, 0.f), run(cpu, cfg, d, 0, ZUpdate::kInitFromBatch, 0.f));
}

namespace {

struct Layout {
  int lanes, stages;
  NceRing ring;
};

// Every instantiated D <= 128 variant: the register ring (one tile per warp)
// and the async ring (cp.async into shared memory, run on across tiles).
std::vector<Layout> all_layouts() {
  std::vector<Layout> layouts;
  for (int lanes : {8, 16}) {
    for (int stages : {2, 3, 4}) layouts.push_back({lanes, stages, NceRing::kRegisters});
    for (int stages : {4, 8}) layouts.push_back({lanes, stages, NceRing::kAsync});
  }
  layouts.push_back({4, 4, NceRing::kAsync});
  return layouts;
}

const char* ring_name(NceRing ring) { return ring == NceRing::kAsync ? "async" : "registers"; }

}  // namespace

TEST_CASE("fused NCE: every D <= 128 layout and pipeline depth matches the CPU reference",
          "[gpu][nce]") {
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  for (const Layout& l : all_layouts()) {
    test::LayoutOverride layout(l.lanes, l.stages, l.ring);
    // K = 1000: the last tile ends mid-way (1000 = 31 * 32 + 8).
    for (std::int64_t K : {1, 15, 1000, 4096}) {
      for (std::int64_t D : {32, 128}) {
        NceData d(7, D, 5000, K, static_cast<std::uint64_t>(K + D));
        NceConfig cfg;
        cfg.num_negatives = K;
        cfg.proximal_lambda = 3.f;
        INFO("lanes=" << l.lanes << " stages=" << l.stages << " ring=" << ring_name(l.ring) << " K=" << K
                      << " D=" << D);
        compare(run(gpu, cfg, d, 2, ZUpdate::kInitFromBatch, 0.f), run(cpu, cfg, d, 2, ZUpdate::kInitFromBatch, 0.f));
        // The override took: this variant, not a fallback, ran (unless its
        // ring does not fit the device: then the fp32 default, 16 x 2).
        CHECK(nce_last_layout() == test::expected_layout_code(gpu, l.lanes, l.stages, l.ring, 4, 162));
      }
    }
  }
}

// Small enough for compute-sanitizer racecheck (tools/device_check.sh): the
// async ring's lane-private shared-memory slots and the epilogue that reuses
// them as scratch.
TEST_CASE("fused NCE: the async ring on a small case", "[gpu][nce]") {
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  for (const Layout& l : {Layout{16, 8, NceRing::kAsync}, Layout{8, 4, NceRing::kAsync}}) {
    test::LayoutOverride layout(l.lanes, l.stages, l.ring);
    NceData d(3, 128, 3000, 200, 11);
    NceConfig cfg;
    cfg.num_negatives = d.K;
    INFO("lanes=" << l.lanes << " stages=" << l.stages);
    compare(run(gpu, cfg, d, 1, ZUpdate::kInitFromBatch, 0.f), run(cpu, cfg, d, 1, ZUpdate::kInitFromBatch, 0.f));
    CHECK(nce_last_layout() == test::expected_layout_code(gpu, l.lanes, l.stages, l.ring, 4, 162));
  }
}

// The tensor-core gather is for bf16 banks only: on an fp32 bank its
// override runs the fp32 default.
TEST_CASE("fused NCE: the tensor-core override falls back on an fp32 bank", "[gpu][nce]") {
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  NceData d(3, 128, 3000, 200, 13);
  NceConfig cfg;
  cfg.num_negatives = d.K;
  const Result want = run(cpu, cfg, d, 1, ZUpdate::kInitFromBatch, 0.f);
  compare(run(gpu, cfg, d, 1, ZUpdate::kInitFromBatch, 0.f), want);
  const int default_code = nce_last_layout();
  test::LayoutOverride layout(32, 4, NceRing::kTensorCore);
  compare(run(gpu, cfg, d, 1, ZUpdate::kInitFromBatch, 0.f), want);
  CHECK(nce_last_layout() == default_code);
}

// K = 65536 at B = 2: the 64-split cap leaves 32 tiles per block, four per
// warp, so the async ring's row indices resolved a tile ahead are used (two
// tiles per warp never use them); the default layout and every async one.
TEST_CASE("fused NCE: the async ring across four tiles per warp", "[gpu][nce]") {
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  NceData d(2, 128, 100000, 65536, 5);
  NceConfig cfg;
  cfg.num_negatives = d.K;
  cfg.proximal_lambda = 1.f;
  const Result want = run(cpu, cfg, d, 4, ZUpdate::kInitFromBatch, 0.f);
  std::vector<Layout> layouts = {{0, 0, NceRing::kRegisters}};
  for (const Layout& l : all_layouts())
    if (l.ring == NceRing::kAsync) layouts.push_back(l);
  for (const Layout& l : layouts) {
    test::LayoutOverride layout(l.lanes, l.stages, l.ring);
    INFO("lanes=" << l.lanes << " stages=" << l.stages << " ring=" << ring_name(l.ring));
    compare(run(gpu, cfg, d, 4, ZUpdate::kInitFromBatch, 0.f), want);
  }
}

// bench_nce_kernel's BM_NceSplits forces the column splits per sample: each
// count must compute the same function (only the partial sums' grouping
// changes), and a request past ceil(K / 32) tiles or the 64-split cap is
// clamped to it.
TEST_CASE("fused NCE: forced column splits match the CPU reference", "[gpu][nce]") {
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  struct Case {
    std::int64_t K;
    int splits, expect;
  };
  for (const Case c : {Case{4096, 1, 1}, Case{4096, 3, 3}, Case{4096, 64, 64}, Case{4096, 500, 64},
                       Case{100, 16, 4}}) {
    // The default register ring and the async ring (the bf16 default's
    // kind), whose warps take the block's tiles in turn.
    for (const Layout& l : {Layout{0, 0, NceRing::kRegisters}, Layout{8, 4, NceRing::kAsync}}) {
      NceData d(5, 128, 20000, c.K, static_cast<std::uint64_t>(c.K + c.splits));
      NceConfig cfg;
      cfg.num_negatives = c.K;
      cfg.proximal_lambda = 2.f;
      INFO("K=" << c.K << " splits=" << c.splits << " ring=" << ring_name(l.ring));
      const Result want = run(cpu, cfg, d, 3, ZUpdate::kInitFromBatch, 0.f);
      test::LayoutOverride layout(l.lanes, l.stages, l.ring);
      test::SplitsOverride forced(c.splits);
      compare(run(gpu, cfg, d, 3, ZUpdate::kInitFromBatch, 0.f), want);
      CHECK(nce_last_splits() == c.expect);
    }
  }
}

TEST_CASE("fused NCE: every layout on a large batch (several tiles per warp)", "[gpu][nce][heavy]") {
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  // Few splits per sample, so a warp walks two tiles (the async ring runs on
  // across the boundary; at K = 1000 the second one is short). The CPU
  // reference does not depend on the layout: computed once per K.
  for (std::int64_t K : {1000, 4096}) {
    NceData d(512, 128, 20000, K, static_cast<std::uint64_t>(K + 1));
    NceConfig cfg;
    cfg.num_negatives = K;
    const Result want = run(cpu, cfg, d, 3, ZUpdate::kInitFromBatch, 0.f);
    for (const Layout& l : all_layouts()) {
      test::LayoutOverride layout(l.lanes, l.stages, l.ring);
      INFO("lanes=" << l.lanes << " stages=" << l.stages << " ring=" << ring_name(l.ring) << " B=512 K=" << K);
      compare(run(gpu, cfg, d, 3, ZUpdate::kInitFromBatch, 0.f), want);
    }
  }
}

// bf16 banks on CUDA: NCE, bank init and update against the CPU reference on
// the same bits. Values are computed in fp32 on both sides; only the order of
// float operations differs, so a stored bf16 may differ by one unit in the
// last place (2^-8 relative) where a value sits on a rounding boundary.
#include <cmath>
#include <limits>

#include "common/bf16.h"
#include "common/nce_fixture.h"
#include "common/layout_override.h"

using namespace npid;
using test::NceData;
using test::to_device;
using test::to_host;

namespace {
std::vector<float> widen(const std::vector<std::uint16_t>& bits) {
  std::vector<float> out(bits.size());
  for (std::size_t k = 0; k < bits.size(); ++k) out[k] = bf16_to_float(bf16{bits[k]});
  return out;
}
std::vector<std::uint16_t> to_bits(const std::vector<float>& v) {
  std::vector<std::uint16_t> out(v.size());
  for (std::size_t k = 0; k < v.size(); ++k) out[k] = float_to_bf16(v[k]).bits;
  return out;
}
// Max |a - b| relative to max(|b|, 1e-3): one bf16 ulp is 2^-7 of the value's
// binade. +infinity on a NaN (std::max alone would skip it).
double max_rel(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (std::size_t k = 0; k < a.size(); ++k) {
    const double r = std::fabs(double(a[k]) - b[k]) / std::max(std::fabs(double(b[k])), 1e-3);
    if (std::isnan(r)) return std::numeric_limits<double>::infinity();
    m = std::max(m, r);
  }
  return m;
}
// Stored values that differ at all. A correct kernel rounds the same fp32
// value (up to a few fp32 ulps of operation order) to nearest even, so only
// values within a few 2^-16 of a rounding midpoint can differ: ~5e-5 of them.
// A kernel that truncates, or rounds twice, differs in up to half.
std::size_t count_differ(const std::vector<std::uint16_t>& a, const std::vector<std::uint16_t>& b) {
  std::size_t n = 0;
  for (std::size_t k = 0; k < a.size(); ++k) n += a[k] != b[k];
  return n;
}
TensorView host_bf16(std::vector<std::uint16_t>& bits, std::int64_t n, std::int64_t d) {
  return TensorView(bits.data(), DType::kBFloat16, {n, d}, Device::cpu());
}
}  // namespace

TEST_CASE("bf16 bank init and update: CUDA matches the CPU reference", "[gpu][bf16][bank]") {
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  for (BankInit init : {BankInit::kUniform, BankInit::kUnit}) {
    const std::int64_t N = 5000, D = 128;
    Tensor g({N, D}, DType::kBFloat16, gpu.device());
    bank_initialize(gpu, g, init, 4);
    std::vector<std::uint16_t> c(N * D);
    bank_initialize(cpu, host_bf16(c, N, D), init, 4);
    const std::vector<std::uint16_t> gbits = to_host<std::uint16_t>(gpu, g.view());
    CHECK(max_rel(widen(gbits), widen(c)) <= 1.0 / 128);
    CHECK(count_differ(gbits, c) <= c.size() / 1000);
  }
  const std::int64_t N = 300, D = 128, B = 256;
  std::vector<std::uint16_t> bank = to_bits(test::random_unit_rows(N, D, 1));
  std::vector<float> f = test::random_unit_rows(B, D, 2);
  std::vector<std::int64_t> y = test::random_indices(B, N, 3);
  Tensor gb({N, D}, DType::kBFloat16, gpu.device());
  copy(gpu, gb, host_bf16(bank, N, D));
  bank_update(gpu, gb, to_device(gpu, f, {B, D}), to_device(gpu, y, {B}), 0.5f);
  bank_update(cpu, host_bf16(bank, N, D), view(f.data(), {B, D}), view(y.data(), {B}), 0.5f);
  const std::vector<std::uint16_t> gbits = to_host<std::uint16_t>(gpu, gb.view());
  CHECK(max_rel(widen(gbits), widen(bank)) <= 1.0 / 128);
  CHECK(count_differ(gbits, bank) <= bank.size() / 1000);
}

namespace {

struct Variant {
  int lanes, stages;
  std::int64_t B, D;
  NceRing ring = NceRing::kRegisters;
  std::int64_t K = 4096;
  int expect_code = -1;  // nce_last_layout() expected; -1: the override's own code
  int splits = 0;        // forced column splits per sample; 0: automatic
  // Bank row 0 holds NaN and no target or (explicit) negative is row 0: a
  // kernel must not read rows it was not asked for.
  bool poison_row0 = false;
  // Views shifted off alignment: features by this many floats, the bank by
  // this many bf16 elements (4 = 8 bytes: the register ring's vec4 still
  // holds, the 16-byte cp.async of the async and tensor-core rings does not).
  std::int64_t feature_offset = 0, bank_offset = 0;
};


// One NCE step on the same bf16 bits on both sides, under the variant's
// layout override (lanes = 0: the default), against the CPU reference.
void check_variant(Context& gpu, Context& cpu, const Variant& v) {
  INFO("lanes=" << v.lanes << " stages=" << v.stages << " B=" << v.B << " D=" << v.D << " K=" << v.K
                << " ring=" << static_cast<int>(v.ring) << " splits=" << v.splits << " poison=" << v.poison_row0
                << " feature_offset=" << v.feature_offset << " bank_offset=" << v.bank_offset);
  test::LayoutOverride layout(v.lanes, v.stages, v.ring);
  test::SplitsOverride forced(v.splits);
  const std::int64_t B = v.B, D = v.D;
  NceData d(B, D, 5000, v.K, static_cast<std::uint64_t>(B + D + v.K));
  std::vector<std::uint16_t> bits = to_bits(d.bank);
  std::vector<std::int64_t> negatives;
  if (v.poison_row0) {
    for (std::int64_t k = 0; k < D; ++k) bits[static_cast<std::size_t>(k)] = 0x7fc0;  // NaN
    for (auto& y : d.targets) y = y == 0 ? 1 : y;
    negatives = test::random_indices(B * v.K, d.N - 1, 17);
    for (auto& n : negatives) n += 1;
  }
  const bool explicit_negatives = !negatives.empty();
  NceConfig cfg;
  cfg.num_negatives = d.K;
  cfg.proximal_lambda = 2.f;
  const std::int64_t K = d.K;
  std::vector<std::uint16_t> padded_bits(static_cast<std::size_t>(v.bank_offset), 0);
  padded_bits.insert(padded_bits.end(), bits.begin(), bits.end());
  Tensor bank_storage({v.bank_offset + d.N * D}, DType::kBFloat16, gpu.device());
  copy(gpu, bank_storage, TensorView(padded_bits.data(), DType::kBFloat16, {v.bank_offset + d.N * D}, Device::cpu()));
  const TensorView bank(static_cast<std::uint16_t*>(bank_storage.data()) + v.bank_offset, DType::kBFloat16, {d.N, D},
                        gpu.device());
  std::vector<float> padded_features(static_cast<std::size_t>(v.feature_offset), 0.f);
  padded_features.insert(padded_features.end(), d.features.begin(), d.features.end());
  Tensor f_storage = to_device(gpu, padded_features, {v.feature_offset + B * D});
  const TensorView f(static_cast<float*>(f_storage.data()) + v.feature_offset, DType::kFloat32, {B, D}, gpu.device());
  Tensor y = to_device(gpu, d.targets, {B});
  Tensor z = to_device(gpu, std::vector<float>{0.f}, {1});
  Tensor loss({1}, DType::kFloat32, gpu.device()), grad({B, D}, DType::kFloat32, gpu.device());
  Tensor idx({B, K + 1}, DType::kInt64, gpu.device()), probs({B, K + 1}, DType::kFloat32, gpu.device());
  Tensor neg = explicit_negatives ? to_device(gpu, negatives, {B, K}) : Tensor();
  nce_forward_backward(gpu, cfg, {f, y, bank, explicit_negatives ? neg.view() : TensorView()}, 1,
                       ZUpdate::kInitFromBatch, z, {loss, grad, probs, idx});
  // The override really took (no silent fallback to the default kernel), or
  // fell back where the variant says it must.
  if (v.expect_code >= 0)
    CHECK(nce_last_layout() == v.expect_code);
  else if (v.lanes != 0)  // else the variant's ring does not fit the device: the bf16 default, 8 x 4 async
    CHECK(nce_last_layout() == test::expected_layout_code(gpu, v.lanes, v.stages, v.ring, 2, 1084));
  float closs = 0, cz = 0;
  std::vector<float> cgrad(B * D), cprobs(B * (K + 1));
  std::vector<std::int64_t> cidx(B * (K + 1));
  nce_forward_backward(cpu, cfg,
                       {view(d.features.data(), {B, D}), view(d.targets.data(), {B}), host_bf16(bits, d.N, D),
                        explicit_negatives ? view(negatives.data(), {B, K}) : TensorView()},
                       1, ZUpdate::kInitFromBatch, view(&cz, {1}),
                       {view(&closs, {1}), view(cgrad.data(), {B, D}), view(cprobs.data(), {B, K + 1}),
                        view(cidx.data(), {B, K + 1})});
  CHECK(to_host<std::int64_t>(gpu, idx) == cidx);
  CHECK(test::relative_error(to_host<float>(gpu, probs), cprobs) < 2e-5);
  CHECK(to_host<float>(gpu, loss)[0] == Approx(closs).epsilon(2e-5));
  CHECK(to_host<float>(gpu, z)[0] == Approx(cz).epsilon(2e-5));
  CHECK(test::relative_error(to_host<float>(gpu, grad), cgrad) < 2e-5);
}

}  // namespace

TEST_CASE("fused NCE on a bf16 bank: CUDA matches the CPU reference", "[gpu][bf16][nce]") {
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  // The default layout on awkward shapes, then every D <= 128 layout once
  // (the async ring also at B = 256, where a warp walks two tiles, at D = 40
  // -- 16-byte rows of bf16 need D % 8 == 0 --, at K = 1000, whose last
  // tile is short, and at K = 65536 with B = 2, where the 64-split cap gives
  // every warp four tiles: row indices resolved a tile ahead are used).
  std::vector<Variant> variants;
  for (std::int64_t B : {1, 7, 256})
    for (std::int64_t D : {128, 50}) variants.push_back({0, 0, B, D});
  variants.push_back({0, 0, 7, 128, NceRing::kRegisters, 1000});
  variants.push_back({0, 0, 2, 128, NceRing::kRegisters, 65536});
  for (int lanes : {8, 16}) {
    for (int stages : {2, 3, 4}) variants.push_back({lanes, stages, 7, 128});
    for (int stages : {4, 8}) {
      for (std::int64_t B : {7, 256}) variants.push_back({lanes, stages, B, 128, NceRing::kAsync});
      variants.push_back({lanes, stages, 7, 40, NceRing::kAsync});
      variants.push_back({lanes, stages, 7, 128, NceRing::kAsync, 1000});
      variants.push_back({lanes, stages, 2, 128, NceRing::kAsync, 65536});
    }
  }
  // Four lanes per row (eight rows per step), four stages.
  for (std::int64_t B : {7, 256}) variants.push_back({4, 4, B, 128, NceRing::kAsync});
  variants.push_back({4, 4, 7, 40, NceRing::kAsync});
  variants.push_back({4, 4, 7, 128, NceRing::kAsync, 1000});
  variants.push_back({4, 4, 2, 128, NceRing::kAsync, 65536});
  for (std::int64_t K : {1, 15}) variants.push_back({4, 4, 7, 128, NceRing::kAsync, K});
  // The tensor-core gather (D = 128 only), 2 and 4 stages: a 4-stage ring's
  // first copies reach into the warp's second tile; B = 1 has one sample.
  for (int stages : {2, 4}) {
    for (std::int64_t B : {1, 7, 256}) variants.push_back({32, stages, B, 128, NceRing::kTensorCore});
    variants.push_back({32, stages, 7, 128, NceRing::kTensorCore, 1000});
    for (std::int64_t K : {1, 15}) variants.push_back({32, stages, 7, 128, NceRing::kTensorCore, K});
    variants.push_back({32, stages, 2, 128, NceRing::kTensorCore, 65536});
  }
  for (const Variant& v : variants) check_variant(gpu, cpu, v);
}

// One column split per sample: a warp walks three or four tiles, the last
// short (K = 872 and 1000: 8 columns, within a tile's first 16-row step;
// K = 1010: 18 columns), through the hand-off of row indices resolved a tile
// ahead; the default bf16 layout, 4 lanes per row and the tensor-core gather.
TEST_CASE("fused NCE on a bf16 bank: short last tiles on warps with several tiles", "[gpu][bf16][nce]") {
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  for (std::int64_t K : {872, 1000, 1010}) {
    check_variant(gpu, cpu, {0, 0, 7, 128, NceRing::kRegisters, K, -1, 1});
    check_variant(gpu, cpu, {4, 4, 7, 128, NceRing::kAsync, K, -1, 1});
    for (int stages : {2, 4}) check_variant(gpu, cpu, {32, stages, 7, 128, NceRing::kTensorCore, K, -1, 1});
  }
  // Splits that do not divide K = 1010's 32 tiles (3: 10 or 11 tiles a
  // split), and 64, which clamps to one tile a split, the last short.
  for (int splits : {3, 64}) {
    check_variant(gpu, cpu, {4, 4, 7, 128, NceRing::kAsync, 1010, -1, splits});
    for (int stages : {2, 4}) check_variant(gpu, cpu, {32, stages, 7, 128, NceRing::kTensorCore, 1010, -1, splits});
  }
}

// Rows past a short tile's end are not read: with NaN in bank row 0, which
// no target or negative names, every result stays finite and equal to the
// CPU reference's (which never touches row 0).
TEST_CASE("fused NCE on a bf16 bank: rows past a tile's end are never read", "[gpu][bf16][nce]") {
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  // K = 1000 ends on a full 8-row step of the 4-lane ring, K = 1010 inside
  // one (lane groups past the end hold stale ring slots).
  for (std::int64_t K : {1000, 1010})
    for (int splits : {0, 1}) {
      check_variant(gpu, cpu, {0, 0, 5, 128, NceRing::kRegisters, K, -1, splits, true});
      check_variant(gpu, cpu, {4, 4, 5, 128, NceRing::kAsync, K, -1, splits, true});
      for (int stages : {2, 4})
        check_variant(gpu, cpu, {32, stages, 5, 128, NceRing::kTensorCore, K, -1, splits, true});
    }
}


// Small enough for compute-sanitizer racecheck (tools/device_check.sh): the
// tensor-core gather's ring, where lanes read rows other lanes copied, and
// its epilogue, which reuses the ring as scratch; K = 200 ends mid-tile.
TEST_CASE("fused NCE: the tensor-core gather on a small case", "[gpu][bf16][nce]") {
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  for (int stages : {2, 4}) check_variant(gpu, cpu, {32, stages, 3, 128, NceRing::kTensorCore, 200});
}

// The tensor-core gather needs a bf16 bank with D = 128: elsewhere its
// override falls back to the default layout, which must still be right.
TEST_CASE("fused NCE: the tensor-core override falls back off its shape", "[gpu][bf16][nce]") {
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  for (std::int64_t D : {64, 50}) {
    check_variant(gpu, cpu, {0, 0, 5, D, NceRing::kRegisters, 300});
    const int default_code = nce_last_layout();
    check_variant(gpu, cpu, {32, 4, 5, D, NceRing::kTensorCore, 300, default_code});
  }
}

// Off 16-byte alignment neither cp.async ring may run: features one float
// in take the scalar register kernel (32 lanes x 2 stages, code 322); a bank
// 8 bytes in keeps the register ring's 4-element loads (16 x 3, code 163).
TEST_CASE("fused NCE: the async and tensor-core overrides fall back on unaligned views", "[gpu][bf16][nce]") {
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  const std::vector<Variant> overrides = {{4, 4, 5, 128, NceRing::kAsync, 300},
                                          {8, 4, 5, 128, NceRing::kAsync, 300},
                                          {32, 2, 5, 128, NceRing::kTensorCore, 300},
                                          {32, 4, 5, 128, NceRing::kTensorCore, 300}};
  for (Variant v : overrides) {
    v.feature_offset = 1;
    v.expect_code = 322;
    check_variant(gpu, cpu, v);
    v.feature_offset = 0;
    v.bank_offset = 4;
    v.expect_code = 163;
    check_variant(gpu, cpu, v);
  }
}

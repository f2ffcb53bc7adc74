// Full softmax on CUDA against the CPU reference: N not a multiple of the
// chunk, N smaller than the chunk, B = 1, float32 and bf16 banks, fp32 and
// TF32 math, determinism and chunk-size independence.
#include <algorithm>
#include <cmath>

#include "common/bf16.h"
#include "common/nce_fixture.h"
#include "softmax.h"

using namespace npid;
using test::NceData;
using test::to_device;
using test::to_host;

namespace {

struct Out {
  float loss = 0;
  std::vector<float> grad;
};

// bank_bf16: store the bank as bf16 (the CPU side then uses the same bits).
Out run(Context& ctx, const SoftmaxConfig& cfg, const NceData& d, bool bank_bf16 = false) {
  Out o;
  o.grad.resize(d.B * d.D);
  std::vector<bf16> b16(d.bank.size());
  for (std::size_t k = 0; k < b16.size(); ++k) b16[k] = float_to_bf16(d.bank[k]);
  if (ctx.is_cuda()) {
    Tensor f = to_device(ctx, d.features, {d.B, d.D});
    Tensor y = to_device(ctx, d.targets, {d.B});
    Tensor bank({d.N, d.D}, bank_bf16 ? DType::kBFloat16 : DType::kFloat32, ctx.device());
    if (bank_bf16) {
      copy(ctx, bank, TensorView(b16.data(), DType::kBFloat16, {d.N, d.D}, Device::cpu()));
    } else {
      copy(ctx, bank, view(d.bank.data(), {d.N, d.D}));
    }
    Tensor loss({1}, DType::kFloat32, ctx.device()), grad({d.B, d.D}, DType::kFloat32, ctx.device());
    softmax_forward_backward(ctx, cfg, {f, y, bank}, {loss, grad});
    o.loss = to_host<float>(ctx, loss)[0];
    o.grad = to_host<float>(ctx, grad);
  } else {
    const TensorView bank = bank_bf16 ? TensorView(b16.data(), DType::kBFloat16, {d.N, d.D}, Device::cpu())
                                      : view(d.bank.data(), {d.N, d.D});
    softmax_forward_backward(ctx, cfg, {view(d.features.data(), {d.B, d.D}), view(d.targets.data(), {d.B}), bank},
                             {view(&o.loss, {1}), view(o.grad.data(), {d.B, d.D})});
  }
  return o;
}

void compare(const Out& g, const Out& c, double loss_tol, double grad_tol) {
  INFO("loss " << g.loss << " vs " << c.loss << ", grad rel err " << test::relative_error(g.grad, c.grad));
  // The loss is LSE(logits) - target logit per sample: the two sides round the
  // target logit (|s/tau| up to ~14, ulp ~1e-6) in different summation orders,
  // so a loss near 0 (B = 1 at a confident target) also gets an absolute margin
  // of ~10 ulps of the logit.
  CHECK(g.loss == Approx(c.loss).epsilon(loss_tol).margin(1e-5));
  // Relative to the gradient's size, but not below 1e-2 per element (a
  // non-cancelling gradient here is ~1 per element): at D = 1
  // every row is +-1, the softmax mass sits on the rows of the target's sign
  // and the gradient cancels to rounding noise (~1e-8 against a reference of
  // the same size), where a relative error means nothing.
  double diff = 0, ref = 0;
  for (std::size_t k = 0; k < c.grad.size(); ++k) {
    diff += (double(g.grad[k]) - c.grad[k]) * (double(g.grad[k]) - c.grad[k]);
    ref += double(c.grad[k]) * c.grad[k];
  }
  const double rows = std::max<double>(1.0, static_cast<double>(c.grad.size()));
  CHECK(std::sqrt(diff) / std::max(std::sqrt(ref), 1e-2 * std::sqrt(rows)) < grad_tol);
}

// Bytes that make chunks of exactly `rows` rows for batch B, width D.
std::size_t budget_for(std::int64_t rows, std::int64_t B, std::int64_t D, DType dtype) {
  return softmax_cuda_workspace_bytes(B, D, rows, dtype, SoftmaxMath::kTF32);
}

}  // namespace

TEST_CASE("softmax: CUDA (fp32 math) matches the CPU reference across chunkings", "[gpu][softmax]") {
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  struct Shape {
    std::int64_t B, N, chunk;
  };
  // N not a multiple of the chunk; N < chunk; B = 1; a real batch.
  for (const Shape s : {Shape{7, 1000, 256}, Shape{7, 100, 1024}, Shape{1, 777, 128}, Shape{256, 5000, 1024}}) {
    for (bool b16 : {false, true}) {
      NceData d(s.B, 128, s.N, 1, static_cast<std::uint64_t>(s.B + s.N));
      SoftmaxConfig cfg;
      cfg.temperature = 0.07f;
      cfg.math = SoftmaxMath::kFP32;
      cfg.proximal_lambda = s.B == 7 ? 10.f : 0.f;
      cfg.workspace_bytes = budget_for(s.chunk, s.B, 128, b16 ? DType::kBFloat16 : DType::kFloat32);
      INFO("B=" << s.B << " N=" << s.N << " chunk=" << softmax_chunk_rows(cfg, s.B, 128, s.N,
                                                                          b16 ? DType::kBFloat16 : DType::kFloat32)
                << " bf16=" << b16);
      compare(run(gpu, cfg, d, b16), run(cpu, cfg, d, b16), 2e-5, 2e-5);
    }
  }
}

TEST_CASE("softmax: CUDA matches the CPU reference at other widths", "[gpu][softmax]") {
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  for (std::int64_t D : {1, 50, 256, 512}) {
    NceData d(9, D, 700, 1, static_cast<std::uint64_t>(D));
    SoftmaxConfig cfg;
    cfg.math = SoftmaxMath::kFP32;
    cfg.proximal_lambda = 1.f;
    cfg.workspace_bytes = budget_for(256, 9, D, DType::kFloat32);
    INFO("D=" << D);
    compare(run(gpu, cfg, d), run(cpu, cfg, d), 2e-5, 2e-5);
  }
}

TEST_CASE("softmax: TF32 math stays within its rounding of the reference", "[gpu][softmax]") {
  // TF32 keeps 11 significant bits: each product of the logit dot carries a
  // relative error <= 2^-11, so a logit (unit vectors) moves by <= ~1e-3 / tau
  // in the worst case and ~1e-4 / tau typically. At tau = 0.1 that is ~1e-3 on
  // the weights: the loss within 5e-3, the gradient within 2e-2.
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  NceData d(64, 128, 20000, 1, 5);
  SoftmaxConfig cfg;
  cfg.temperature = 0.1f;
  cfg.math = SoftmaxMath::kTF32;
  compare(run(gpu, cfg, d), run(cpu, cfg, d), 5e-3, 2e-2);
}

TEST_CASE("softmax: bf16 GEMMs on a bf16 bank stay within bf16 rounding of the reference", "[gpu][softmax][bf16]") {
  // kBF16 rounds f and the weights to bf16 (2^-9 relative): a logit (unit
  // vectors) moves by <= 2^-9 / tau in the worst case, ~2e-4 / tau typically,
  // and each weight by 2^-9 independently. At tau = 0.1: the loss within
  // 5e-3, the gradient within 3e-2 -- a little above TF32's bound.
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  struct Shape {
    std::int64_t B, N, chunk;
  };
  // N not a multiple of the chunk; N < chunk; B = 1; a real batch.
  for (const Shape s : {Shape{7, 1000, 256}, Shape{7, 100, 1024}, Shape{1, 777, 128}, Shape{256, 20000, 2048}}) {
    NceData d(s.B, 128, s.N, 1, static_cast<std::uint64_t>(s.B + 3 * s.N));
    SoftmaxConfig cfg;
    cfg.temperature = 0.1f;
    cfg.math = SoftmaxMath::kBF16;
    cfg.proximal_lambda = s.B == 7 ? 10.f : 0.f;
    cfg.workspace_bytes = softmax_cuda_workspace_bytes(s.B, 128, s.chunk, DType::kBFloat16, SoftmaxMath::kBF16);
    INFO("B=" << s.B << " N=" << s.N << " chunk=" << softmax_chunk_rows(cfg, s.B, 128, s.N, DType::kBFloat16));
    CHECK(softmax_chunk_rows(cfg, s.B, 128, s.N, DType::kBFloat16) == std::min(s.chunk, s.N));
    compare(run(gpu, cfg, d, true), run(cpu, cfg, d, true), 5e-3, 3e-2);
  }
}

TEST_CASE("softmax on CUDA: deterministic, and independent of the chunk size", "[gpu][softmax]") {
  Context gpu = Context::cuda();
  NceData d(32, 128, 10000, 1, 9);
  SoftmaxConfig cfg;
  cfg.math = SoftmaxMath::kFP32;
  const Out a = run(gpu, cfg, d), b = run(gpu, cfg, d);
  CHECK(a.loss == b.loss);
  CHECK(a.grad == b.grad);
  cfg.workspace_bytes = budget_for(384, 32, 128, DType::kFloat32);
  compare(run(gpu, cfg, d), a, 1e-5, 1e-5);
}

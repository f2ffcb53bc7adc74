// Checked entry points of the augmentation op and the epoch permutation;
// the presets of docs/math.md s.8.
#include "npid/augment.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "augment.h"
#include "common/augment_math.h"
#include "core/args.h"
#include "npid/error.h"

namespace npid {

AugmentConfig AugmentConfig::cifar10_train() { return AugmentConfig(); }

AugmentConfig AugmentConfig::cifar10_eval() {
  AugmentConfig c;
  c.train = false;
  return c;
}

AugmentConfig AugmentConfig::imagenet_train() {
  AugmentConfig c;
  c.out_height = c.out_width = 224;
  c.grayscale_first = true;
  c.flip_p = 0.5f;
  const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
  for (int i = 0; i < 3; ++i) {
    c.mean[i] = mean[i];
    c.std[i] = std[i];
  }
  return c;
}

AugmentConfig AugmentConfig::imagenet_eval() {
  AugmentConfig c = imagenet_train();
  c.train = false;
  c.resize_shorter = 256;
  return c;
}

namespace {

void check_config(const AugmentConfig& c, const char* op) {
  NPID_CHECK_ARG(c.out_height >= 1 && c.out_height <= 4096 && c.out_width >= 1 &&
                     c.out_width <= 4096,
                 op, "config.out_height, config.out_width",
                 "expected 1..4096 each, got " << c.out_height << " x " << c.out_width);
  NPID_CHECK_ARG(c.scale_min > 0.0f && c.scale_min <= c.scale_max && c.scale_max <= 1.0f, op,
                 "config.scale_min, config.scale_max",
                 "expected 0 < min <= max <= 1, got " << c.scale_min << ", " << c.scale_max);
  NPID_CHECK_ARG(c.ratio_min > 0.0f && c.ratio_min <= c.ratio_max && std::isfinite(c.ratio_max),
                 op, "config.ratio_min, config.ratio_max",
                 "expected 0 < min <= max, got " << c.ratio_min << ", " << c.ratio_max);
  NPID_CHECK_ARG(c.brightness >= 0.0f && c.contrast >= 0.0f && c.saturation >= 0.0f &&
                     std::isfinite(c.brightness + c.contrast + c.saturation),
                 op, "config.brightness, config.contrast, config.saturation",
                 "expected finite >= 0, got " << c.brightness << ", " << c.contrast << ", "
                                              << c.saturation);
  NPID_CHECK_ARG(c.hue >= 0.0f && c.hue <= 0.5f, op, "config.hue",
                 "expected 0 <= hue <= 0.5 (turns), got " << c.hue);
  NPID_CHECK_ARG(c.grayscale_p >= 0.0f && c.grayscale_p <= 1.0f, op, "config.grayscale_p",
                 "expected a probability in [0, 1], got " << c.grayscale_p);
  NPID_CHECK_ARG(c.flip_p >= 0.0f && c.flip_p <= 1.0f, op, "config.flip_p",
                 "expected a probability in [0, 1], got " << c.flip_p);
  NPID_CHECK_ARG(c.resize_shorter >= 0, op, "config.resize_shorter",
                 "expected >= 0, got " << c.resize_shorter);
  for (int i = 0; i < 3; ++i) {
    NPID_CHECK_ARG(c.std[i] > 0.0f && std::isfinite(c.std[i]) && std::isfinite(c.mean[i]), op,
                   "config.std", "expected finite std > 0 and finite mean, got channel "
                                     << i << ": mean " << c.mean[i] << ", std " << c.std[i]);
  }
  NPID_CHECK_ARG(c.train || c.resize_shorter == 0 ||
                     (c.resize_shorter >= c.out_height && c.resize_shorter >= c.out_width),
                 op, "config.resize_shorter",
                 "expected >= the crop size " << c.out_height << " x " << c.out_width << ", got "
                                              << c.resize_shorter);
}

// Validates the image set and batch tensors; fills the pointer fields of p.
AugmentProblem check_batch(Context& ctx, const AugmentConfig& config, const TensorView& pixels,
                           const TensorView& descs, const TensorView& sources,
                           const TensorView& out, const char* op) {
  check_config(config, op);
  require_present(pixels, op, "pixels");
  require_rank(pixels, 1, op, "pixels");
  require_tensor(pixels, DType::kUInt8, pixels.shape, ctx, op, "pixels");
  require_present(descs, op, "descs");
  require_rank(descs, 2, op, "descs");
  const std::int64_t N = descs.shape[0];
  require_tensor(descs, DType::kInt64, {N, 3}, ctx, op, "descs");
  require_present(sources, op, "sources");
  require_rank(sources, 1, op, "sources");
  const std::int64_t B = sources.shape[0];
  NPID_CHECK_ARG(B >= 1 && B <= 2147483647, op, "sources",
                 "expected 1 <= B < 2^31 images, got " << B);
  require_tensor(sources, DType::kInt64, {B}, ctx, op, "sources");
  require_tensor(out, DType::kFloat32, {B, config.out_height, config.out_width, 3}, ctx, op, "out");
  require_no_overlap(out, pixels, op, "out", "pixels");
  require_no_overlap(out, descs, op, "out", "descs");
  require_no_overlap(out, sources, op, "out", "sources");
  require_indices_below(ctx, sources, N, op, "sources");
  if (!ctx.is_cuda()) {  // descriptors read here cheaply; on CUDA they come from ImageSet
    const auto* d = static_cast<const std::int64_t*>(descs.data);
    for (std::int64_t i = 0; i < N; ++i) {
      NPID_CHECK_ARG(d[3 * i + 1] >= 1 && d[3 * i + 2] >= 1 && d[3 * i] >= 0 &&
                         d[3 * i] + d[3 * i + 1] * d[3 * i + 2] * 3 <= pixels.numel(),
                     op, "descs",
                     "expected row " << i << " to describe an image inside pixels ("
                                     << pixels.numel() << " bytes), got offset " << d[3 * i]
                                     << ", " << d[3 * i + 1] << " x " << d[3 * i + 2]);
    }
  }
  AugmentProblem p;
  p.config = config;
  p.pixels = static_cast<const std::uint8_t*>(pixels.data);
  p.descs = static_cast<const std::int64_t*>(descs.data);
  p.sources = static_cast<const std::int64_t*>(sources.data);
  p.batch = B;
  p.out = static_cast<float*>(out.data);
  return p;
}

void run(Context& ctx, const AugmentProblem& p) {
  if (ctx.is_cuda()) {
    launch_augment(ctx, p);
  } else {
    augment_cpu(p, ctx.cpu_threads());
  }
}

}  // namespace

AugmentParams draw_augment_params(const AugmentConfig& config, std::uint64_t seed,
                                  std::uint64_t epoch, std::int64_t instance,
                                  std::int64_t src_height, std::int64_t src_width) {
  constexpr const char* op = "draw_augment_params";
  check_config(config, op);
  NPID_CHECK_ARG(src_height >= 1 && src_width >= 1 && src_height < (1 << 24) &&
                     src_width < (1 << 24),
                 op, "src_height, src_width",
                 "expected 1..2^24 each, got " << src_height << " x " << src_width);
  return aug::draw_params(config, seed, epoch, instance, src_height, src_width);
}

void augment_batch(Context& ctx, const AugmentConfig& config, const TensorView& pixels,
                   const TensorView& descs, const TensorView& sources,
                   const TensorView& instances, std::uint64_t seed, std::uint64_t epoch,
                   const TensorView& out) {
  constexpr const char* op = "augment_batch";
  AugmentProblem p = check_batch(ctx, config, pixels, descs, sources, out, op);
  if (!instances.empty()) {
    require_tensor(instances, DType::kInt64, sources.shape, ctx, op, "instances");
    require_no_overlap(out, instances, op, "out", "instances");
    p.instances = static_cast<const std::int64_t*>(instances.data);
  } else {
    p.instances = p.sources;
  }
  p.seed = seed;
  p.epoch = epoch;
  run(ctx, p);
}

void augment_batch_with_params(Context& ctx, const AugmentConfig& config,
                               const TensorView& pixels, const TensorView& descs,
                               const TensorView& sources, const AugmentParams* params,
                               const TensorView& out) {
  constexpr const char* op = "augment_batch_with_params";
  AugmentProblem p = check_batch(ctx, config, pixels, descs, sources, out, op);
  NPID_CHECK_ARG(params != nullptr, op, "params", "expected B = " << p.batch << " parameters, got null");
  for (std::int64_t b = 0; b < p.batch; ++b) {
    const AugmentParams& q = params[b];
    bool order_ok = true;
    int seen = 0;
    for (int k = 0; k < 4; ++k) {
      order_ok = order_ok && q.order[k] < 4 && !(seen & (1 << q.order[k]));
      if (q.order[k] < 4) seen |= 1 << q.order[k];
    }
    NPID_CHECK_ARG(q.crop_w > 0.0f && q.crop_h > 0.0f && std::isfinite(q.crop_x + q.crop_y + q.crop_w + q.crop_h) &&
                       q.brightness >= 0.0f && q.contrast >= 0.0f && q.saturation >= 0.0f &&
                       std::fabs(q.hue) <= 0.5f && order_ok,
                   op, "params",
                   "expected a positive finite crop, factors >= 0, |hue| <= 0.5 and order a "
                   "permutation of 0..3; entry "
                       << b << " has crop " << q.crop_w << " x " << q.crop_h << ", factors "
                       << q.brightness << ", " << q.contrast << ", " << q.saturation << ", hue "
                       << q.hue);
  }
  if (!ctx.is_cuda()) {
    p.params = params;
    run(ctx, p);
    return;
  }
  const auto bytes = static_cast<std::int64_t>(sizeof(AugmentParams)) * p.batch;
  Tensor host({bytes}, DType::kUInt8, Device::cpu());
  std::memcpy(host.data(), params, static_cast<std::size_t>(bytes));
  Tensor dev({bytes}, DType::kUInt8, ctx.device());
  copy(ctx, dev, host);
  p.params = dev.data_as<const AugmentParams>();
  run(ctx, p);
  ctx.synchronize();  // `dev` is freed on return
}

void epoch_permutation(Context& ctx, std::uint64_t seed, std::uint64_t epoch,
                       const TensorView& out) {
  constexpr const char* op = "epoch_permutation";
  require_present(out, op, "out");
  require_rank(out, 1, op, "out");
  require_tensor(out, DType::kInt64, out.shape, ctx, op, "out");
  auto* o = static_cast<std::int64_t*>(out.data);
  if (ctx.is_cuda()) {
    launch_epoch_permutation(ctx, seed, epoch, out.shape[0], o);
  } else {
    epoch_permutation_cpu(seed, epoch, out.shape[0], o);
  }
}

}  // namespace npid

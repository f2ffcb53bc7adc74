// npid/augment.h -- training and eval transforms as one fused op, and the
// per-epoch permutation (docs/math.md s.8).
//
// augment_batch turns images of an ImageSet (uint8 HWC, any sizes) into the
// network's input, float32 NHWC (B, out_height, out_width, 3), in one pass:
//   crop box + bilinear resize (half-pixel centres, edge clamp, no
//   antialiasing) -> [grayscale if grayscale_first] -> ColorJitter (brightness,
//   contrast, saturation, hue in a random order per image) -> [grayscale] ->
//   horizontal flip -> Normalize.
// Pixel values are floats in [0, 1] between the steps and every jitter step
// clamps to [0, 1] (torchvision's tensor semantics). Contrast blends with the
// mean of the grayscale image as it stands when contrast is applied.
//
// Random parameters are a pure function of (seed, epoch, instance) through
// Philox (draw_augment_params), so an image's augmentation does not depend on
// the batch it is in, the device, or the launch shape. The CPU reference and
// the CUDA kernel share the parameter draw and the per-pixel arithmetic.
#pragma once

#include <cstdint>

#include "npid/context.h"
#include "npid/tensor.h"

namespace npid {

struct AugmentConfig {
  std::int64_t out_height = 32, out_width = 32;
  bool train = true;  // false: the eval transform (no randomness)
  // RandomResizedCrop (train).
  float scale_min = 0.2f, scale_max = 1.0f;
  float ratio_min = 3.0f / 4.0f, ratio_max = 4.0f / 3.0f;
  // ColorJitter strengths (train): factors ~ U(max(0, 1 - s), 1 + s), hue
  // shift ~ U(-hue, hue) in turns (hue <= 0.5). 0 disables that step.
  float brightness = 0.4f, contrast = 0.4f, saturation = 0.4f, hue = 0.4f;
  float grayscale_p = 0.2f;
  bool grayscale_first = false;  // ImageNet preset: grayscale before jitter
  float flip_p = 0.0f;
  // Eval: resize the shorter side to `resize_shorter`, centre-crop
  // out_height x out_width; 0 = resize the whole image to the output size.
  std::int64_t resize_shorter = 0;
  float mean[3] = {0.4914f, 0.4822f, 0.4465f};
  float std[3] = {0.2023f, 0.1994f, 0.2010f};

  static AugmentConfig cifar10_train();  // RRC(32, 0.2-1) -> jitter 0.4 -> gray 0.2
  static AugmentConfig cifar10_eval();   // normalize only
  static AugmentConfig imagenet_train(); // RRC(224) -> gray 0.2 -> jitter 0.4 -> flip 0.5
  static AugmentConfig imagenet_eval();  // resize 256, centre crop 224
};

// Per-image random parameters: what a transform does to one image.
struct AugmentParams {
  float crop_x = 0, crop_y = 0, crop_w = 0, crop_h = 0;  // source pixels
  float brightness = 1, contrast = 1, saturation = 1, hue = 0;
  std::uint8_t order[4] = {0, 1, 2, 3};  // 0 brightness, 1 contrast, 2 saturation, 3 hue
  std::uint8_t grayscale = 0, flip = 0;
};

// The parameters image `instance` of size src_height x src_width gets in
// `epoch` under `seed` (identity jitter and a centred crop for eval configs).
AugmentParams draw_augment_params(const AugmentConfig& config, std::uint64_t seed,
                                  std::uint64_t epoch, std::int64_t instance,
                                  std::int64_t src_height, std::int64_t src_width);

// images: uint8 pixels + int64 (N, 3) descriptors of an ImageSet, on ctx's
// device; sources (B) int64 rows of the set to transform; instances (B)
// int64 keys of the random draw (empty view: the sources themselves); out
// (B, out_height, out_width, 3) float32, written.
void augment_batch(Context& ctx, const AugmentConfig& config, const TensorView& pixels,
                   const TensorView& descs, const TensorView& sources,
                   const TensorView& instances, std::uint64_t seed, std::uint64_t epoch,
                   const TensorView& out);

// The same with explicit parameters (B AugmentParams on the host), for tests
// and for replaying what a step saw.
void augment_batch_with_params(Context& ctx, const AugmentConfig& config,
                               const TensorView& pixels, const TensorView& descs,
                               const TensorView& sources, const AugmentParams* params,
                               const TensorView& out);

// out (N) int64: a permutation of 0..N-1 that depends only on (seed, epoch):
// indices sorted by a 64-bit Philox key (ties by index). On CUDA a CUB radix
// sort; identical to the CPU result.
void epoch_permutation(Context& ctx, std::uint64_t seed, std::uint64_t epoch,
                       const TensorView& out);

}  // namespace npid

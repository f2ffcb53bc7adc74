// common/augment_math.h -- the augmentation contract, shared verbatim by the
// CUDA kernel and the CPU reference: the per-image parameter draw (Philox,
// keyed by seed; counter (instance, epoch, purpose)) and the per-pixel
// arithmetic (bilinear sample, colour steps, normalize).
#pragma once

#include <cmath>
#include <cstdint>

#include "common/hostdevice.h"
#include "common/philox.h"
#include "npid/augment.h"

namespace npid {
namespace aug {

enum : int { kBrightness = 0, kContrast = 1, kSaturation = 2, kHue = 3 };
// Philox counter word 3: what a draw is for.
enum : std::uint32_t { kCropTry0 = 0, kJitter = 16, kChoices = 17, kOrder = 18 };

NPID_HD std::uint32_t below32(std::uint32_t x, std::uint32_t n) {
  return static_cast<std::uint32_t>((static_cast<std::uint64_t>(x) * n) >> 32);
}
NPID_HD float lerp_u(float lo, float hi, std::uint32_t x) {
  return lo + (hi - lo) * uniform_open01(x);
}
NPID_HD float clamp01(float v) { return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v); }
NPID_HD float gray_of(const float* c) { return 0.299f * c[0] + 0.587f * c[1] + 0.114f * c[2]; }

NPID_HD Philox4 draw(std::uint64_t seed, std::uint64_t epoch, std::int64_t instance,
                     std::uint32_t purpose) {
  const auto inst = static_cast<std::uint64_t>(instance);
  return philox4x32_10({{static_cast<std::uint32_t>(inst), static_cast<std::uint32_t>(inst >> 32),
                         static_cast<std::uint32_t>(epoch), purpose}},
                       static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
}

// torchvision's RandomResizedCrop.get_params with our generator; rintf rounds
// half to even like Python's round().
NPID_HD void draw_crop(const AugmentConfig& c, std::uint64_t seed, std::uint64_t epoch,
                       std::int64_t instance, float H, float W, AugmentParams* p) {
  const float area = H * W;
  const float log_lo = logf(c.ratio_min), log_hi = logf(c.ratio_max);
  for (std::uint32_t t = 0; t < 10; ++t) {
    const Philox4 r = draw(seed, epoch, instance, kCropTry0 + t);
    const float target = area * lerp_u(c.scale_min, c.scale_max, r.v[0]);
    const float ratio = expf(lerp_u(log_lo, log_hi, r.v[1]));
    const float w = rintf(sqrtf(target * ratio)), h = rintf(sqrtf(target / ratio));
    if (w > 0.0f && w <= W && h > 0.0f && h <= H) {
      p->crop_w = w;
      p->crop_h = h;
      p->crop_x = static_cast<float>(below32(r.v[2], static_cast<std::uint32_t>(W - w) + 1u));
      p->crop_y = static_cast<float>(below32(r.v[3], static_cast<std::uint32_t>(H - h) + 1u));
      return;
    }
  }
  // Fallback: the whole image with its aspect ratio clamped to the range.
  float w = W, h = H;
  const float in_ratio = W / H;
  if (in_ratio < c.ratio_min) {
    h = rintf(w / c.ratio_min);
  } else if (in_ratio > c.ratio_max) {
    w = rintf(h * c.ratio_max);
  }
  p->crop_w = w;
  p->crop_h = h;
  p->crop_x = floorf((W - w) * 0.5f);
  p->crop_y = floorf((H - h) * 0.5f);
}

NPID_HD AugmentParams draw_params(const AugmentConfig& c, std::uint64_t seed,
                                  std::uint64_t epoch, std::int64_t instance,
                                  std::int64_t src_h, std::int64_t src_w) {
  AugmentParams p;
  const float H = static_cast<float>(src_h), W = static_cast<float>(src_w);
  if (!c.train) {
    if (c.resize_shorter > 0) {
      const float s = static_cast<float>(c.resize_shorter) / (H < W ? H : W);
      p.crop_w = static_cast<float>(c.out_width) / s;
      p.crop_h = static_cast<float>(c.out_height) / s;
      p.crop_x = (W - p.crop_w) * 0.5f;
      p.crop_y = (H - p.crop_h) * 0.5f;
    } else {
      p.crop_w = W;
      p.crop_h = H;
    }
    return p;
  }
  draw_crop(c, seed, epoch, instance, H, W, &p);
  const Philox4 j = draw(seed, epoch, instance, kJitter);
  if (c.brightness > 0.0f) p.brightness = lerp_u(fmaxf(0.0f, 1.0f - c.brightness), 1.0f + c.brightness, j.v[0]);
  if (c.contrast > 0.0f) p.contrast = lerp_u(fmaxf(0.0f, 1.0f - c.contrast), 1.0f + c.contrast, j.v[1]);
  if (c.saturation > 0.0f) p.saturation = lerp_u(fmaxf(0.0f, 1.0f - c.saturation), 1.0f + c.saturation, j.v[2]);
  if (c.hue > 0.0f) p.hue = lerp_u(-c.hue, c.hue, j.v[3]);
  const Philox4 k = draw(seed, epoch, instance, kChoices);
  // Fisher-Yates over the four jitter steps, one 32-bit word a swap.
  const Philox4 o = draw(seed, epoch, instance, kOrder);
  std::uint8_t order[4] = {0, 1, 2, 3};
  for (int i = 3; i > 0; --i) {
    const std::uint32_t pick = below32(o.v[3 - i], static_cast<std::uint32_t>(i + 1));
    const std::uint8_t t = order[i];
    order[i] = order[pick];
    order[pick] = t;
  }
  for (int i = 0; i < 4; ++i) p.order[i] = order[i];
  p.grayscale = uniform_open01(k.v[1]) < c.grayscale_p ? 1 : 0;
  p.flip = uniform_open01(k.v[2]) < c.flip_p ? 1 : 0;
  return p;
}

// Bilinear sample of output pixel (ox, oy) (flip already applied to ox):
// half-pixel centres, clamped to the crop box and the image (a crop that
// starts outside the image, possible only with explicit parameters, samples
// its nearest edge). rgb in [0, 1].
NPID_HD void sample_bilinear(const std::uint8_t* img, int H, int W, const AugmentParams& p,
                             int out_h, int out_w, int ox, int oy, float* rgb) {
  const float lo_x = fminf(fmaxf(0.0f, p.crop_x), W - 1.0f), hi_x = fminf(W - 1.0f, p.crop_x + p.crop_w - 1.0f);
  const float lo_y = fminf(fmaxf(0.0f, p.crop_y), H - 1.0f), hi_y = fminf(H - 1.0f, p.crop_y + p.crop_h - 1.0f);
  float sx = p.crop_x + (ox + 0.5f) * (p.crop_w / out_w) - 0.5f;
  float sy = p.crop_y + (oy + 0.5f) * (p.crop_h / out_h) - 0.5f;
  sx = fminf(fmaxf(sx, lo_x), fmaxf(lo_x, hi_x));
  sy = fminf(fmaxf(sy, lo_y), fmaxf(lo_y, hi_y));
  const int x0 = static_cast<int>(sx), y0 = static_cast<int>(sy);
  const int x1 = x0 + 1 < W ? x0 + 1 : W - 1, y1 = y0 + 1 < H ? y0 + 1 : H - 1;
  const float fx = sx - x0, fy = sy - y0;
  const std::uint8_t* r00 = img + (static_cast<std::int64_t>(y0) * W + x0) * 3;
  const std::uint8_t* r01 = img + (static_cast<std::int64_t>(y0) * W + x1) * 3;
  const std::uint8_t* r10 = img + (static_cast<std::int64_t>(y1) * W + x0) * 3;
  const std::uint8_t* r11 = img + (static_cast<std::int64_t>(y1) * W + x1) * 3;
  for (int ch = 0; ch < 3; ++ch) {
    const float top = r00[ch] + fx * (r01[ch] - static_cast<float>(r00[ch]));
    const float bot = r10[ch] + fx * (r11[ch] - static_cast<float>(r10[ch]));
    rgb[ch] = (top + fy * (bot - top)) / 255.0f;
  }
}

// Hue rotation by `shift` turns through HSV (torchvision's adjust_hue math).
NPID_HD void rotate_hue(float* c, float shift) {
  const float r = c[0], g = c[1], b = c[2];
  const float maxc = fmaxf(r, fmaxf(g, b)), minc = fminf(r, fminf(g, b));
  const float range = maxc - minc;
  if (range <= 0.0f) return;  // grey: no hue to rotate
  const float v = maxc, s = range / maxc;
  float h;
  if (maxc == r) {
    h = (g - b) / range;
  } else if (maxc == g) {
    h = 2.0f + (b - r) / range;
  } else {
    h = 4.0f + (r - g) / range;
  }
  h = h / 6.0f + shift;
  h -= floorf(h);  // [0, 1)
  const float h6 = h * 6.0f;
  const float sector = floorf(h6);
  const float f = h6 - sector;
  const int i = static_cast<int>(sector) % 6;
  const float pp = clamp01(v * (1.0f - s)), q = clamp01(v * (1.0f - s * f)),
              t = clamp01(v * (1.0f - s * (1.0f - f)));
  switch (i) {
    case 0: c[0] = v; c[1] = t; c[2] = pp; break;
    case 1: c[0] = q; c[1] = v; c[2] = pp; break;
    case 2: c[0] = pp; c[1] = v; c[2] = t; break;
    case 3: c[0] = pp; c[1] = q; c[2] = v; break;
    case 4: c[0] = t; c[1] = pp; c[2] = v; break;
    default: c[0] = v; c[1] = pp; c[2] = q; break;
  }
}

NPID_HD void to_gray(float* c) { c[0] = c[1] = c[2] = gray_of(c); }

// The colour steps of p on one pixel. until_contrast: stop just before the
// contrast step (the state whose grayscale mean contrast blends with).
NPID_HD void color_steps(float* c, const AugmentParams& p, bool grayscale_first,
                         float contrast_mean, bool until_contrast) {
  if (p.grayscale && grayscale_first) to_gray(c);
  for (int k = 0; k < 4; ++k) {
    switch (p.order[k]) {
      case kBrightness:
        if (p.brightness != 1.0f) {
          for (int ch = 0; ch < 3; ++ch) c[ch] = clamp01(c[ch] * p.brightness);
        }
        break;
      case kContrast:
        if (until_contrast) return;
        if (p.contrast != 1.0f) {
          for (int ch = 0; ch < 3; ++ch) {
            c[ch] = clamp01(p.contrast * c[ch] + (1.0f - p.contrast) * contrast_mean);
          }
        }
        break;
      case kSaturation:
        if (p.saturation != 1.0f) {
          const float g = gray_of(c);
          for (int ch = 0; ch < 3; ++ch) c[ch] = clamp01(p.saturation * c[ch] + (1.0f - p.saturation) * g);
        }
        break;
      default:
        if (p.hue != 0.0f) rotate_hue(c, p.hue);
        break;
    }
  }
  if (p.grayscale && !grayscale_first) to_gray(c);
}

NPID_HD bool needs_contrast_mean(const AugmentParams& p) { return p.contrast != 1.0f; }

// The grayscale value the mean pass accumulates for output pixel (ox, oy).
NPID_HD float pre_contrast_gray(const std::uint8_t* img, int H, int W, const AugmentParams& p,
                                const AugmentConfig& c, int ox, int oy) {
  float rgb[3];
  sample_bilinear(img, H, W, p, static_cast<int>(c.out_height), static_cast<int>(c.out_width),
                  p.flip ? static_cast<int>(c.out_width) - 1 - ox : ox, oy, rgb);
  color_steps(rgb, p, c.grayscale_first, 0.0f, true);
  return gray_of(rgb);
}

// The normalized output of pixel (ox, oy), written to out[0..2].
NPID_HD void output_pixel(const std::uint8_t* img, int H, int W, const AugmentParams& p,
                          const AugmentConfig& c, float contrast_mean, int ox, int oy,
                          float* out) {
  float rgb[3];
  sample_bilinear(img, H, W, p, static_cast<int>(c.out_height), static_cast<int>(c.out_width),
                  p.flip ? static_cast<int>(c.out_width) - 1 - ox : ox, oy, rgb);
  color_steps(rgb, p, c.grayscale_first, contrast_mean, false);
  for (int ch = 0; ch < 3; ++ch) out[ch] = (rgb[ch] - c.mean[ch]) / c.std[ch];
}

}  // namespace aug
}  // namespace npid

// Augmentation semantics on the CPU reference: parameter statistics and
// bounds, identities, grayscale weights, hue rotation by known angles, the
// contrast mean, crop/resize geometry, flip, normalization, the epoch
// permutation, and argument errors.
#include <cmath>
#include <array>
#include <cstring>
#include <map>
#include <random>
#include <set>

#include "common/test_util.h"

using namespace npid;

namespace {

// A set of one h x w image with pixel (y, x) = f(y, x).
template <typename F>
ImageSet one_image(int h, int w, F f) {
  std::vector<std::uint8_t> px(static_cast<std::size_t>(h * w * 3));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const auto c = f(y, x);
      for (int ch = 0; ch < 3; ++ch) px[(y * w + x) * 3 + ch] = c[ch];
    }
  ImageSetBuilder b;
  b.add(px.data(), h, w, 0);
  return b.finish({"only"});
}

AugmentConfig plain(int out) {  // no normalization, no randomness
  AugmentConfig c;
  c.train = false;
  c.out_height = c.out_width = out;
  for (int i = 0; i < 3; ++i) {
    c.mean[i] = 0.0f;
    c.std[i] = 1.0f;
  }
  return c;
}

AugmentParams full_crop(int h, int w) {
  AugmentParams p;
  p.crop_w = static_cast<float>(w);
  p.crop_h = static_cast<float>(h);
  return p;
}

std::vector<float> run_params(const ImageSet& set, const AugmentConfig& c, const AugmentParams& p) {
  Context ctx = Context::cpu();
  std::vector<float> out(static_cast<std::size_t>(c.out_height * c.out_width * 3));
  std::int64_t src = 0;
  augment_batch_with_params(ctx, c, set.pixels, set.descs, view(&src, {1}), &p,
                            view(out.data(), {1, c.out_height, c.out_width, 3}));
  return out;
}

using RGB = std::array<std::uint8_t, 3>;

}  // namespace

TEST_CASE("Augment: RandomResizedCrop parameters stay in bounds with the right statistics", "[augment]") {
  const AugmentConfig c = AugmentConfig::cifar10_train();
  const int H = 32, W = 48;
  double area_sum = 0, log_ratio_sum = 0;
  int fallbacks = 0, n = 20000;
  for (int i = 0; i < n; ++i) {
    const AugmentParams p = draw_augment_params(c, 11, 3, i, H, W);
    REQUIRE(p.crop_x >= 0);
    REQUIRE(p.crop_y >= 0);
    REQUIRE(p.crop_x + p.crop_w <= W);
    REQUIRE(p.crop_y + p.crop_h <= H);
    REQUIRE(p.crop_w == std::floor(p.crop_w));
    const double area = p.crop_w * p.crop_h / double(H * W);
    const double ratio = p.crop_w / p.crop_h;
    // Rounding w and h to integers moves area and ratio a little.
    if (area > 0.17 && area < 1.0 + 1e-9 && ratio > 0.7 && ratio < 1.43) {
      area_sum += area;
      log_ratio_sum += std::log(ratio);
    } else {
      ++fallbacks;
    }
  }
  REQUIRE(fallbacks == 0);  // a 32x48 image nearly always fits within 10 tries
  // The same rule driven by an independent generator (std::mt19937, double
  // precision): rejected tries favour small crops, so the mean area is below
  // the 0.6 of U(0.2, 1); both must agree.
  std::mt19937 gen(123);
  std::uniform_real_distribution<double> U(0.0, 1.0);
  double ref_area = 0, ref_log_ratio = 0;
  const int m = 200000;
  for (int i = 0; i < m; ++i) {
    double w = W, h = H;
    for (int t = 0; t < 10; ++t) {
      const double target = H * W * (0.2 + 0.8 * U(gen));
      const double ratio = std::exp(std::log(0.75) + (std::log(4.0 / 3) - std::log(0.75)) * U(gen));
      const double tw = std::nearbyint(std::sqrt(target * ratio)), th = std::nearbyint(std::sqrt(target / ratio));
      if (tw > 0 && tw <= W && th > 0 && th <= H) {
        w = tw;
        h = th;
        break;
      }
    }
    ref_area += w * h / double(H * W);
    ref_log_ratio += std::log(w / h);
  }
  REQUIRE(area_sum / n == Approx(ref_area / m).margin(0.006));
  REQUIRE(log_ratio_sum / n == Approx(ref_log_ratio / m).margin(0.006));
}

TEST_CASE("Augment: jitter factors, grayscale, flip and order statistics", "[augment]") {
  AugmentConfig c = AugmentConfig::imagenet_train();
  const int n = 24000;
  double b = 0, hue = 0, hue_abs = 0;
  int gray = 0, flip = 0;
  std::map<std::array<int, 4>, int> orders;
  for (int i = 0; i < n; ++i) {
    const AugmentParams p = draw_augment_params(c, 5, 0, i, 300, 400);
    REQUIRE(p.brightness >= 0.6f);
    REQUIRE(p.brightness <= 1.4f);
    REQUIRE(p.contrast >= 0.6f);
    REQUIRE(p.saturation <= 1.4f);
    REQUIRE(std::fabs(p.hue) <= 0.4f);
    b += p.brightness;
    hue += p.hue;
    hue_abs += std::fabs(p.hue);
    gray += p.grayscale;
    flip += p.flip;
    std::array<int, 4> o{p.order[0], p.order[1], p.order[2], p.order[3]};
    REQUIRE(std::set<int>(o.begin(), o.end()).size() == 4);
    ++orders[o];
  }
  REQUIRE(b / n == Approx(1.0).margin(0.01));
  REQUIRE(hue / n == Approx(0.0).margin(0.01));
  REQUIRE(hue_abs / n == Approx(0.2).margin(0.01));     // E|U(-0.4, 0.4)| = 0.2
  REQUIRE(gray / double(n) == Approx(0.2).margin(0.01));
  REQUIRE(flip / double(n) == Approx(0.5).margin(0.015));
  REQUIRE(orders.size() == 24);                           // every order occurs ...
  for (const auto& kv : orders) REQUIRE(kv.second == Approx(n / 24.0).margin(n / 24.0 * 0.15));  // ... about equally
}

TEST_CASE("Augment: parameters depend only on (seed, epoch, instance)", "[augment]") {
  const AugmentConfig c = AugmentConfig::cifar10_train();
  const AugmentParams a = draw_augment_params(c, 1, 2, 77, 32, 32);
  const AugmentParams same = draw_augment_params(c, 1, 2, 77, 32, 32);
  const AugmentParams next_epoch = draw_augment_params(c, 1, 3, 77, 32, 32);
  const AugmentParams other_seed = draw_augment_params(c, 2, 2, 77, 32, 32);
  auto fields = [](const AugmentParams& p) {
    return std::vector<float>{p.crop_x, p.crop_y, p.crop_w, p.crop_h, p.brightness, p.contrast,
                              p.saturation, p.hue, float(p.order[0]), float(p.order[1]),
                              float(p.order[2]), float(p.order[3]), float(p.grayscale), float(p.flip)};
  };
  REQUIRE(fields(a) == fields(same));
  REQUIRE(a.brightness != next_epoch.brightness);
  REQUIRE(a.brightness != other_seed.brightness);

  // Batch composition does not matter: instance 7 looks the same in any batch.
  Context ctx = Context::cpu();
  SyntheticConfig sc;
  sc.count = 10;
  const ImageSet set = make_synthetic(sc);
  std::vector<std::int64_t> b1 = {7, 2, 3}, b2 = {4, 7};
  std::vector<float> o1(3 * 32 * 32 * 3), o2(2 * 32 * 32 * 3);
  augment_batch(ctx, c, set.pixels, set.descs, view(b1.data(), {3}), {}, 9, 1, view(o1.data(), {3, 32, 32, 3}));
  augment_batch(ctx, c, set.pixels, set.descs, view(b2.data(), {2}), {}, 9, 1, view(o2.data(), {2, 32, 32, 3}));
  REQUIRE(std::equal(o1.begin(), o1.begin() + 3072, o2.begin() + 3072));
  // Explicit instance keys decouple the source row from the random draw.
  std::vector<std::int64_t> src = {2}, inst = {7};
  std::vector<float> o3(3072);
  augment_batch(ctx, c, set.pixels, set.descs, view(src.data(), {1}), view(inst.data(), {1}), 9, 1,
                view(o3.data(), {1, 32, 32, 3}));
  std::vector<float> o4(3072);
  const AugmentParams p7 = draw_augment_params(c, 9, 1, 7, 32, 32);
  augment_batch_with_params(ctx, c, set.pixels, set.descs, view(src.data(), {1}), &p7, view(o4.data(), {1, 32, 32, 3}));
  REQUIRE(o3 == o4);
}

TEST_CASE("Augment: the eval transform without normalization reproduces the image", "[augment]") {
  const ImageSet set = one_image(32, 32, [](int y, int x) {
    return RGB{static_cast<std::uint8_t>(x * 7 + y), static_cast<std::uint8_t>(y * 5), static_cast<std::uint8_t>(255 - x)};
  });
  const AugmentConfig c = plain(32);
  const AugmentParams p = draw_augment_params(c, 0, 0, 0, 32, 32);
  const auto out = run_params(set, c, p);
  const auto* px = set.pixels.data_as<std::uint8_t>();
  for (int i = 0; i < 32 * 32 * 3; ++i) REQUIRE(out[i] == px[i] / 255.0f);
  // Factors of exactly 1 (and hue 0) are the identity in any order.
  AugmentParams q = p;
  q.order[0] = 3; q.order[1] = 1; q.order[2] = 0; q.order[3] = 2;
  REQUIRE(run_params(set, c, q) == out);
}

TEST_CASE("Augment: grayscale weights, brightness, contrast and saturation factors", "[augment]") {
  const ImageSet red = one_image(4, 4, [](int, int) { return RGB{255, 0, 0}; });
  const AugmentConfig c = plain(4);
  AugmentParams p = full_crop(4, 4);
  p.grayscale = 1;
  auto out = run_params(red, c, p);
  for (float v : out) REQUIRE(v == Approx(0.299f).epsilon(1e-6));
  const ImageSet green = one_image(4, 4, [](int, int) { return RGB{0, 255, 0}; });
  REQUIRE(run_params(green, c, p)[1] == Approx(0.587f).epsilon(1e-6));

  // Brightness scales and clamps.
  const ImageSet grey = one_image(4, 4, [](int, int) { return RGB{100, 200, 50}; });
  p = full_crop(4, 4);
  p.brightness = 0.5f;
  out = run_params(grey, c, p);
  REQUIRE(out[0] == Approx(50 / 255.0f));
  REQUIRE(out[1] == Approx(100 / 255.0f));
  p.brightness = 1.5f;
  REQUIRE(run_params(grey, c, p)[1] == 1.0f);

  // Saturation 0 = the grayscale image.
  p = full_crop(4, 4);
  p.saturation = 0.0f;
  out = run_params(grey, c, p);
  const float g = (0.299f * 100 + 0.587f * 200 + 0.114f * 50) / 255.0f;
  for (float v : out) REQUIRE(v == Approx(g).epsilon(1e-5));

  // Contrast blends with the mean grayscale of the image as it stands: a half
  // black, half white image, brightness 0.5 first, then contrast 0.5:
  // after brightness 0 and 0.5 (mean 0.25) -> 0.125 and 0.375.
  const ImageSet halves = one_image(4, 4, [](int, int x) {
    return x < 2 ? RGB{0, 0, 0} : RGB{255, 255, 255};
  });
  p = full_crop(4, 4);
  p.brightness = 0.5f;
  p.contrast = 0.5f;
  p.order[0] = 0; p.order[1] = 1; p.order[2] = 2; p.order[3] = 3;
  out = run_params(halves, c, p);
  REQUIRE(out[0] == Approx(0.125f).epsilon(1e-5));
  REQUIRE(out[3 * 3] == Approx(0.375f).epsilon(1e-5));
  // Contrast first (mean 0.5): 0.25 and 0.75, then brightness: 0.125, 0.375 too;
  // brightness 2 shows the order: contrast first -> (0.5, 1.0); brightness
  // first -> clamp(0, 1) mean 0.5 -> (0.25, 0.75).
  p.brightness = 2.0f;
  p.order[0] = 1; p.order[1] = 0;
  out = run_params(halves, c, p);
  REQUIRE(out[0] == Approx(0.5f).epsilon(1e-5));
  REQUIRE(out[9] == Approx(1.0f).epsilon(1e-5));
  p.order[0] = 0; p.order[1] = 1;
  out = run_params(halves, c, p);
  REQUIRE(out[0] == Approx(0.25f).epsilon(1e-5));
  REQUIRE(out[9] == Approx(0.75f).epsilon(1e-5));
}

TEST_CASE("Augment: hue rotation by known angles on known colours", "[augment]") {
  const AugmentConfig c = plain(2);
  struct Case { RGB in; float shift; std::array<float, 3> expect; };
  const Case cases[] = {
      {{255, 0, 0}, 1.0f / 3, {0, 1, 0}},        // red -> green
      {{255, 0, 0}, -1.0f / 3, {0, 0, 1}},       // red -> blue
      {{255, 0, 0}, 1.0f / 6, {1, 1, 0}},        // red -> yellow
      {{0, 255, 255}, 0.5f, {1, 0, 0}},          // cyan -> red
      {{255, 128, 0}, 0.0f, {1, 128 / 255.0f, 0}},
      {{128, 128, 128}, 0.25f, {128 / 255.0f, 128 / 255.0f, 128 / 255.0f}},  // grey has no hue
  };
  for (const Case& k : cases) {
    const ImageSet img = one_image(2, 2, [&](int, int) { return k.in; });
    AugmentParams p = full_crop(2, 2);
    p.hue = k.shift;
    const auto out = run_params(img, c, p);
    for (int ch = 0; ch < 3; ++ch) REQUIRE(out[ch] == Approx(k.expect[ch]).margin(1e-5));
  }
}

TEST_CASE("Augment: crop and bilinear resize geometry, flip, normalization", "[augment]") {
  // Red channel = 8 * x: a horizontal ramp.
  const ImageSet ramp = one_image(16, 32, [](int y, int x) {
    return RGB{static_cast<std::uint8_t>(8 * x), static_cast<std::uint8_t>(8 * y), 0};
  });
  AugmentConfig c = plain(16);
  AugmentParams p;
  p.crop_x = 8; p.crop_y = 4; p.crop_w = 8; p.crop_h = 8;  // 8x8 crop upscaled to 16x16
  auto out = run_params(ramp, c, p);
  for (int ox = 0; ox < 16; ++ox) {
    float sx = 8 + (ox + 0.5f) * 0.5f - 0.5f;           // half-pixel centres
    sx = std::min(std::max(sx, 8.0f), 15.0f);           // clamped to the crop
    REQUIRE(out[(5 * 16 + ox) * 3] == Approx(8 * sx / 255.0f).epsilon(1e-5));
  }
  REQUIRE(out[(0 * 16 + 3) * 3 + 1] == Approx(8 * 4 / 255.0f).epsilon(1e-5));   // top row clamps to y = 4
  REQUIRE(out[(15 * 16 + 3) * 3 + 1] == Approx(8 * 11 / 255.0f).epsilon(1e-5)); // bottom to y = 11
  // Flip mirrors the output.
  p.flip = 1;
  const auto flipped = run_params(ramp, c, p);
  for (int y = 0; y < 16; ++y)
    for (int x = 0; x < 16; ++x)
      for (int ch = 0; ch < 3; ++ch) REQUIRE(flipped[(y * 16 + x) * 3 + ch] == out[(y * 16 + 15 - x) * 3 + ch]);
  // Normalization: (x - mean) / std per channel.
  AugmentConfig n = c;
  n.mean[0] = 0.5f; n.std[0] = 0.25f;
  n.mean[1] = 0.1f; n.std[1] = 2.0f;
  const auto normed = run_params(ramp, n, p);
  for (int i = 0; i < 16 * 16; ++i) {
    REQUIRE(normed[3 * i] == Approx((flipped[3 * i] - 0.5f) / 0.25f).margin(1e-6));
    REQUIRE(normed[3 * i + 1] == Approx((flipped[3 * i + 1] - 0.1f) / 2.0f).margin(1e-6));
  }
}

TEST_CASE("Augment: ImageNet eval = resize shorter side to 256, centre crop 224", "[augment]") {
  const AugmentConfig c = AugmentConfig::imagenet_eval();
  const AugmentParams p = draw_augment_params(c, 0, 0, 0, 512, 1024);
  REQUIRE(p.crop_h == Approx(448.0f));          // 224 / (256 / 512)
  REQUIRE(p.crop_w == Approx(448.0f));
  REQUIRE(p.crop_x == Approx((1024 - 448) / 2.0f));
  REQUIRE(p.crop_y == Approx(32.0f));
  REQUIRE(p.brightness == 1.0f);
  REQUIRE(p.grayscale == 0);
}

TEST_CASE("Augment: training output stays within the normalized range", "[augment]") {
  Context ctx = Context::cpu();
  SyntheticConfig sc;
  sc.count = 64;
  const ImageSet set = make_synthetic(sc);
  const AugmentConfig c = AugmentConfig::cifar10_train();
  std::vector<std::int64_t> idx(64);
  for (int i = 0; i < 64; ++i) idx[i] = i;
  std::vector<float> out(64 * 32 * 32 * 3);
  augment_batch(ctx, c, set.pixels, set.descs, view(idx.data(), {64}), {}, 3, 0, view(out.data(), {64, 32, 32, 3}));
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int ch = static_cast<int>(i % 3);
    REQUIRE(out[i] >= (0.0f - c.mean[ch]) / c.std[ch] - 1e-5f);
    REQUIRE(out[i] <= (1.0f - c.mean[ch]) / c.std[ch] + 1e-5f);
  }
  // Two epochs give different views of the same image.
  std::vector<float> out2(out.size());
  augment_batch(ctx, c, set.pixels, set.descs, view(idx.data(), {64}), {}, 3, 1, view(out2.data(), {64, 32, 32, 3}));
  REQUIRE(out != out2);
}

TEST_CASE("Epoch permutation: a permutation, deterministic, different per epoch", "[augment]") {
  Context ctx = Context::cpu();
  std::vector<std::int64_t> a(1000), b(1000), e(1000);
  epoch_permutation(ctx, 4, 0, view(a.data(), {1000}));
  epoch_permutation(ctx, 4, 0, view(b.data(), {1000}));
  epoch_permutation(ctx, 4, 1, view(e.data(), {1000}));
  REQUIRE(a == b);
  REQUIRE(a != e);
  std::vector<std::int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int i = 0; i < 1000; ++i) REQUIRE(sorted[i] == i);
  int fixed_points = 0;
  for (int i = 0; i < 1000; ++i) fixed_points += a[i] == i;
  REQUIRE(fixed_points < 10);  // expected 1
}

TEST_CASE("Augment rejects bad arguments naming them", "[augment][errors]") {
  Context ctx = Context::cpu();
  SyntheticConfig sc;
  sc.count = 4;
  const ImageSet set = make_synthetic(sc);
  std::vector<std::int64_t> idx = {0, 3};
  std::vector<float> out(2 * 32 * 32 * 3, 7.0f);
  const auto kind = ErrorKind::kInvalidArgument;
  AugmentConfig c = AugmentConfig::cifar10_train();
  c.hue = 0.6f;
  test::require_error([&] { augment_batch(ctx, c, set.pixels, set.descs, view(idx.data(), {2}), {}, 0, 0, view(out.data(), {2, 32, 32, 3})); },
                      kind, {"augment_batch", "config.hue", "0.6"});
  c = AugmentConfig::cifar10_train();
  c.scale_min = 0.0f;
  test::require_error([&] { draw_augment_params(c, 0, 0, 0, 32, 32); }, kind, {"draw_augment_params", "config.scale_min"});
  c = AugmentConfig::cifar10_train();
  idx[1] = 4;
  test::require_error([&] { augment_batch(ctx, c, set.pixels, set.descs, view(idx.data(), {2}), {}, 0, 0, view(out.data(), {2, 32, 32, 3})); },
                      kind, {"augment_batch", "sources"});
  idx[1] = 1;
  test::require_error([&] { augment_batch(ctx, c, set.pixels, set.descs, view(idx.data(), {2}), {}, 0, 0, view(out.data(), {2, 16, 16, 3})); },
                      kind, {"augment_batch", "out", "(2, 32, 32, 3)", "(2, 16, 16, 3)"});
  for (float v : out) REQUIRE(v == 7.0f);  // nothing written
  AugmentParams bad;
  test::require_error([&] { augment_batch_with_params(ctx, c, set.pixels, set.descs, view(idx.data(), {1}), &bad, view(out.data(), {1, 32, 32, 3})); },
                      kind, {"augment_batch_with_params", "params", "entry 0"});
}

TEST_CASE("Augment: an explicit crop starting outside the image samples its nearest edge", "[augment]") {
  // Pixel (y, x) has colour (x, y, 7): the sampled column and row show up in
  // the output directly (no normalization, identity jitter).
  const ImageSet set = one_image(32, 32, [](int y, int x) {
    return RGB{static_cast<std::uint8_t>(x), static_cast<std::uint8_t>(y), 7};
  });
  AugmentParams p = full_crop(8, 8);
  p.crop_x = 40.0f;  // beyond the right edge (W = 32)
  p.crop_y = 31.0f;  // on the last row, extending below the image
  const std::vector<float> out = run_params(set, plain(4), p);
  for (std::size_t k = 0; k < out.size(); k += 3) {
    CHECK(out[k] == Approx(31.0f / 255.0f));  // column 31, the last
    CHECK(out[k + 1] == Approx(31.0f / 255.0f));  // row 31, the last
    CHECK(out[k + 2] == Approx(7.0f / 255.0f));
  }
}

// The procedural synthetic data set: ten shape classes over noisy backgrounds,
// every pixel a pure function of (seed, image index, pixel).
#include <algorithm>
#include <cmath>

#include "common/parallel.h"
#include "common/philox.h"
#include "npid/data.h"
#include "npid/error.h"

namespace npid {
namespace {

// Is (u, v) -- coordinates relative to the shape's centre in units of its
// radius -- inside shape `cls`?
bool inside(int cls, float u, float v) {
  const float au = std::fabs(u), av = std::fabs(v);
  if (au > 1.0f || av > 1.0f) return false;
  switch (cls) {
    case 0: return u * u + v * v <= 1.0f;                                  // disc
    case 1: return au <= 0.8f && av <= 0.8f;                               // square
    case 2: return v >= -0.8f && v <= 0.8f && au <= 0.5f * (v + 0.8f) / 0.8f * 0.9f;  // triangle
    case 3: { const float r = std::sqrt(u * u + v * v); return r >= 0.55f && r <= 1.0f; }  // ring
    case 4: return au <= 0.3f || av <= 0.3f;                                // plus
    case 5: return static_cast<int>(std::floor((v + 1.0f) * 2.5f)) % 2 == 0;  // horizontal bars
    case 6: return static_cast<int>(std::floor((u + 1.0f) * 2.5f)) % 2 == 0;  // vertical bars
    case 7: return au + av <= 1.0f;                                         // diamond
    case 8: return (static_cast<int>(std::floor((u + 1.0f) * 2.0f)) +
                    static_cast<int>(std::floor((v + 1.0f) * 2.0f))) % 2 == 0;  // checkerboard
    default: return std::fabs(au - av) <= 0.3f;                             // X
  }
}

float unit(std::uint32_t x) { return uniform_open01(x); }

}  // namespace

ImageSet make_synthetic(const SyntheticConfig& c) {
  constexpr const char* op = "make_synthetic";
  NPID_CHECK_ARG(c.count >= 1, op, "count", "expected >= 1, got " << c.count);
  NPID_CHECK_ARG(c.image_size >= 8 && c.image_size <= 4096, op, "image_size",
                 "expected 8..4096, got " << c.image_size);
  NPID_CHECK_ARG(c.num_classes >= 1 && c.num_classes <= 10, op, "num_classes",
                 "expected 1..10, got " << c.num_classes);
  // count x S x S x 3 bytes must be countable (S <= 4096: 2^26 bytes per image).
  NPID_CHECK_ARG(c.count <= (std::int64_t(1) << 36) / (c.image_size * c.image_size), op, "count",
                 "expected at most " << (std::int64_t(1) << 36) / (c.image_size * c.image_size) << " images of "
                                     << c.image_size << "x" << c.image_size << " (192 GiB), got " << c.count);
  const std::int64_t S = c.image_size, n = c.count;
  const auto k0 = static_cast<std::uint32_t>(c.seed), k1 = static_cast<std::uint32_t>(c.seed >> 32);
  std::vector<std::uint8_t> all(static_cast<std::size_t>(n * S * S * 3));
  parallel_for(n, resolve_threads(c.threads), [&](std::int64_t i) {
    const auto lo = static_cast<std::uint32_t>(i), hi = static_cast<std::uint32_t>(i >> 32);
    const Philox4 a = philox4x32_10({{lo, hi, 0u, 0u}}, k0, k1);
    const Philox4 b = philox4x32_10({{lo, hi, 0u, 1u}}, k0, k1);
    const int cls = static_cast<int>(i % c.num_classes);
    // Background and shape colours at least 0.35 apart in mean brightness.
    float bg[3], fg[3];
    const Philox4 colours = philox4x32_10({{lo, hi, 0u, 2u}}, k0, k1);
    const bool dark_bg = (colours.v[3] & 1u) != 0;
    for (int ch = 0; ch < 3; ++ch) {
      const float r1 = unit(colours.v[ch]), r2 = unit(b.v[ch]);
      bg[ch] = dark_bg ? 0.35f * r1 : 0.65f + 0.35f * r1;
      fg[ch] = dark_bg ? 0.55f + 0.45f * r2 : 0.45f * r2;
    }
    const float radius = S * (0.22f + 0.2f * unit(a.v[0]));
    const float cx = radius + (S - 2 * radius) * unit(a.v[1]);
    const float cy = radius + (S - 2 * radius) * unit(a.v[2]);
    // Mild per-pixel noise: a strong i.i.d. texture would be the easiest
    // instance cue (and carries no class information).
    const float noise = 0.01f + 0.02f * unit(a.v[3]);
    std::uint8_t* out = all.data() + i * S * S * 3;
    for (std::int64_t y = 0; y < S; ++y) {
      for (std::int64_t x = 0; x < S; ++x) {
        const float u = (x + 0.5f - cx) / radius, v = (y + 0.5f - cy) / radius;
        const float* base = inside(cls, u, v) ? fg : bg;
        const Philox4 r = philox4x32_10(
            {{lo, hi, static_cast<std::uint32_t>(y * S + x), 3u}}, k0, k1);
        for (int ch = 0; ch < 3; ++ch) {
          const float value = base[ch] + noise * (2.0f * unit(r.v[ch]) - 1.0f);
          out[(y * S + x) * 3 + ch] =
              static_cast<std::uint8_t>(std::lround(255.0f * std::clamp(value, 0.0f, 1.0f)));
        }
      }
    }
  });
  static const char* kNames[10] = {"disc", "square", "triangle", "ring",  "plus",
                                   "hbars", "vbars",  "diamond",  "checker", "x"};
  ImageSetBuilder builder;
  for (std::int64_t i = 0; i < n; ++i) {
    builder.add(all.data() + i * S * S * 3, S, S, i % c.num_classes);
  }
  return builder.finish(std::vector<std::string>(kNames, kNames + c.num_classes));
}

}  // namespace npid

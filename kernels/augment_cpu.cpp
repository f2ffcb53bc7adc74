// augment_cpu.cpp -- CPU reference of the fused augmentation op and of the
// epoch permutation. Same arithmetic as augment.cu (common/augment_math.h);
// the contrast mean is summed in double here, in a float block reduction there.
#include <algorithm>
#include <numeric>
#include <utility>
#include <vector>

#include "augment.h"
#include "common/augment_math.h"
#include "common/parallel.h"

namespace npid {

void augment_cpu(const AugmentProblem& p, int threads) {
  const AugmentConfig& c = p.config;
  const int oh = static_cast<int>(c.out_height), ow = static_cast<int>(c.out_width);
  parallel_for(p.batch, threads, [&](std::int64_t b) {
    const std::int64_t src = p.sources[b];
    const std::uint8_t* img = p.pixels + p.descs[3 * src];
    const int H = static_cast<int>(p.descs[3 * src + 1]), W = static_cast<int>(p.descs[3 * src + 2]);
    const AugmentParams prm = p.params ? p.params[b]
                                       : aug::draw_params(c, p.seed, p.epoch, p.instances[b], H, W);
    float mean = 0.0f;
    if (aug::needs_contrast_mean(prm)) {
      double sum = 0.0;
      for (int y = 0; y < oh; ++y) {
        for (int x = 0; x < ow; ++x) sum += aug::pre_contrast_gray(img, H, W, prm, c, x, y);
      }
      mean = static_cast<float>(sum / (static_cast<double>(oh) * ow));
    }
    float* out = p.out + b * oh * ow * 3;
    for (int y = 0; y < oh; ++y) {
      for (int x = 0; x < ow; ++x) aug::output_pixel(img, H, W, prm, c, mean, x, y, out + (y * ow + x) * 3);
    }
  });
}

std::uint64_t permutation_key(std::uint64_t seed, std::uint64_t epoch, std::int64_t i) {
  const Philox4 r = aug::draw(seed, epoch, i, 0x5045524Du);  // "PERM"
  return (static_cast<std::uint64_t>(r.v[0]) << 32) | r.v[1];
}

void epoch_permutation_cpu(std::uint64_t seed, std::uint64_t epoch, std::int64_t n,
                           std::int64_t* out) {
  std::vector<std::pair<std::uint64_t, std::int64_t>> keyed(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) keyed[i] = {permutation_key(seed, epoch, i), i};
  std::sort(keyed.begin(), keyed.end());  // ties by index, as the stable radix sort
  for (std::int64_t i = 0; i < n; ++i) out[i] = keyed[i].second;
}

}  // namespace npid

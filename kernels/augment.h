// kernels/augment.h -- the fused augmentation op and the epoch permutation
// (internal). Contract in npid/augment.h; arithmetic in common/augment_math.h.
#pragma once

#include <cstdint>

#include "npid/augment.h"
#include "npid/context.h"

namespace npid {

struct AugmentProblem {
  AugmentConfig config;
  const std::uint8_t* pixels = nullptr;
  const std::int64_t* descs = nullptr;      // (N, 3) offset, height, width
  const std::int64_t* sources = nullptr;    // (B)
  const std::int64_t* instances = nullptr;  // (B) keys of the random draw
  const AugmentParams* params = nullptr;    // (B) explicit parameters, or null: draw
  std::int64_t batch = 0;
  std::uint64_t seed = 0, epoch = 0;
  float* out = nullptr;                     // (B, out_h, out_w, 3)
};

void launch_augment(Context& ctx, const AugmentProblem& p);
void augment_cpu(const AugmentProblem& p, int threads);

// Sort key of element i of the (seed, epoch) permutation.
std::uint64_t permutation_key(std::uint64_t seed, std::uint64_t epoch, std::int64_t i);
void launch_epoch_permutation(Context& ctx, std::uint64_t seed, std::uint64_t epoch,
                              std::int64_t n, std::int64_t* out);
void epoch_permutation_cpu(std::uint64_t seed, std::uint64_t epoch, std::int64_t n,
                           std::int64_t* out);

}  // namespace npid

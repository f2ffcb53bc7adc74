// common/limits.h -- sizes the kernels are instantiated for.
#pragma once

#include <cstdint>

namespace npid {
// Largest embedding dimension D of the CUDA kernels (register / shared-memory
// tiles are sized for it); checked entry points reject larger D.
constexpr std::int64_t kMaxDim = 512;
}  // namespace npid

// augment.cu -- the fused augmentation kernel (one block per output image:
// draw the parameters, reduce the contrast mean when the image needs it,
// write the normalized NHWC pixels) and the epoch permutation (Philox keys +
// CUB radix sort). Arithmetic shared with augment_cpu.cpp via
// common/augment_math.h.
#include <cuda_runtime.h>

#include <cub/device/device_radix_sort.cuh>

#include "augment.h"
#include "common/augment_math.h"
#include "common/cuda_utils.cuh"
#include "core/check.h"
#include "core/context_impl.h"

namespace npid {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) augment_kernel(const AugmentProblem p) {
  __shared__ AugmentParams s_params;
  __shared__ float s_partial[kThreads / 32];
  __shared__ float s_mean;
  const AugmentConfig& c = p.config;
  const std::int64_t b = blockIdx.x;
  const std::int64_t src = p.sources[b];
  const std::uint8_t* img = p.pixels + p.descs[3 * src];
  const int H = static_cast<int>(p.descs[3 * src + 1]), W = static_cast<int>(p.descs[3 * src + 2]);
  if (threadIdx.x == 0) {
    s_params = p.params ? p.params[b] : aug::draw_params(c, p.seed, p.epoch, p.instances[b], H, W);
  }
  __syncthreads();
  const AugmentParams prm = s_params;
  const int oh = static_cast<int>(c.out_height), ow = static_cast<int>(c.out_width);
  const int pixels = oh * ow;
  float mean = 0.0f;
  if (aug::needs_contrast_mean(prm)) {  // uniform across the block
    float sum = 0.0f;
    for (int i = threadIdx.x; i < pixels; i += kThreads) {
      sum += aug::pre_contrast_gray(img, H, W, prm, c, i % ow, i / ow);
    }
    sum = cuda::warp_allreduce_sum(sum);
    if ((threadIdx.x & 31) == 0) s_partial[threadIdx.x >> 5] = sum;
    __syncthreads();
    if (threadIdx.x == 0) {
      float total = 0.0f;
      for (int w = 0; w < kThreads / 32; ++w) total += s_partial[w];
      s_mean = total / static_cast<float>(pixels);
    }
    __syncthreads();
    mean = s_mean;
  }
  float* out = p.out + b * static_cast<std::int64_t>(pixels) * 3;
  for (int i = threadIdx.x; i < pixels; i += kThreads) {
    float v[3];
    aug::output_pixel(img, H, W, prm, c, mean, i % ow, i / ow, v);
    out[3 * i] = v[0];
    out[3 * i + 1] = v[1];
    out[3 * i + 2] = v[2];
  }
}

__global__ void permutation_keys_kernel(std::uint64_t seed, std::uint64_t epoch, std::int64_t n,
                                        std::uint64_t* keys, std::int64_t* values) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const Philox4 r = aug::draw(seed, epoch, i, 0x5045524Du);  // as permutation_key()
    keys[i] = (static_cast<std::uint64_t>(r.v[0]) << 32) | r.v[1];
    values[i] = i;
  }
}

}  // namespace

void launch_augment(Context& ctx, const AugmentProblem& p) {
  if (p.batch == 0) return;
  DeviceGuard guard(ctx.device());
  augment_kernel<<<static_cast<unsigned>(p.batch), kThreads, 0, ctx.stream()>>>(p);
  NPID_CHECK_LAUNCH(ctx, "augment_kernel");
}

void launch_epoch_permutation(Context& ctx, std::uint64_t seed, std::uint64_t epoch,
                              std::int64_t n, std::int64_t* out) {
  if (n == 0) return;
  NPID_CHECK_ARG(n <= (std::int64_t(1) << 31) - 1, "epoch_permutation", "out",
                 "expected at most 2^31 - 1 elements on CUDA, got " << n);
  DeviceGuard guard(ctx.device());
  const int count = static_cast<int>(n);
  std::size_t temp_bytes = 0;
  NPID_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes,
                                                  static_cast<const std::uint64_t*>(nullptr),
                                                  static_cast<std::uint64_t*>(nullptr),
                                                  static_cast<const std::int64_t*>(nullptr),
                                                  static_cast<std::int64_t*>(nullptr), count));
  const std::size_t elems = cuda::align256(static_cast<std::size_t>(n) * 8);
  Workspace& ws = ctx.workspace();
  ws.reserve(3 * elems + cuda::align256(temp_bytes), ctx.stream());
  char* base = static_cast<char*>(ws.data());
  auto* keys_in = reinterpret_cast<std::uint64_t*>(base);
  auto* keys_out = reinterpret_cast<std::uint64_t*>(base + elems);
  auto* values_in = reinterpret_cast<std::int64_t*>(base + 2 * elems);
  void* temp = base + 3 * elems;
  const unsigned blocks = std::min(cuda::ceil_div(n, 256),
                                   static_cast<unsigned>(ctx.device_info().multiprocessors) * 8u);
  permutation_keys_kernel<<<blocks, 256, 0, ctx.stream()>>>(seed, epoch, n, keys_in, values_in);
  NPID_CHECK_LAUNCH(ctx, "permutation_keys_kernel");
  NPID_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, keys_out, values_in,
                                                  out, count, 0, 64, ctx.stream()));
  NPID_CHECK_LAUNCH(ctx, "cub::DeviceRadixSort::SortPairs");
}

}  // namespace npid

// NCE index sampling on CUDA: bit-identical to the CPU reference.
#include "common/test_util.h"

using namespace npid;
using test::to_device;
using test::to_host;

TEST_CASE("sampler: CUDA draws exactly the CPU reference's indices", "[gpu][sampler]") {
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  for (bool exclude : {false, true}) {
    for (std::int64_t N : {2LL, 50000LL, 1281167LL}) {
      const std::int64_t B = 7, K = 4096;
      std::vector<std::int64_t> y = test::random_indices(B, N, 1);
      Tensor idx({B, K + 1}, DType::kInt64, gpu.device());
      sample_nce_indices(gpu, to_device(gpu, y, {B}), N, K, 99, 1u << 20, exclude, idx);
      std::vector<std::int64_t> c(B * (K + 1));
      sample_nce_indices(cpu, view(y.data(), {B}), N, K, 99, 1u << 20, exclude, view(c.data(), {B, K + 1}));
      INFO("N=" << N << " exclude=" << exclude);
      CHECK(to_host<std::int64_t>(gpu, idx) == c);
    }
  }
}

// Core: errors and check macros, tensors and views, contexts and device
// discovery, workspace, parallel_for.
#include <atomic>
#include <cstdlib>
#include <limits>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>
#include <curand.h>

#include "common/parallel.h"
#include "common/test_util.h"
#include "core/check.h"

using namespace npid;

TEST_CASE("NPID_CHECK_ARG names the op, the argument, expected and got", "[core][errors]") {
  try {
    const int k = 0;
    NPID_CHECK_ARG(k > 0, "my_op", "num_negatives", "expected > 0, got " << k);
    FAIL("no throw");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::kInvalidArgument);
    CHECK(std::string(e.what()) == "my_op: argument 'num_negatives': expected > 0, got 0");
    CHECK(e.where().find("test_core.cpp:") != std::string::npos);
  }
}

TEST_CASE("library status checks carry the call, file:line and the library's string",
          "[core][errors]") {
  test::require_error([] { NPID_CUDA_CHECK(cudaErrorInvalidValue); }, ErrorKind::kCuda,
                      {"cudaErrorInvalidValue", "test_core.cpp:", "invalid argument"});
  test::require_error([] { NPID_CUBLAS_CHECK(CUBLAS_STATUS_NOT_INITIALIZED); }, ErrorKind::kCublas,
                      {"CUBLAS_STATUS_NOT_INITIALIZED", "cuBLAS call"});
  test::require_error([] { NPID_CUDNN_CHECK(CUDNN_STATUS_BAD_PARAM); }, ErrorKind::kCudnn,
                      {"CUDNN_STATUS_BAD_PARAM"});
  test::require_error([] { NPID_CURAND_CHECK(CURAND_STATUS_LAUNCH_FAILURE); }, ErrorKind::kCurand,
                      {"CURAND_STATUS_LAUNCH_FAILURE"});
  NPID_CUDA_CHECK(cudaSuccess);  // success is silent
}

TEST_CASE("shapes, views and owning tensors", "[core]") {
  const Shape s{2, 3, 4};
  CHECK(s.rank() == 3);
  CHECK(s.numel() == 24);
  CHECK(s.str() == "(2, 3, 4)");
  CHECK(Shape{2, 3} != Shape{3, 2});
  test::require_error([] { Shape bad{1, -2}; }, ErrorKind::kInvalidArgument, {"non-negative"});

  Tensor t({3, 5}, DType::kFloat32, Device::cpu());
  CHECK(t.bytes() == 60);
  CHECK(reinterpret_cast<std::uintptr_t>(t.data()) % 64 == 0);
  CHECK(t.view().str() == "float32(3, 5) on cpu");
  Context ctx = Context::cpu();
  std::vector<float> src(15);
  for (int k = 0; k < 15; ++k) src[k] = float(k);
  copy(ctx, t, view(src.data(), {15}));  // same count, other shape
  CHECK(t.data_as<float>()[14] == 14.f);
  Tensor moved = std::move(t);
  CHECK(t.data() == nullptr);
  CHECK(moved.data_as<float>()[3] == 3.f);
  fill_zero(ctx, moved);
  CHECK(moved.data_as<float>()[14] == 0.f);
  test::require_error([&] { copy(ctx, moved, view(src.data(), {14})); }, ErrorKind::kInvalidArgument,
                      {"'src'", "15 elements"});
}

TEST_CASE("device discovery reports instead of failing", "[core][device]") {
  const int count = cuda_device_count();
  const std::string status = cuda_status();
  INFO(status);
  if (count == 0) {
    CHECK(status.rfind("no CUDA device", 0) == 0);
    CHECK_FALSE(cuda_available());
    test::require_error([] { Context::cuda(0); }, ErrorKind::kNoDevice, {"no CUDA device"});
    test::require_error([] { cuda_device_info(0); }, ErrorKind::kNoDevice, {"'index'"});
    CHECK(cuda_devices().empty());
  } else {
    CHECK(status.find("CUDA device") != std::string::npos);
    CHECK(cuda_device_info(0).multiprocessors > 0);
    test::require_error([count] { Context::cuda(count); }, ErrorKind::kNoDevice, {"'device'"});
  }
}

TEST_CASE("contexts: CPU threads, sync option, workspace", "[core]") {
  Context ctx = Context::cpu({false, 3, 1000});
  CHECK_FALSE(ctx.is_cuda());
  CHECK(ctx.cpu_threads() == 3);
  CHECK(ctx.stream() == nullptr);
  CHECK(ctx.workspace().capacity() >= 1000);
  void* p = ctx.workspace().data();
  ctx.workspace().reserve(10, nullptr);  // never shrinks or moves when big enough
  CHECK(ctx.workspace().data() == p);
  ctx.workspace().reserve(5 << 20, nullptr);
  CHECK(ctx.workspace().capacity() >= (5u << 20));
  CHECK_FALSE(Context::cpu().sync_after_launch());
  CHECK(Context::cpu({true, 0, 0}).sync_after_launch());
  ::setenv("NPID_SYNC_AFTER_LAUNCH", "1", 1);
  CHECK(Context::cpu().sync_after_launch());
  ::unsetenv("NPID_SYNC_AFTER_LAUNCH");
  test::require_error([&] { ctx.device_info(); }, ErrorKind::kInvalidArgument, {"CPU context"});
  CHECK(std::string(version()) == NPID_VERSION_STRING);
}

TEST_CASE("parallel_for visits every index once and propagates exceptions", "[core]") {
  std::vector<std::atomic<int>> hits(1000);
  parallel_for(1000, 7, [&](std::int64_t i) { hits[i]++; });
  for (auto& h : hits) REQUIRE(h.load() == 1);
  CHECK_THROWS_AS(parallel_for(100, 4, [](std::int64_t i) {
                    if (i == 57) throw std::runtime_error("boom");
                  }),
                  std::runtime_error);
}

TEST_CASE("the tests' error measures fail on NaN and infinity instead of skipping them", "[core][testing]") {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const std::vector<float> ref = {1.0f, 2.0f, 3.0f};
  CHECK(test::max_abs_diff(ref, ref) == 0.0);
  CHECK(test::max_abs_diff({1.0f, 2.5f, 3.0f}, ref) == 0.5);
  // A NaN anywhere, on either side, makes every `< tol` comparison fail.
  for (std::size_t at = 0; at < ref.size(); ++at) {
    std::vector<float> bad = ref;
    bad[at] = nan;
    CHECK_FALSE(test::max_abs_diff(bad, ref) < 1e30);
    CHECK_FALSE(test::max_abs_diff(ref, bad) < 1e30);
    CHECK_FALSE(test::relative_error(bad, ref) < 1e30);
  }
  CHECK_FALSE(test::max_abs_diff({inf, 2.0f, 3.0f}, {inf, 2.0f, 3.0f}) < 1e30);  // inf - inf
  CHECK_FALSE(test::max_abs_diff({inf, 2.0f, 3.0f}, ref) < 1e30);
}

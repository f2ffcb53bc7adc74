// Deviceless cuDNN planning (cuDNN >= 9.8): for each GPU profile in
// cpu/cudnn_profiles, every ResNet-18 convolution -- both stems, the batch
// sizes the GPU tests, benchmarks and presets use, forward / data gradient /
// weight gradient, TF32 and exact fp32 -- gets an execution plan through the
// same descriptors, heuristics and engine selection the CUDA backend runs,
// with no GPU. Engines must be deterministic and need no runtime compilation,
// within the workspace cap. Plans made this way refuse to run.
#include <algorithm>
#include <filesystem>
#include <limits>
#include <fstream>
#include <set>
#include <sstream>
#include <tuple>

#include <catch2/catch.hpp>

#include "cudnn_conv.h"
#include "npid/error.h"
#include "resnet_net.h"

using namespace npid;
using cudnn::ConvDirection;
using cudnn::ConvMath;

namespace {

// The source tree's profiles: where the build saw them, else relative to the
// working directory (a carried test binary run from another checkout's root).
std::vector<std::filesystem::path> profiles() {
  std::filesystem::path dir = NPID_CUDNN_PROFILE_DIR;
  if (!std::filesystem::is_directory(dir)) dir = "tests/cpu/cudnn_profiles";
  INFO("cuDNN profiles folder " << dir.string());
  REQUIRE(std::filesystem::is_directory(dir));
  std::vector<std::filesystem::path> out;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().extension() == ".json") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

std::string read(const std::filesystem::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

struct NetCase {
  ResNetStem stem;
  std::int64_t image;
  std::vector<std::int64_t> batches;
};

}  // namespace

TEST_CASE("cuDNN plans every ResNet-18 convolution for each recorded GPU, deviceless", "[resnet][cudnn]") {
  const auto files = profiles();
  REQUIRE(files.size() >= 2);
  // The GPU tests' batches (1, 7, 16 / 2), the benchmarks' and the presets'.
  const NetCase cases[] = {{ResNetStem::kCifar, 32, {1, 7, 16, 128, 256}}, {ResNetStem::kImageNet, 224, {2, 64, 256}}};
  constexpr std::size_t kWorkspaceCap = std::size_t(512) << 20;
  for (const auto& file : files) {
    for (const ConvMath math : {ConvMath::kTF32, ConvMath::kFP32}) {
      INFO(file.filename().string() << (math == ConvMath::kTF32 ? " tf32" : " exact fp32"));
      cudnn::ConvPlans plans(read(file));
      // The plan cache's key: direction and every shape field.
      std::set<std::tuple<int, std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t,
                          std::int64_t, int>>
          keys;
      for (const NetCase& c : cases) {
        ResNetConfig cfg;
        cfg.stem = c.stem;
        cfg.image_size = c.image;
        const resnet::NetSpec spec = resnet::NetSpec::build(cfg);
        for (const std::int64_t n : c.batches) {
          for (const resnet::Conv* conv : spec.convs()) {
            const layers::ConvShape s = conv->shape(n);
            for (const ConvDirection dir :
                 {ConvDirection::kForward, ConvDirection::kBackwardFilter, ConvDirection::kBackwardData}) {
              if (dir == ConvDirection::kBackwardData && conv == &spec.stem) continue;
              INFO(conv->name << " batch " << n << " direction " << static_cast<int>(dir));
              std::size_t ws = 0;
              REQUIRE_NOTHROW(ws = plans.prepare(dir, s, math));
              CHECK(ws <= kWorkspaceCap);
              keys.emplace(static_cast<int>(dir), s.n, s.h * 1000 + s.w, s.c, s.out_c, s.k, s.stride, s.pad, 0);
            }
          }
          // The data gradients that add into the block input's gradient
          // (NetSpec::data_grad_accumulates: identity blocks' conv1,
          // downsampling convs).
          for (const resnet::Conv* conv : spec.convs()) {
            if (!spec.data_grad_accumulates(conv)) continue;
            const layers::ConvShape s = conv->shape(n);
            INFO(conv->name << " batch " << n << " data gradient, accumulating");
            std::size_t ws = 0;
            REQUIRE_NOTHROW(ws = plans.prepare(ConvDirection::kBackwardData, s, math, cudnn::ConvOutput::kAccumulate));
            CHECK(ws <= kWorkspaceCap);
            keys.emplace(static_cast<int>(ConvDirection::kBackwardData), s.n, s.h * 1000 + s.w, s.c, s.out_c, s.k,
                         s.stride, s.pad, 1);
          }
        }
      }
      // The GPU convolution test's odd shapes (tests/gpu/test_resnet_gpu.cpp).
      using layers::ConvShape;
      for (const ConvShape& s : {ConvShape::of(2, 32, 32, 3, 16, 3, 1, 1), ConvShape::of(3, 33, 31, 3, 8, 7, 2, 3),
                                 ConvShape::of(4, 16, 16, 16, 32, 1, 2, 0), ConvShape::of(1, 9, 9, 24, 24, 3, 2, 1),
                                 ConvShape::of(7, 8, 8, 64, 64, 3, 1, 1)}) {
        for (const ConvDirection dir :
             {ConvDirection::kForward, ConvDirection::kBackwardFilter, ConvDirection::kBackwardData}) {
          REQUIRE_NOTHROW(plans.prepare(dir, s, math));
          keys.emplace(static_cast<int>(dir), s.n, s.h * 1000 + s.w, s.c, s.out_c, s.k, s.stride, s.pad, 0);
        }
      }
      const cudnn::ConvPlans::Summary summary = plans.summary();
      CHECK(summary.plans == static_cast<int>(keys.size()));
      CHECK(summary.nondeterministic == 0);
      CHECK(summary.runtime_compiled == 0);
      CHECK(summary.max_workspace <= kWorkspaceCap);
    }
  }
}

TEST_CASE("deviceless cuDNN plans: profile errors and plans that cannot run", "[resnet][cudnn]") {
  const auto files = profiles();
  REQUIRE_FALSE(files.empty());
  const std::string json = read(files.front());

  // A recorded profile reads back with the fields cuDNN's heuristics use.
  const std::string normalized = cudnn::normalized_properties_json(json);
  CHECK(normalized.find("multiProcessorCount") != std::string::npos);
  CHECK(normalized.find("deviceVer") != std::string::npos);
  CHECK(cudnn::normalized_properties_json(normalized) == normalized);

  for (const std::string& bad : {std::string(), std::string("{"), std::string("{\"warpSize\": 32}"),
                                 json.substr(0, json.size() / 2)}) {
    INFO("profile of " << bad.size() << " bytes");
    try {
      cudnn::ConvPlans plans(bad);
      FAIL("a broken profile was accepted");
    } catch (const Error& e) {
      CHECK(e.kind() == ErrorKind::kInvalidArgument);
      CHECK(std::string(e.what()).find("device_properties_json") != std::string::npos);
    }
  }

  cudnn::ConvPlans plans(json);
  const auto s = layers::ConvShape::of(2, 8, 8, 16, 32, 3, 1, 1);
  REQUIRE(plans.prepare(ConvDirection::kForward, s, ConvMath::kTF32) < (std::size_t(1) << 30));
  // A convolution cuDNN cannot describe (7x7 filter over a 2x2 image, no
  // padding) is refused with the convolution named and cuDNN's reason.
  try {
    plans.prepare(ConvDirection::kForward, layers::ConvShape::of(1, 2, 2, 3, 8, 7, 1, 0), ConvMath::kTF32);
    FAIL("an impossible convolution was planned");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::kCudnn);
    const std::string what = e.what();
    CHECK(what.find("convolution forward for x (1, 2, 2, 3), 7x7 stride 1 pad 0 -> 8 channels") != std::string::npos);
    CHECK(what.find("rejected") != std::string::npos);
  }

  float dummy[4] = {};
  try {
    plans.run(ConvDirection::kForward, s, ConvMath::kTF32, dummy, dummy, dummy, nullptr);
    FAIL("a deviceless plan ran");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::kUnsupported);
    CHECK(std::string(e.what()).find("deviceless") != std::string::npos);
  }
}

TEST_CASE("autotuning keeps the fastest candidate, the heuristic one on near ties", "[resnet][cudnn]") {
  using cudnn::pick_fastest;
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  CHECK(pick_fastest({}, 0.03) == 0);
  CHECK(pick_fastest({1.0}, 0.03) == 0);
  CHECK(pick_fastest({1.0, 0.5, 0.7}, 0.03) == 1);
  CHECK(pick_fastest({1.0, 0.7, 0.5}, 0.03) == 2);
  // Faster than the heuristic choice by less than the margin: kept heuristic.
  CHECK(pick_fastest({1.0, 0.98}, 0.03) == 0);
  CHECK(pick_fastest({1.0, 0.96}, 0.03) == 1);
  CHECK(pick_fastest({1.0, 0.98}, 0.0) == 1);
  // Equal times: the earlier candidate.
  CHECK(pick_fastest({1.0, 0.5, 0.5}, 0.03) == 1);
  // Candidates that failed to run (inf, NaN, negative) never win...
  CHECK(pick_fastest({1.0, inf, nan, -1.0}, 0.03) == 0);
  CHECK(pick_fastest({1.0, nan, 0.5}, 0.03) == 2);
  // ...but a time below the event timer's resolution (0) is a time.
  CHECK(pick_fastest({1.0, 0.0}, 0.03) == 1);
  // ...and when the heuristic one failed, any that ran beats it.
  CHECK(pick_fastest({inf, 0.9, 0.8}, 0.03) == 2);
  CHECK(pick_fastest({nan, inf}, 0.03) == 0);
}

TEST_CASE("deviceless autotuning enumerates candidates and keeps the heuristic choice", "[resnet][cudnn]") {
  // Without a device nothing can be timed: every plan is the heuristic one
  // (same workspace as a heuristic ConvPlans picks), but the candidates the
  // autotuner would time are enumerated through the same filters.
  const auto files = profiles();
  REQUIRE_FALSE(files.empty());
  for (const auto& file : files) {
    INFO(file.filename().string());
    const std::string json = read(file);
    cudnn::ConvPlans heuristic(json), autotune(json, cudnn::ConvTuning::kAutotune);
    ResNetConfig cfg;  // CIFAR stem, width 64
    const resnet::NetSpec spec = resnet::NetSpec::build(cfg);
    for (const resnet::Conv* conv : spec.convs()) {
      for (const ConvDirection dir : {ConvDirection::kForward, ConvDirection::kBackwardFilter, ConvDirection::kBackwardData}) {
        INFO(conv->name << " direction " << static_cast<int>(dir));
        const layers::ConvShape s = conv->shape(256);
        CHECK(autotune.prepare(dir, s, ConvMath::kTF32) == heuristic.prepare(dir, s, ConvMath::kTF32));
      }
    }
    const auto a = autotune.summary(), h = heuristic.summary();
    CHECK(a.plans == h.plans);
    CHECK(h.candidates == h.plans);
    // Several candidates on average (a ResNet convolution has many engines),
    // at most kAutotuneCandidates each.
    CHECK(a.candidates > 2 * a.plans);
    CHECK(a.candidates <= a.plans * static_cast<int>(cudnn::kAutotuneCandidates));
    CHECK(a.timed == 0);
    CHECK(a.tuned_away == 0);
    CHECK(a.nondeterministic == 0);
    CHECK(a.runtime_compiled == 0);
  }
}

TEST_CASE("deviceless plans with nondeterministic engines allowed", "[resnet][cudnn]") {
  // ConvDeterminism::kAny lets every engine compete; exact fp32 still never
  // gets TF32, FFT or Winograd, and every convolution still gets a plan.
  const auto files = profiles();
  REQUIRE_FALSE(files.empty());
  for (const auto& file : files) {
    const std::string json = read(file);
    for (const ConvMath math : {ConvMath::kTF32, ConvMath::kFP32}) {
      INFO(file.filename().string() << (math == ConvMath::kTF32 ? " tf32" : " exact fp32"));
      cudnn::ConvPlans any(json, cudnn::ConvTuning::kAutotune, cudnn::ConvDeterminism::kAny);
      cudnn::ConvPlans det(json, cudnn::ConvTuning::kAutotune);
      ResNetConfig cfg;
      const resnet::NetSpec spec = resnet::NetSpec::build(cfg);
      for (const resnet::Conv* conv : spec.convs()) {
        for (const ConvDirection dir : {ConvDirection::kForward, ConvDirection::kBackwardFilter, ConvDirection::kBackwardData}) {
          INFO(conv->name << " direction " << static_cast<int>(dir));
          REQUIRE_NOTHROW(any.prepare(dir, conv->shape(256), math));
          det.prepare(dir, conv->shape(256), math);
        }
      }
      const auto sum = any.summary();
      CHECK(sum.plans == det.summary().plans);
      CHECK(sum.runtime_compiled == 0);
      CHECK(sum.max_workspace <= (std::size_t(512) << 20));
      CHECK(sum.candidates >= sum.plans);
      CHECK(det.summary().nondeterministic == 0);
      WARN(sum.nondeterministic << " of " << sum.plans << " heuristic choices are nondeterministic engines ("
                                << file.filename().string() << ")");
    }
  }
}

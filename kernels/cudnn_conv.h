// kernels/cudnn_conv.h -- convolutions through cuDNN's graph (backend) API
// (library-internal; the legacy cudnnConvolution* entry points are deprecated
// in cuDNN 9 and not used).
//
// One operation graph per (direction, shape, math): forward (y = conv(x, w)),
// data gradient (dx = conv^T(dy, w)) and weight gradient (dw from x, dy).
// Tensors are NHWC activations and channels-last (O, KH, KW, I) filters,
// described to cuDNN by their logical (N, C, H, W) / (O, I, KH, KW) dimensions
// and the matching strides; every pointer must be 16-byte aligned. Plans are
// built on first use -- heuristics mode A, then the fallback list, taking the
// first engine configuration that finalizes and whose numerical notes suit the
// math (no TF32, FFT or Winograd for kFP32; deterministic engines first) -- and cached per
// shape in the ConvPlans object, so steady-state calls only execute. Engine
// selection relaxes in passes (see cudnn_conv.cpp): deterministic, no runtime
// compilation and at most 512 MiB of workspace first; determinism is given up
// only when no deterministic engine works within 2 GiB of workspace. Every descriptor is
// RAII and lives as long as its plan.
//
// Autotuning (ConvTuning::kAutotune, what PyTorch calls cudnn.benchmark): the
// same first pass that yields a plan yields up to kAutotuneCandidates of them
// (heuristics mode A's order); prepare() times each on scratch buffers of the
// convolution's shape (one warm-up, then the fastest of kAutotuneRuns) and
// keeps the fastest, unless it beats the heuristic choice by less than
// kAutotuneMargin -- a near tie keeps the heuristic engine, so noise rarely
// changes the pick. The candidates pass the same filters as the heuristic
// choice (deterministic unless ConvDeterminism::kAny, no runtime
// compilation, within the workspace cap), so tuning never trades away
// determinism within a run; but two processes can time their way to
// different engines, whose results differ in rounding.
//
// Deviceless planning (cuDNN >= 9.8): ConvPlans built from cuDNN's serialized
// device properties run the same descriptor, heuristics and engine-selection
// code for that GPU without one being present; their plans cannot execute.
// CPU tests use it with device profiles recorded on GPU machines.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "npid/context.h"
#include "resnet_layers.h"

namespace npid {
namespace cudnn {

enum class ConvDirection { kForward, kBackwardData, kBackwardFilter };
enum class ConvMath { kTF32, kFP32 };
enum class ConvTuning { kHeuristic, kAutotune };
// kDeterministic: deterministic engines first (the library's default; a
// nondeterministic one only when no deterministic engine works within 2 GiB
// of workspace). kAny: nondeterministic engines (atomics: results vary in
// rounding from run to run) compete on equal terms, as in PyTorch without
// torch.backends.cudnn.deterministic.
enum class ConvDeterminism { kDeterministic, kAny };
// What a plan does with its output: overwrite it (beta = 0) or add the
// convolution to it (beta = 1: a gradient summed in place, no separate add).
enum class ConvOutput { kOverwrite, kAccumulate };

constexpr std::size_t kAutotuneCandidates = 8;
constexpr int kAutotuneRuns = 5;
constexpr double kAutotuneMargin = 0.03;

// The candidate an autotuner keeps: index 0 (the heuristic choice) unless the
// fastest one is faster than it by more than `margin` (a fraction); entries
// that are negative, infinite or NaN (a candidate that failed to run: +inf)
// never win; ties go to the earlier candidate. Empty or all failed: 0.
std::size_t pick_fastest(const std::vector<double>& ms, double margin);

class ConvPlan;          // an execution plan with its workspace size
class DeviceProperties;  // the GPU a deviceless ConvPlans plans for

class ConvPlans {
 public:
  explicit ConvPlans(Context& ctx, ConvTuning tuning = ConvTuning::kHeuristic,
                     ConvDeterminism determinism = ConvDeterminism::kDeterministic);
  // Deviceless: plans for the GPU described by `device_properties_json`
  // (device_properties_json() on that GPU). Throws npid::Error (kInvalidArgument)
  // when cuDNN rejects the description, kUnsupported before cuDNN 9.8.
  // kAutotune enumerates the candidates (counted in summary()) but, with no
  // device to time them on, keeps the heuristic choice.
  explicit ConvPlans(const std::string& device_properties_json, ConvTuning tuning = ConvTuning::kHeuristic,
                     ConvDeterminism determinism = ConvDeterminism::kDeterministic);
  ~ConvPlans();
  ConvPlans(const ConvPlans&) = delete;
  ConvPlans& operator=(const ConvPlans&) = delete;

  // Builds (or finds) the plan -- with kAutotune on a device, timing its
  // candidates on ctx.stream() (synchronizes it; scratch buffers of the
  // shape are allocated for the timing and freed after; not while the stream
  // is being captured, and any failure of the timing itself keeps the
  // heuristic choice) -- and returns its workspace bytes.
  std::size_t prepare(ConvDirection dir, const layers::ConvShape& s, ConvMath math,
                      ConvOutput output = ConvOutput::kOverwrite);
  // Runs on ctx.stream(). Pointers: forward (x, w -> y), backward data
  // (dy, w -> dx), backward filter (x, dy -> dw); outputs are overwritten,
  // or added to with ConvOutput::kAccumulate (a plan of its own).
  // `workspace` must hold prepare()'s bytes.
  // Throws npid::Error when the plan was never prepared, or was made deviceless.
  void run(ConvDirection dir, const layers::ConvShape& s, ConvMath math, const float* a, const float* b, float* out,
           void* workspace, ConvOutput output = ConvOutput::kOverwrite);

  // What the cached plans chose (for tests and device reports).
  struct Summary {
    int plans = 0, nondeterministic = 0, runtime_compiled = 0;
    std::size_t max_workspace = 0;
    // Autotuning: candidates enumerated over all plans, plans whose
    // candidates were timed, plans that kept another engine than the
    // heuristic choice, and the time prepare() spent timing.
    int candidates = 0, timed = 0, tuned_away = 0;
    double tuning_seconds = 0;
  };
  Summary summary() const;

 private:
  using Key = std::tuple<int, std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t,
                         std::int64_t, std::int64_t, int, int>;
  static Key key_of(ConvDirection dir, const layers::ConvShape& s, ConvMath math, ConvOutput output);
  Context* ctx_;                             // null when deviceless
  ConvTuning tuning_;
  ConvDeterminism determinism_;
  int candidates_ = 0, timed_ = 0;
  double tuning_seconds_ = 0;
  std::unique_ptr<DeviceProperties> props_;  // set when deviceless
  std::map<Key, std::unique_ptr<ConvPlan>> plans_;
};

// The context's GPU as cuDNN serializes it (the deviceless constructor's input).
std::string device_properties_json(Context& ctx);
// `json` as cuDNN re-serializes it after reading it (throws like the
// deviceless constructor): a check that a stored profile is complete.
std::string normalized_properties_json(const std::string& json);

}  // namespace cudnn
}  // namespace npid

// cudnn_conv.cpp -- convolution plans on cuDNN's graph (backend) API.
//
// Graph per call kind: tensors X (N, C, H, W), W (O, I, KH, KW), Y (N, O, Ho, Wo)
// with NHWC / channels-last strides; one convolution operation; heuristics
// (mode A, then FALLBACK) list engine configurations, and the first one that
// finalizes into an execution plan is kept with its workspace size, its graph
// and its configuration. Engines are filtered by their numerical notes: never
// fp16 down-conversion; no tensor cores (TF32) for ConvMath::kFP32; and
// deterministic ones first, nondeterministic only when nothing else finalizes.
//
// Autotuning (ConvTuning::kAutotune) keeps up to kAutotuneCandidates plans
// from that same first successful pass (mode A's order) and times them on
// scratch buffers in prepare(); pick_fastest() keeps the heuristic choice on
// near ties. Heuristic planning is the same enumeration with one candidate.
//
// Deviceless planning (cuDNN >= 9.8): the graph, the heuristics and the plan
// finalization take a device-properties descriptor (deserialized from cuDNN's
// JSON) instead of a handle; everything else is the same code, so a machine
// without a GPU checks every descriptor and engine choice (tests/cpu).
#include "cudnn_conv.h"

#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <cstdio>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/context_impl.h"
#include "npid/error.h"
#include "npid/tensor.h"

namespace npid {
namespace cudnn {

namespace {

std::string last_cudnn_error() {
  char message[512] = {0};
  cudnnGetLastErrorString(message, sizeof(message));
  return message[0] != '\0' ? std::string(" (") + message + ")" : std::string();
}

// RAII owner of one backend descriptor.
class Desc {
 public:
  explicit Desc(cudnnBackendDescriptorType_t type) { NPID_CUDNN_CHECK(cudnnBackendCreateDescriptor(type, &d_)); }
  ~Desc() {
    if (d_ != nullptr) cudnnBackendDestroyDescriptor(d_);
  }
  Desc(const Desc&) = delete;
  Desc& operator=(const Desc&) = delete;
  Desc(Desc&& o) noexcept : d_(o.d_) { o.d_ = nullptr; }
  cudnnBackendDescriptor_t get() const { return d_; }

  template <typename T>
  Desc& set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, const T* values, std::int64_t count) {
    NPID_CUDNN_CHECK(cudnnBackendSetAttribute(d_, name, type, count, values));
    return *this;
  }
  Desc& set_i64(cudnnBackendAttributeName_t name, std::int64_t v) { return set(name, CUDNN_TYPE_INT64, &v, 1); }
  Desc& set_i64s(cudnnBackendAttributeName_t name, const std::vector<std::int64_t>& v) {
    return set(name, CUDNN_TYPE_INT64, v.data(), static_cast<std::int64_t>(v.size()));
  }
  Desc& set_desc(cudnnBackendAttributeName_t name, const Desc& other) {
    cudnnBackendDescriptor_t d = other.get();
    return set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, &d, 1);
  }
  // Throws npid::Error (kCudnn) naming `what` and cuDNN's reason.
  void finalize(const char* what) {
    const cudnnStatus_t st = cudnnBackendFinalize(d_);
    if (st != CUDNN_STATUS_SUCCESS)
      throw Error(ErrorKind::kCudnn, std::string("cuDNN rejected the ") + what + " descriptor: " +
                                         cudnnGetErrorString(st) + last_cudnn_error());
  }

 private:
  cudnnBackendDescriptor_t d_ = nullptr;
};

// NHWC strides of a tensor described as (N, C, H, W).
std::vector<std::int64_t> nhwc_strides(std::int64_t c, std::int64_t h, std::int64_t w) {
  return {h * w * c, 1, w * c, c};
}

// Every pointer handed to a plan is 16-byte aligned: activations and
// workspaces come from cudaMalloc, parameter views are padded to 4 floats
// (src/resnet_net.cpp), and ResNet18::forward checks the images.
constexpr std::int64_t kAlignment = 16;

Desc tensor(std::int64_t uid, std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w) {
  Desc t(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  const cudnnDataType_t dtype = CUDNN_DATA_FLOAT;
  t.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, &dtype, 1)
      .set_i64s(CUDNN_ATTR_TENSOR_DIMENSIONS, {n, c, h, w})
      .set_i64s(CUDNN_ATTR_TENSOR_STRIDES, nhwc_strides(c, h, w))
      .set_i64(CUDNN_ATTR_TENSOR_UNIQUE_ID, uid)
      .set_i64(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, kAlignment);
  t.finalize("tensor");
  return t;
}

constexpr std::int64_t kUidX = 'x', kUidW = 'w', kUidY = 'y';

// The notes of the engine behind `cfg`: numerical notes as a bit set (bit =
// note) and behaviour notes likewise; `ok` is false when they cannot be read
// (the configuration is then skipped, and the reason reported).
struct EngineNotes {
  unsigned numerical = 0, behavior = 0;
  bool ok = false;
};

EngineNotes engine_notes(const Desc& cfg) {
  EngineNotes out;
  Desc engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
  cudnnBackendDescriptor_t e = engine.get();
  std::int64_t count = 0;
  if (cudnnBackendGetAttribute(cfg.get(), CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &count, &e) !=
      CUDNN_STATUS_SUCCESS)
    return out;
  cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
  std::int64_t n = 0;
  if (cudnnBackendGetAttribute(e, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                               CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &n, notes) != CUDNN_STATUS_SUCCESS)
    return out;
  for (std::int64_t k = 0; k < n; ++k) out.numerical |= 1u << static_cast<unsigned>(notes[k]);
  cudnnBackendBehaviorNote_t behavior[CUDNN_BEHAVIOR_NOTE_TYPE_COUNT];
  n = 0;
  if (cudnnBackendGetAttribute(e, CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE, CUDNN_TYPE_BEHAVIOR_NOTE,
                               CUDNN_BEHAVIOR_NOTE_TYPE_COUNT, &n, behavior) != CUDNN_STATUS_SUCCESS)
    return out;
  for (std::int64_t k = 0; k < n; ++k) out.behavior |= 1u << static_cast<unsigned>(behavior[k]);
  out.ok = true;
  return out;
}

constexpr unsigned note(cudnnBackendNumericalNote_t n) { return 1u << static_cast<unsigned>(n); }
constexpr unsigned note(cudnnBackendBehaviorNote_t n) { return 1u << static_cast<unsigned>(n); }

// Engine selection runs in passes, each over heuristics mode A then the
// fallback list, taking the first configuration that passes the pass's
// filter and finalizes. Always rejected: fp16 down-conversion of fp32 inputs;
// for exact fp32 (kFP32, the tests' reference mode) also tensor cores (TF32),
// FFT and Winograd. The passes relax, in order: nothing; runtime compilation
// (NVRTC at plan time: seconds per plan); the workspace cap, to a larger one;
// and only then determinism, so the library's determinism promise holds
// whenever a deterministic engine works within 2 GiB of workspace (a
// nondeterministic plan is counted in ConvPlans::summary()); last, any
// workspace at all.
struct Pass {
  bool nondeterministic, runtime_compiled;
  std::int64_t workspace_cap;  // bytes one plan may ask for; < 0: any
};
constexpr std::int64_t kWorkspaceCap = std::int64_t(512) << 20;
constexpr std::int64_t kDeterministicWorkspaceCap = std::int64_t(2) << 30;
constexpr Pass kPasses[] = {{false, false, kWorkspaceCap}, {false, true, kWorkspaceCap},
                            {false, true, kDeterministicWorkspaceCap}, {true, false, kWorkspaceCap},
                            {true, true, kWorkspaceCap}, {true, true, -1}};

unsigned rejected_numerical(ConvMath math, bool allow_nondeterministic) {
  unsigned r = note(CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS);
  if (math == ConvMath::kFP32) {
    r |= note(CUDNN_NUMERICAL_NOTE_TENSOR_CORE) | note(CUDNN_NUMERICAL_NOTE_FFT) |
         note(CUDNN_NUMERICAL_NOTE_WINOGRAD) | note(CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_4x4) |
         note(CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_6x6) | note(CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_13x13);
  }
  if (!allow_nondeterministic) r |= note(CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC);
  return r;
}

const char* name_of(ConvDirection d) {
  switch (d) {
    case ConvDirection::kForward: return "forward";
    case ConvDirection::kBackwardData: return "backward data";
    case ConvDirection::kBackwardFilter: return "backward filter";
  }
  return "?";
}

// "convolution forward for x (n, h, w, c), 3x3 stride 1 pad 1 -> 64 channels (tf32[, accumulating])"
std::string describe(ConvDirection dir, const layers::ConvShape& s, ConvMath math, ConvOutput output) {
  return std::string("convolution ") + name_of(dir) + " for x (" + std::to_string(s.n) + ", " + std::to_string(s.h) +
         ", " + std::to_string(s.w) + ", " + std::to_string(s.c) + "), " + std::to_string(s.k) + "x" +
         std::to_string(s.k) + " stride " + std::to_string(s.stride) + " pad " + std::to_string(s.pad) + " -> " +
         std::to_string(s.out_c) + " channels (" + (math == ConvMath::kFP32 ? "exact fp32" : "tf32") +
         (output == ConvOutput::kAccumulate ? ", accumulating" : "") + ")";
}

// A serialized device-properties descriptor's JSON (CUDNN_TYPE_CHAR).
std::string serialize_properties(cudnnBackendDescriptor_t props) {
  std::int64_t size = 0;
  NPID_CUDNN_CHECK(cudnnBackendGetAttribute(props, CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION, CUDNN_TYPE_CHAR, 0,
                                            &size, nullptr));
  std::string json(static_cast<std::size_t>(std::max<std::int64_t>(size, 0)), '\0');
  std::int64_t got = 0;
  NPID_CUDNN_CHECK(cudnnBackendGetAttribute(props, CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION, CUDNN_TYPE_CHAR, size,
                                            &got, json.data()));
  json.resize(static_cast<std::size_t>(std::min(got, size)));
  while (!json.empty() && json.back() == '\0') json.pop_back();
  return json;
}

}  // namespace

// The device-properties descriptor exists from cuDNN 9.8 on: check the
// version before creating one, so that older cuDNNs get this message rather
// than a bad-parameter status from the create call.
cudnnBackendDescriptorType_t device_properties_type() {
  if (cudnnGetVersion() < 90800)
    throw Error(ErrorKind::kUnsupported, "cuDNN: device properties (deviceless planning, profiles) need cuDNN 9.8 "
                                         "or newer, found " + std::to_string(cudnnGetVersion()));
  return CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR;
}

// The GPU a deviceless ConvPlans plans for.
class DeviceProperties {
 public:
  explicit DeviceProperties(const std::string& json) : desc_(device_properties_type()) {
    if (json.empty())
      throw Error(ErrorKind::kInvalidArgument, "device_properties_json: expected cuDNN's serialized device "
                                               "properties (a JSON object), got an empty string");
    const cudnnStatus_t set = cudnnBackendSetAttribute(desc_.get(), CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION,
                                                       CUDNN_TYPE_CHAR, static_cast<std::int64_t>(json.size()),
                                                       json.data());
    const cudnnStatus_t fin = set == CUDNN_STATUS_SUCCESS ? cudnnBackendFinalize(desc_.get()) : set;
    if (fin != CUDNN_STATUS_SUCCESS)
      throw Error(ErrorKind::kInvalidArgument,
                  std::string("device_properties_json: expected cuDNN's serialized device properties, got ") +
                      std::to_string(json.size()) + " bytes that cuDNN rejects: " + cudnnGetErrorString(fin) +
                      last_cudnn_error());
  }
  cudnnBackendDescriptor_t get() const { return desc_.get(); }

 private:
  Desc desc_;
};

// Where plans are made: on a device through its handle, or for the device
// that `props` describes (deviceless; such plans cannot execute).
struct PlanTarget {
  cudnnHandle_t handle = nullptr;
  cudnnBackendDescriptor_t props = nullptr;
};

class ConvPlan {
 public:
  ConvPlan(PlanTarget target, ConvDirection dir, const layers::ConvShape& s, ConvMath math, ConvOutput output,
           ConvDeterminism determinism, std::size_t max_candidates)
      : dir_(dir) {
    cudnnHandle_t handle = target.handle;
    const std::int64_t ho = s.out_h(), wo = s.out_w();
    x_ = std::make_unique<Desc>(tensor(kUidX, s.n, s.c, s.h, s.w));
    const Desc& x = *x_;
    // Filter (O, I, KH, KW) stored channels-last: strides of (O, KH, KW, I).
    w_ = std::make_unique<Desc>(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    Desc& w = *w_;
    const cudnnDataType_t dtype = CUDNN_DATA_FLOAT;
    w.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, &dtype, 1)
        .set_i64s(CUDNN_ATTR_TENSOR_DIMENSIONS, {s.out_c, s.c, s.k, s.k})
        .set_i64s(CUDNN_ATTR_TENSOR_STRIDES, nhwc_strides(s.c, s.k, s.k))
        .set_i64(CUDNN_ATTR_TENSOR_UNIQUE_ID, kUidW)
        .set_i64(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, kAlignment);
    w.finalize("filter tensor");
    y_ = std::make_unique<Desc>(tensor(kUidY, s.n, s.out_c, ho, wo));
    const Desc& y = *y_;

    conv_ = std::make_unique<Desc>(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
    Desc& conv = *conv_;
    const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
    conv.set(CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, &dtype, 1)
        .set(CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, &mode, 1)
        .set_i64(CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, 2)
        .set_i64s(CUDNN_ATTR_CONVOLUTION_DILATIONS, {1, 1})
        .set_i64s(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, {s.stride, s.stride})
        .set_i64s(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, {s.pad, s.pad})
        .set_i64s(CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, {s.pad, s.pad});
    conv.finalize("convolution");

    const float alpha = 1.f, beta = output == ConvOutput::kAccumulate ? 1.f : 0.f;
    std::unique_ptr<Desc>& op = op_;
    if (dir == ConvDirection::kForward) {
      op = std::make_unique<Desc>(CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR);
      op->set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, x)
          .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, w)
          .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, y)
          .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, conv)
          .set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_TYPE_FLOAT, &alpha, 1)
          .set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, CUDNN_TYPE_FLOAT, &beta, 1);
    } else if (dir == ConvDirection::kBackwardData) {
      op = std::make_unique<Desc>(CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR);
      op->set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, x)
          .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W, w)
          .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY, y)
          .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC, conv)
          .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA, CUDNN_TYPE_FLOAT, &alpha, 1)
          .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA, CUDNN_TYPE_FLOAT, &beta, 1);
    } else {
      op = std::make_unique<Desc>(CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR);
      op->set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X, x)
          .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW, w)
          .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY, y)
          .set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC, conv)
          .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, CUDNN_TYPE_FLOAT, &alpha, 1)
          .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA, CUDNN_TYPE_FLOAT, &beta, 1);
    }
    op->finalize("convolution operation");

    graph_ = std::make_unique<Desc>(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    cudnnBackendDescriptor_t ops = op->get();
    graph_->set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, &ops, 1);
    if (handle != nullptr) graph_->set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, &handle, 1);
    graph_->finalize("operation graph");

    enumerate(target, math, determinism, max_candidates);
  }

  // How many plans finalized for this convolution (the autotuner's choices).
  std::size_t candidates() const { return candidates_.size(); }
  std::size_t candidate_workspace(std::size_t i) const { return candidates_[i].workspace; }
  // Keeps candidate i (what run() executes) and drops the others.
  void keep(std::size_t i) {
    Candidate chosen = std::move(candidates_.at(i));
    candidates_.clear();
    candidates_.push_back(std::move(chosen));
    tuned_away_ = i != 0;
  }
  bool tuned_away() const { return tuned_away_; }

  std::size_t workspace() const { return candidates_.front().workspace; }
  bool deterministic() const { return candidates_.front().deterministic; }
  bool runtime_compiled() const { return candidates_.front().runtime_compiled; }

  void run(cudnnHandle_t handle, const float* a, const float* b, float* out, void* workspace) const {
    run_candidate(0, handle, a, b, out, workspace);
  }

  // Executes candidate i (the autotuner's timing runs; run() is candidate 0).
  void run_candidate(std::size_t i, cudnnHandle_t handle, const float* a, const float* b, float* out,
                     void* workspace) const {
    // Pointers in uid order x, w, y.
    void* ptrs[3];
    if (dir_ == ConvDirection::kForward) {
      ptrs[0] = const_cast<float*>(a);  // x
      ptrs[1] = const_cast<float*>(b);  // w
      ptrs[2] = out;                    // y
    } else if (dir_ == ConvDirection::kBackwardData) {
      ptrs[0] = out;                    // dx
      ptrs[1] = const_cast<float*>(b);  // w
      ptrs[2] = const_cast<float*>(a);  // dy
    } else {
      ptrs[0] = const_cast<float*>(a);  // x
      ptrs[1] = out;                    // dw
      ptrs[2] = const_cast<float*>(b);  // dy
    }
    const std::int64_t uids[3] = {kUidX, kUidW, kUidY};
    Desc pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
    pack.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, ptrs, 3)
        .set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, uids, 3)
        .set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, &workspace, 1);
    pack.finalize("variant pack");
    const cudnnStatus_t st = cudnnBackendExecute(handle, candidates_.at(i).plan->get(), pack.get());
    if (st != CUDNN_STATUS_SUCCESS)
      throw Error(ErrorKind::kCudnn,
                  std::string("cudnnBackendExecute failed: ") + cudnnGetErrorString(st) + last_cudnn_error());
  }

 private:
  // One engine configuration that finalized into an execution plan, within
  // the pass's filters, with what it was built from.
  struct Candidate {
    std::unique_ptr<Desc> config, plan;
    std::size_t workspace = 0;
    bool deterministic = true, runtime_compiled = false;
  };

  // Fills candidates_ with up to `max_candidates` plans, in preference order:
  // the first pass that yields any plan ends the search; within it heuristics
  // mode A's list, in its order, and the fallback list only when mode A
  // yields nothing. With max_candidates = 1 this is "the first configuration
  // that finalizes", the heuristic choice.
  void enumerate(PlanTarget target, ConvMath math, ConvDeterminism determinism, std::size_t max_candidates) {
    cudnnHandle_t handle = target.handle;
    // What was tried, for the error message when nothing works.
    std::string tried;
    int filtered = 0, over_cap = 0, unreadable = 0;
    unsigned filtered_bits = 0;
    for (const Pass& pass : kPasses) {
      const unsigned rejected =
          rejected_numerical(math, pass.nondeterministic || determinism == ConvDeterminism::kAny);
      for (cudnnBackendHeurMode_t heur : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
        if (!candidates_.empty()) break;  // mode A's list suffices
        Desc h(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
        h.set_desc(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, *graph_)
            .set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, &heur, 1);
        if (target.props != nullptr)
          h.set(CUDNN_ATTR_ENGINEHEUR_DEVICEPROP, CUDNN_TYPE_BACKEND_DESCRIPTOR, &target.props, 1);
        if (cudnnBackendFinalize(h.get()) != CUDNN_STATUS_SUCCESS) {
          if (&pass == &kPasses[0])
            tried += std::string(" [heuristics ") + (heur == CUDNN_HEUR_MODE_A ? "A" : "fallback") +
                     " did not finalize" + last_cudnn_error() + "]";
          continue;
        }
        std::int64_t available = 0;
        if (cudnnBackendGetAttribute(h.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0,
                                     &available, nullptr) != CUDNN_STATUS_SUCCESS ||
            available <= 0)
          continue;
        std::vector<Desc> cfgs;
        std::vector<cudnnBackendDescriptor_t> raw;
        for (std::int64_t k = 0; k < available; ++k) {
          cfgs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
          raw.push_back(cfgs.back().get());
        }
        std::int64_t got = 0;
        if (cudnnBackendGetAttribute(h.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                     available, &got, raw.data()) != CUDNN_STATUS_SUCCESS)
          continue;
        for (std::int64_t k = 0; k < got && candidates_.size() < max_candidates; ++k) {
          const EngineNotes notes = engine_notes(cfgs[static_cast<std::size_t>(k)]);
          if (!notes.ok) {
            ++unreadable;
            continue;
          }
          if ((notes.numerical & rejected) != 0 ||
              (!pass.runtime_compiled && (notes.behavior & note(CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION)) != 0)) {
            ++filtered;
            filtered_bits |= notes.numerical & rejected;
            continue;
          }
          auto plan = std::make_unique<Desc>(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
          cudnnBackendDescriptor_t cfg = raw[static_cast<std::size_t>(k)];
          if (handle != nullptr)
            plan->set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, &handle, 1);
          else
            plan->set(CUDNN_ATTR_EXECUTION_PLAN_DEVICEPROP, CUDNN_TYPE_BACKEND_DESCRIPTOR, &target.props, 1);
          plan->set(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, &cfg, 1);
          const cudnnStatus_t st = cudnnBackendFinalize(plan->get());
          if (st != CUDNN_STATUS_SUCCESS) {
            if (tried.size() < 2000)
              tried += std::string(" [cfg ") + std::to_string(k) + ": " + cudnnGetErrorString(st) + last_cudnn_error() + "]";
            continue;
          }
          std::int64_t ws = 0, n = 0;
          NPID_CUDNN_CHECK(cudnnBackendGetAttribute(plan->get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                                    CUDNN_TYPE_INT64, 1, &n, &ws));
          if (pass.workspace_cap >= 0 && ws > pass.workspace_cap) {
            ++over_cap;
            continue;
          }
          // Keep what the plan was built from alive with it.
          Candidate c;
          c.config = std::make_unique<Desc>(std::move(cfgs[static_cast<std::size_t>(k)]));
          c.plan = std::move(plan);
          c.workspace = static_cast<std::size_t>(ws);
          c.deterministic = (notes.numerical & note(CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC)) == 0;
          c.runtime_compiled = (notes.behavior & note(CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION)) != 0;
          candidates_.push_back(std::move(c));
        }
      }
      if (!candidates_.empty()) return;
    }
    char bits[16];
    std::snprintf(bits, sizeof(bits), "0x%x", filtered_bits);
    throw Error(ErrorKind::kCudnn, "no engine supports it: " + std::to_string(filtered) +
                                       " configurations filtered by their notes (numerical " + bits + "), " +
                                       std::to_string(unreadable) + " with unreadable notes, " +
                                       std::to_string(over_cap) + " over the workspace cap;" +
                                       (tried.empty() ? " no plan finalize was attempted" : tried));
  }

  ConvDirection dir_;
  // Every descriptor the plans were built from lives as long as the plans.
  std::unique_ptr<Desc> x_, w_, y_, conv_, op_, graph_;
  std::vector<Candidate> candidates_;  // after keep(): the chosen one only
  bool tuned_away_ = false;
};

std::size_t pick_fastest(const std::vector<double>& ms, double margin) {
  auto ok = [](double t) { return std::isfinite(t) && t >= 0; };
  std::size_t best = ms.size();
  for (std::size_t i = 0; i < ms.size(); ++i)
    if (ok(ms[i]) && (best == ms.size() || ms[i] < ms[best])) best = i;
  if (best == ms.size()) return 0;            // nothing ran
  if (!ok(ms[0])) return best;                // the heuristic choice failed
  return ms[best] < ms[0] * (1.0 - margin) ? best : 0;
}

namespace {

// RAII pair of timing events.
class EventPair {
 public:
  EventPair() {
    NPID_CUDA_CHECK(cudaEventCreate(&start_));
    const cudaError_t err = cudaEventCreate(&stop_);
    if (err != cudaSuccess) {
      cudaEventDestroy(start_);
      NPID_CUDA_CHECK(err);
    }
  }
  ~EventPair() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  EventPair(const EventPair&) = delete;
  EventPair& operator=(const EventPair&) = delete;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

// Milliseconds of each candidate of `plan` on scratch buffers of shape `s`
// (zeros: convolution speed does not depend on the values): one warm-up run,
// then the fastest of kAutotuneRuns. A candidate whose execution fails gets
// +inf (pick_fastest never keeps it). Empty (nothing timed) when the device
// lacks the memory for the scratch.
std::vector<double> time_candidates(Context& ctx, const ConvPlan& plan, ConvDirection dir,
                                    const layers::ConvShape& s) {
  const Device dev = ctx.device();
  const std::int64_t nx = s.n * s.h * s.w * s.c, nw = s.out_c * s.k * s.k * s.c,
                     ny = s.n * s.out_h() * s.out_w() * s.out_c;
  std::size_t ws = 1;
  for (std::size_t i = 0; i < plan.candidates(); ++i) ws = std::max(ws, plan.candidate_workspace(i));
  // Timing is an optimization: with less than twice the scratch free, skip it.
  std::size_t free_bytes = 0, total_bytes = 0;
  NPID_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  if (2 * (static_cast<std::size_t>(nx + nw + ny) * sizeof(float) + ws) > free_bytes) return {};
  Tensor x({nx}, DType::kFloat32, dev), w({nw}, DType::kFloat32, dev), y({ny}, DType::kFloat32, dev);
  Tensor work({static_cast<std::int64_t>(ws)}, DType::kUInt8, dev);
  cudaStream_t stream = ctx.stream();
  for (const Tensor* t : {&x, &w, &y}) NPID_CUDA_CHECK(cudaMemsetAsync(t->data(), 0, t->bytes(), stream));
  // Operands in run()'s order: forward (x, w -> y), data (dy, w -> dx), filter (x, dy -> dw).
  const float *a = x.data_as<float>(), *b = w.data_as<float>();
  float* out = y.data_as<float>();
  if (dir == ConvDirection::kBackwardData) {
    a = y.data_as<float>();
    out = x.data_as<float>();
  } else if (dir == ConvDirection::kBackwardFilter) {
    b = y.data_as<float>();
    out = w.data_as<float>();
  }
  cudnnHandle_t handle = cudnn_handle(ctx);
  EventPair ev;
  std::vector<double> ms(plan.candidates(), std::numeric_limits<double>::infinity());
  for (std::size_t i = 0; i < plan.candidates(); ++i) {
    try {
      plan.run_candidate(i, handle, a, b, out, work.data());
    } catch (const Error&) {
      (void)cudaGetLastError();  // not left for the next launch check to report
      continue;                  // this engine cannot run the shape after all: never chosen
    }
    for (int r = 0; r < kAutotuneRuns; ++r) {
      NPID_CUDA_CHECK(cudaEventRecord(ev.start_, stream));
      plan.run_candidate(i, handle, a, b, out, work.data());
      NPID_CUDA_CHECK(cudaEventRecord(ev.stop_, stream));
      NPID_CUDA_CHECK(cudaEventSynchronize(ev.stop_));
      float t = 0;
      NPID_CUDA_CHECK(cudaEventElapsedTime(&t, ev.start_, ev.stop_));
      ms[i] = std::min(ms[i], static_cast<double>(t));
    }
  }
  NPID_CUDA_CHECK(cudaStreamSynchronize(stream));  // the scratch is freed next
  return ms;
}

}  // namespace

ConvPlans::ConvPlans(Context& ctx, ConvTuning tuning, ConvDeterminism determinism)
    : ctx_(&ctx), tuning_(tuning), determinism_(determinism) {}
ConvPlans::ConvPlans(const std::string& device_properties_json, ConvTuning tuning, ConvDeterminism determinism)
    : ctx_(nullptr), tuning_(tuning), determinism_(determinism),
      props_(std::make_unique<DeviceProperties>(device_properties_json)) {}
ConvPlans::~ConvPlans() = default;

ConvPlans::Key ConvPlans::key_of(ConvDirection dir, const layers::ConvShape& s, ConvMath math, ConvOutput output) {
  return Key{static_cast<int>(dir), s.n,     s.h,   s.w, s.c, s.out_c, s.k, s.stride, s.pad, static_cast<int>(math),
             static_cast<int>(output)};
}

std::size_t ConvPlans::prepare(ConvDirection dir, const layers::ConvShape& s, ConvMath math, ConvOutput output) {
  const Key key = key_of(dir, s, math, output);
  auto it = plans_.find(key);
  if (it == plans_.end()) {
    const std::size_t max_candidates = tuning_ == ConvTuning::kAutotune ? kAutotuneCandidates : 1;
    std::unique_ptr<ConvPlan> plan;
    std::size_t enumerated = 0;
    try {
      // On the device through its handle, or for the device the properties
      // describe (deviceless: nothing to time).
      DeviceGuard guard(ctx_ != nullptr ? ctx_->device() : Device::cpu());
      const PlanTarget target = ctx_ != nullptr ? PlanTarget{cudnn_handle(*ctx_), nullptr}
                                                : PlanTarget{nullptr, props_->get()};
      plan = std::make_unique<ConvPlan>(target, dir, s, math, output, determinism_, max_candidates);
      enumerated = plan->candidates();
      if (ctx_ != nullptr && plan->candidates() > 1) {
        cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
        NPID_CUDA_CHECK(cudaStreamIsCapturing(ctx_->stream(), &capturing));
        if (capturing == cudaStreamCaptureStatusNone) {
          const auto t0 = std::chrono::steady_clock::now();
          std::vector<double> ms;
          try {
            ms = time_candidates(*ctx_, *plan, dir, s);
          } catch (const Error&) {
            // Timing is an optimization: a failure in it (scratch memory, a
            // candidate that fails mid-timing) keeps the heuristic choice. A
            // sticky device error resurfaces at the next synchronization.
            (void)cudaGetLastError();
            ms.clear();
          }
          tuning_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          if (!ms.empty()) {
            ++timed_;
            plan->keep(pick_fastest(ms, kAutotuneMargin));
          }
        }
      }
      if (plan->candidates() > 1) plan->keep(0);  // untimed: the heuristic choice
    } catch (const Error& e) {
      // Name the convolution; the cause (cuDNN's own reason) follows.
      throw Error(e.kind(), "cuDNN: " + describe(dir, s, math, output) + ": " + e.what());
    }
    candidates_ += static_cast<int>(enumerated);
    it = plans_.emplace(key, std::move(plan)).first;
  }
  return it->second->workspace();
}

void ConvPlans::run(ConvDirection dir, const layers::ConvShape& s, ConvMath math, const float* a, const float* b,
                    float* out, void* workspace, ConvOutput output) {
  // Only prepared plans run: the caller sized `workspace` from prepare().
  const Key key = key_of(dir, s, math, output);
  auto it = plans_.find(key);
  if (it == plans_.end())
    throw Error(ErrorKind::kInternal, "cuDNN: " + describe(dir, s, math, output) + " was run before prepare()");
  if (ctx_ == nullptr)
    throw Error(ErrorKind::kUnsupported,
                "cuDNN: " + describe(dir, s, math, output) + ": plans made from device properties (deviceless) cannot run");
  DeviceGuard guard(ctx_->device());
  try {
    it->second->run(cudnn_handle(*ctx_), a, b, out, workspace);
  } catch (const Error& e) {
    // Name the convolution that failed; cuDNN's reason follows.
    throw Error(e.kind(), "cuDNN: " + describe(dir, s, math, output) + ": " + e.what());
  }
}

std::string device_properties_json(Context& ctx) {
  DeviceGuard guard(ctx.device());
  cudnnHandle_t handle = cudnn_handle(ctx);
  Desc props(device_properties_type());
  props.set(CUDNN_ATTR_DEVICEPROP_HANDLE, CUDNN_TYPE_HANDLE, &handle, 1);
  props.finalize("device properties");
  return serialize_properties(props.get());
}

std::string normalized_properties_json(const std::string& json) {
  return serialize_properties(DeviceProperties(json).get());
}

ConvPlans::Summary ConvPlans::summary() const {
  Summary out;
  for (const auto& [key, plan] : plans_) {
    ++out.plans;
    if (!plan->deterministic()) ++out.nondeterministic;
    if (plan->runtime_compiled()) ++out.runtime_compiled;
    out.max_workspace = std::max(out.max_workspace, plan->workspace());
    if (plan->tuned_away()) ++out.tuned_away;
  }
  out.candidates = candidates_;
  out.timed = timed_;
  out.tuning_seconds = tuning_seconds_;
  return out;
}

}  // namespace cudnn
}  // namespace npid

// npid::TrainStep (contract in npid/train.h).
#include "npid/train.h"

#include <cmath>
#include <limits>

#include <cuda_runtime_api.h>

#include <cstdio>

#include "augment.h"
#include "core/args.h"
#include "core/check.h"
#include "core/context_impl.h"
#include "graph_scalars.h"
#include "nce.h"
#include "npid/error.h"

namespace npid {

const char* to_string(CriterionKind kind) noexcept { return kind == CriterionKind::kNce ? "nce" : "softmax"; }

struct TrainStep::Impl {
  Context* ctx;
  TrainStepConfig cfg;
  std::int64_t N;
  ResNet18 net;
  MemoryBank bank;
  Sgd sgd;
  std::unique_ptr<NceCriterion> nce;
  std::unique_ptr<SoftmaxCriterion> softmax;
  Tensor images, embeddings, grad_embeddings, loss;
  std::int64_t steps = 0;
  // Full-batch steps run directly by this object: capture needs one (plans,
  // workspaces, lazily loaded kernels of the captured shapes all settled).
  std::int64_t direct_steps = 0;
  // CUDA graph of the steady-state step (after the first step: Z, the SGD
  // first-step flag, plans and workspaces are settled). It gathers the batch
  // from idx_buf and reads the step and lr from device words, so one capture
  // serves a whole epoch; a new epoch (augmentation key) or image set
  // re-captures.
  bool graphs = false;
  std::string graph_status = "off";
  cudaGraphExec_t graph_exec = nullptr;
  // Everything a capture bakes in besides its own buffers: a change of any of
  // these re-captures.
  struct GraphKey {
    std::int64_t epoch = -1;
    const void* pixels = nullptr;
    const void* descs = nullptr;
    const void* workspace = nullptr;  // the context's shared workspace (criterion scratch)
    std::size_t workspace_bytes = 0;
    std::uint64_t net_workspace = 0;  // the network's scratch generation
    bool sgd_started = false;
    int nce_layout = 0;  // the NCE gather kernel is picked at capture (tuning override)
    bool operator==(const GraphKey& o) const {
      return epoch == o.epoch && pixels == o.pixels && descs == o.descs && workspace == o.workspace &&
             workspace_bytes == o.workspace_bytes && net_workspace == o.net_workspace &&
             sgd_started == o.sgd_started && nce_layout == o.nce_layout;
    }
  };
  GraphKey graph_key;
  GraphKey key_for(const ImageSet& resident, std::int64_t epoch) {
    GraphKey k;
    k.epoch = epoch;
    k.pixels = resident.pixels.data();
    k.descs = resident.descs.data();
    k.workspace = ctx->workspace().data();
    k.workspace_bytes = ctx->workspace().capacity();
    k.net_workspace = net.workspace_generation();
    k.sgd_started = sgd.started();
    k.nce_layout = nce_layout_override();
    return k;
  }
  Tensor idx_buf, step_dev, lr_dev;

  Impl(Context& c, const TrainStepConfig& config, std::int64_t n)
      : ctx(&c),
        cfg(config),
        N(n),
        net(c, config.model, config.batch_size, config.seed),
        bank(c, n, config.model.embedding_dim, config.bank_init, config.seed ^ 0xba4cULL, config.bank_dtype),
        sgd(c, config.sgd, net.parameter_buffer().numel()) {
    const std::int64_t B = cfg.batch_size, D = cfg.model.embedding_dim, S = cfg.model.image_size;
    if (cfg.criterion == CriterionKind::kNce) {
      NceConfig nc;
      nc.num_negatives = cfg.num_negatives;
      nc.temperature = cfg.temperature;
      nc.proximal_lambda = cfg.proximal_lambda;
      nc.z_policy = cfg.z_policy;
      nc.z_fixed = cfg.z_fixed;
      nc.z_ema_decay = cfg.z_ema_decay;
      nc.seed = cfg.seed ^ 0x9e3779b97f4a7c15ULL;
      nc.validate_inputs = false;  // indices checked here when asked; features come from the net
      nce = std::make_unique<NceCriterion>(c, nc, B, D);
    } else {
      SoftmaxConfig sc;
      sc.temperature = cfg.temperature;
      sc.proximal_lambda = cfg.proximal_lambda;
      sc.math = cfg.softmax_math;
      sc.validate_inputs = false;
      softmax = std::make_unique<SoftmaxCriterion>(c, sc, B, D, n, cfg.bank_dtype);
    }
    images = Tensor({B, S, S, 3}, DType::kFloat32, c.device());
    embeddings = Tensor({B, D}, DType::kFloat32, c.device());
    grad_embeddings = Tensor({B, D}, DType::kFloat32, c.device());
    loss = Tensor({1}, DType::kFloat32, c.device());
    graphs = c.is_cuda() && cfg.cuda_graph && !c.sync_after_launch();
    graph_status = !c.is_cuda() ? "off (CPU)" : !cfg.cuda_graph ? "off (config)"
                                : c.sync_after_launch() ? "off (sync_after_launch)" : "on (not yet captured)";
    if (graphs) {
      idx_buf = Tensor({B}, DType::kInt64, c.device());
      step_dev = Tensor({1}, DType::kInt64, c.device());
      lr_dev = Tensor({1}, DType::kFloat32, c.device());
    }
  }

  ~Impl() {
    if (graph_exec != nullptr) cudaGraphExecDestroy(graph_exec);
  }

  void drop_graph() {
    if (graph_exec != nullptr) cudaGraphExecDestroy(graph_exec);
    graph_exec = nullptr;
    graph_key = GraphKey();
  }

  void disable_graphs(const std::string& why) {
    drop_graph();
    graphs = false;
    graph_status = "off (" + why + ")";
    std::fprintf(stderr, "npid::TrainStep: CUDA graph capture disabled, launching directly: %s\n", why.c_str());
  }

  // Enqueues augment + the step body reading idx_buf / step_dev / lr_dev.
  void enqueue_graph_body(const ImageSet& resident, std::int64_t epoch) {
    const std::int64_t B = cfg.batch_size, S = cfg.model.image_size;
    AugmentProblem p;
    p.config = cfg.augment;
    p.pixels = resident.pixels.data_as<const std::uint8_t>();
    p.descs = resident.descs.data_as<const std::int64_t>();
    p.sources = idx_buf.data_as<const std::int64_t>();
    p.instances = p.sources;
    p.batch = B;
    p.seed = cfg.seed;
    p.epoch = static_cast<std::uint64_t>(epoch);
    p.out = images.data_as<float>();
    launch_augment(*ctx, p);
    const TensorView imgs(images.data(), DType::kFloat32, {B, S, S, 3}, ctx->device());
    enqueue(imgs, idx_buf, 0.0f, step_dev, lr_dev);
  }

  // Captures the graph for (resident, epoch); false (graphs disabled) when
  // capture or instantiation fails. Nothing runs during a capture.
  bool capture(const ImageSet& resident, std::int64_t epoch) {
    drop_graph();
    cudaStream_t stream = ctx->stream();
    DeviceGuard guard(ctx->device());
    const std::int64_t tracked = net.num_batches_tracked();
    const bool sgd_started = sgd.started();
    const GraphKey key = key_for(resident, epoch);  // before capture: enqueuing flips host-side state
    cudaError_t err = cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
    if (err != cudaSuccess) {
      cudaGetLastError();
      disable_graphs(std::string("begin capture: ") + cudaGetErrorString(err));
      return false;
    }
    std::string failure;
    try {
      enqueue_graph_body(resident, epoch);
    } catch (const std::exception& e) {
      failure = e.what();
    } catch (...) {
      failure = "unknown exception";
    }
    cudaGraph_t graph = nullptr;
    err = cudaStreamEndCapture(stream, &graph);
    net.set_num_batches_tracked(tracked);  // the capture ran nothing
    sgd.set_started(sgd_started);
    if (failure.empty() && err != cudaSuccess) failure = std::string("end capture: ") + cudaGetErrorString(err);
    if (failure.empty()) {
      err = cudaGraphInstantiate(&graph_exec, graph, 0);
      if (err != cudaSuccess) {
        graph_exec = nullptr;
        failure = std::string("instantiate: ") + cudaGetErrorString(err);
      }
    }
    if (graph != nullptr) cudaGraphDestroy(graph);
    if (!failure.empty()) {
      cudaGetLastError();
      disable_graphs(failure);
      return false;
    }
    graph_key = key;
    graph_status = "on";
    return true;
  }

  // One step by graph replay; false when graphs are (or just became) unusable.
  bool replay(const ImageSet& resident, const TensorView& indices, std::int64_t epoch, float lr) {
    // A graph bakes SGD's first-step branch (buffer = grad) in; only steady-state steps are captured.
    if (!graphs || direct_steps < 1 || !sgd.started() || indices.shape[0] != cfg.batch_size) return false;
    if ((graph_exec == nullptr || !(graph_key == key_for(resident, epoch))) && !capture(resident, epoch)) {
      return false;
    }
    DeviceGuard guard(ctx->device());
    if (indices.data != idx_buf.data()) {
      NPID_CUDA_CHECK(cudaMemcpyAsync(idx_buf.data(), indices.data, indices.bytes(), cudaMemcpyDeviceToDevice,
                                      ctx->stream()));
    }
    launch_set_step_scalars(*ctx, step_dev.data_as<std::uint64_t>(), static_cast<std::uint64_t>(steps),
                            lr_dev.data_as<float>(), lr);
    const cudaError_t launched = cudaGraphLaunch(graph_exec, ctx->stream());
    if (launched != cudaSuccess) {
      drop_graph();  // not retried with a graph that failed to launch
      NPID_CUDA_CHECK(launched);
    }
    net.set_num_batches_tracked(net.num_batches_tracked() + 1);
    return true;
  }

  // The step body (direct launches, or recorded by a capture).
  void enqueue(const TensorView& imgs, const TensorView& indices, float lr, const TensorView& step_device,
               const TensorView& lr_device) {
    const std::int64_t B = indices.shape[0], D = cfg.model.embedding_dim;
    const TensorView emb(embeddings.data(), DType::kFloat32, {B, D}, ctx->device());
    const TensorView grad(grad_embeddings.data(), DType::kFloat32, {B, D}, ctx->device());
    net.forward(imgs, emb, true);
    if (nce) {
      nce->forward_backward({emb, indices, bank.view(), {}}, static_cast<std::uint64_t>(steps), {loss, grad, {}, {}},
                            step_device);
    } else {
      softmax->forward_backward({emb, indices, bank.view()}, {loss, grad});
    }
    net.backward(grad);
    sgd.step(net.parameter_buffer(), net.gradient_buffer(), lr, lr_device);
    bank.update(emb, indices, cfg.bank_momentum, false);
  }

  StepStats finish(bool fetch) {
    ++steps;
    StepStats st;
    st.loss = std::numeric_limits<float>::quiet_NaN();
    if (fetch) copy(*ctx, view(&st.loss, {1}), loss);
    st.z = nce && nce->z_initialized() && fetch ? nce->z() : 0.0f;
    return st;
  }

  StepStats run(const TensorView& imgs, const TensorView& indices, float lr, bool fetch) {
    if (cfg.validate_indices) require_indices_below(*ctx, indices, N, "TrainStep::step", "indices");
    enqueue(imgs, indices, lr, {}, {});
    if (indices.shape[0] == cfg.batch_size) ++direct_steps;
    return finish(fetch);
  }

  void check_indices(const TensorView& indices, const char* op) const {
    require_present(indices, op, "indices");
    require_rank(indices, 1, op, "indices");
    const std::int64_t B = indices.shape[0];
    NPID_CHECK_ARG(B >= 1 && B <= cfg.batch_size, op, "indices",
                   "expected 1 <= B <= batch_size " << cfg.batch_size << ", got " << B);
    require_tensor(indices, DType::kInt64, {B}, *ctx, op, "indices");
  }
};

void TrainStepConfig::validate() const {
  constexpr const char* op = "TrainStep";
  const TrainStepConfig& config = *this;
  NPID_CHECK_ARG(config.batch_size >= 1 && config.batch_size <= 65535, op, "config.batch_size",
                 "expected 1..65535, got " << config.batch_size);
  NPID_CHECK_ARG(config.bank_momentum >= 0.0f && config.bank_momentum < 1.0f, op, "config.bank_momentum",
                 "expected 0 <= m < 1, got " << config.bank_momentum);
  if (config.criterion == CriterionKind::kNce && config.z_policy == ZPolicy::kFixed)
    NPID_CHECK_ARG(std::isfinite(config.z_fixed) && config.z_fixed > 0.0f, op, "config.z_fixed",
                   "expected a finite Z > 0 for the fixed Z policy, got " << config.z_fixed);
  NPID_CHECK_ARG(std::isfinite(config.z_ema_decay) && config.z_ema_decay >= 0.0f && config.z_ema_decay < 1.0f, op,
                 "config.z_ema_decay", "expected a decay in [0, 1), got " << config.z_ema_decay);
  NPID_CHECK_ARG(config.softmax_math != SoftmaxMath::kBF16 || config.bank_dtype == DType::kBFloat16, op,
                 "config.softmax_math", "expected bf16 GEMMs only with a bf16 bank, got a "
                                            << to_string(config.bank_dtype) << " bank");
  NPID_CHECK_ARG(config.augment.out_height == config.model.image_size &&
                     config.augment.out_width == config.model.image_size,
                 op, "config.augment",
                 "expected the network's input size " << config.model.image_size << " x " << config.model.image_size
                                                      << ", got " << config.augment.out_height << " x "
                                                      << config.augment.out_width);
}

TrainStep::TrainStep(Context& ctx, const TrainStepConfig& config, std::int64_t num_instances) {
  constexpr const char* op = "TrainStep";
  config.validate();
  NPID_CHECK_ARG(num_instances >= 2 && num_instances < (std::int64_t(1) << 31), op, "num_instances",
                 "expected 2 <= N < 2^31, got " << num_instances);
  impl_ = std::make_unique<Impl>(ctx, config, num_instances);
}

TrainStep::~TrainStep() = default;

StepStats TrainStep::step(const ImageSet& resident, const TensorView& indices, std::int64_t epoch, float lr,
                          bool fetch_loss) {
  constexpr const char* op = "TrainStep::step";
  Impl& m = *impl_;
  m.check_indices(indices, op);
  NPID_CHECK_ARG(resident.size() == m.N, op, "resident",
                 "expected the N = " << m.N << " training images, got " << resident.size());
  NPID_CHECK_ARG(resident.device() == m.ctx->device(), op, "resident",
                 "expected an image set on " << m.ctx->device().str() << ", got one on " << resident.device().str());
  NPID_CHECK_ARG(std::isfinite(lr) && lr >= 0.0f, op, "lr", "expected a finite lr >= 0, got " << lr);
  const std::int64_t B = indices.shape[0], S = m.cfg.model.image_size;
  if (m.cfg.validate_indices) require_indices_below(*m.ctx, indices, m.N, op, "indices");
  if (m.replay(resident, indices, epoch, lr)) return m.finish(fetch_loss);
  AugmentProblem p;
  p.config = m.cfg.augment;
  p.pixels = resident.pixels.data_as<const std::uint8_t>();
  p.descs = resident.descs.data_as<const std::int64_t>();
  p.sources = static_cast<const std::int64_t*>(indices.data);
  p.instances = p.sources;
  p.batch = B;
  p.seed = m.cfg.seed;
  p.epoch = static_cast<std::uint64_t>(epoch);
  p.out = m.images.data_as<float>();
  if (m.ctx->is_cuda()) {
    launch_augment(*m.ctx, p);
  } else {
    augment_cpu(p, m.ctx->cpu_threads());
  }
  const TensorView imgs(m.images.data(), DType::kFloat32, {B, S, S, 3}, m.ctx->device());
  m.enqueue(imgs, indices, lr, {}, {});
  if (B == m.cfg.batch_size) ++m.direct_steps;
  return m.finish(fetch_loss);
}

StepStats TrainStep::step_images(const TensorView& images, const TensorView& indices, float lr, bool fetch_loss) {
  constexpr const char* op = "TrainStep::step_images";
  Impl& m = *impl_;
  m.check_indices(indices, op);
  const std::int64_t B = indices.shape[0], S = m.cfg.model.image_size;
  require_tensor(images, DType::kFloat32, {B, S, S, 3}, *m.ctx, op, "images");
  NPID_CHECK_ARG(std::isfinite(lr) && lr >= 0.0f, op, "lr", "expected a finite lr >= 0, got " << lr);
  return m.run(images, indices, lr, fetch_loss);
}

const TrainStepConfig& TrainStep::config() const { return impl_->cfg; }
std::int64_t TrainStep::steps_done() const { return impl_->steps; }
ResNet18& TrainStep::net() { return impl_->net; }
MemoryBank& TrainStep::bank() { return impl_->bank; }
Sgd& TrainStep::optimizer() { return impl_->sgd; }
float TrainStep::z() const { return impl_->nce && impl_->nce->z_initialized() ? impl_->nce->z() : 0.0f; }
bool TrainStep::z_initialized() const { return impl_->nce && impl_->nce->z_initialized(); }
const std::string& TrainStep::graph_status() const { return impl_->graph_status; }

void TrainStep::restore(std::int64_t steps_done, float z, bool z_initialized, bool sgd_started) {
  NPID_CHECK_ARG(steps_done >= 0, "TrainStep::restore", "steps_done", "expected >= 0, got " << steps_done);
  impl_->steps = steps_done;
  if (impl_->nce) {
    if (z_initialized)
      impl_->nce->set_z(z);
    else
      impl_->nce->reset_z();  // the next step initializes Z again, as a fresh run's first step
  }
  impl_->sgd.set_started(sgd_started);
  impl_->drop_graph();        // it baked in the state before the restore
  impl_->direct_steps = 0;    // the next step runs directly (warm-up), then captures
}

}  // namespace npid

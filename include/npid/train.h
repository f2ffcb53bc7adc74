// npid/train.h -- npid::TrainStep: one NPID training step, every buffer owned.
//
// A step, on the context's stream:
//   [augment the batch's images from a resident ImageSet (npid/augment.h)]
//   -> ResNet-18 forward (training BatchNorm) -> L2-normalized embeddings
//   -> criterion against the memory bank: NCE with K negatives drawn in-kernel
//      (Z policy, proximal term) or the full non-parametric softmax
//   -> backward through the network -> SGD (PyTorch semantics)
//   -> bank rows of the batch move to the new embeddings with momentum.
// All buffers (images, embeddings, gradients, the bank, the momentum buffer,
// the criterion's workspace) are allocated at construction for batches up to
// config.batch_size; a steady-state step allocates nothing and synchronizes
// with the host only when the caller asks for the loss. On CUDA the steady
// state is one CUDA-graph launch per step (config.cuda_graph).
//
// The same code runs on the CUDA backend and on the CPU reference backend; on
// the CPU a run is deterministic, so a resumed run equals an uninterrupted one
// bit for bit.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "npid/augment.h"
#include "npid/context.h"
#include "npid/data.h"
#include "npid/memory_bank.h"
#include "npid/nce.h"
#include "npid/resnet.h"
#include "npid/softmax.h"

namespace npid {

enum class CriterionKind { kNce, kSoftmax };
const char* to_string(CriterionKind kind) noexcept;

struct TrainStepConfig {
  ResNetConfig model;
  CriterionKind criterion = CriterionKind::kNce;
  std::int64_t num_negatives = 4096;   // NCE K
  float temperature = 0.1f;            // tau (both criteria)
  float proximal_lambda = 0.0f;
  ZPolicy z_policy = ZPolicy::kFirstBatch;
  float z_fixed = 0.0f;                // Z under ZPolicy::kFixed (finite, > 0; NCE only)
  float z_ema_decay = 0.99f;           // decay under ZPolicy::kEma, in [0, 1)
  float bank_momentum = 0.5f;
  DType bank_dtype = DType::kFloat32;
  // Full softmax only: the GEMMs' math (kBF16 needs a bf16 bank; see npid/softmax.h).
  SoftmaxMath softmax_math = SoftmaxMath::kTF32;
  BankInit bank_init = BankInit::kUniform;
  SgdConfig sgd;                       // momentum 0.9, weight decay 5e-4
  std::int64_t batch_size = 128;
  AugmentConfig augment = AugmentConfig::cifar10_train();
  std::uint64_t seed = 0;              // weights, bank, negatives, augmentation
  // Check every step's indices against N (one host sync per step on CUDA);
  // the trainer turns it off, its indices come from the epoch permutation.
  bool validate_indices = true;
  // CUDA: capture the steady-state step (full batches of step(), once one
  // full batch has run directly and SGD has taken its first step) in a CUDA
  // graph and replay it; re-captured when the epoch or the image set changes. Falls back to direct launches (with a
  // note on stderr) when capture fails. Replays compute what direct launches
  // compute, bit for bit.
  bool cuda_graph = true;

  // The checks TrainStep's constructor makes on the configuration alone
  // (npid::Error, kInvalidArgument, naming the field): callable before any
  // data is loaded.
  void validate() const;
};

struct StepStats {
  float loss = 0;  // NaN when not fetched
  float z = 0;     // NCE normalization constant (0 for softmax)
};

class TrainStep {
 public:
  // num_instances: N, the memory bank's rows (the training set's size).
  TrainStep(Context& ctx, const TrainStepConfig& config, std::int64_t num_instances);
  ~TrainStep();
  TrainStep(const TrainStep&) = delete;
  TrainStep& operator=(const TrainStep&) = delete;

  // Augments images `indices` (B <= batch_size, int64 on ctx's device) of
  // `resident` (an ImageSet on ctx's device, N images) for `epoch`, then steps.
  StepStats step(const ImageSet& resident, const TensorView& indices, std::int64_t epoch, float lr,
                 bool fetch_loss = true);
  // A step on already-augmented images (B, S, S, 3) (e.g. a Loader's batch).
  StepStats step_images(const TensorView& images, const TensorView& indices, float lr, bool fetch_loss = true);

  const TrainStepConfig& config() const;
  std::int64_t steps_done() const;
  ResNet18& net();
  MemoryBank& bank();
  Sgd& optimizer();
  // NCE's Z (0 before the first step; 0 for softmax).
  float z() const;

  // Checkpoint state beyond the network, bank and momentum buffer.
  void restore(std::int64_t steps_done, float z, bool z_initialized, bool sgd_started);
  bool z_initialized() const;
  // "on", "off (CPU)", "off (config)", "off (<why capture failed>)", ...
  const std::string& graph_status() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace npid

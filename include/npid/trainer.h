// npid/trainer.h -- the NPID training loop: presets, LR schedule, kNN monitor,
// checkpoints, metrics and plots in a run folder.
//
// Run folder:
//   config.json          the resolved configuration
//   metrics.jsonl        one JSON line per epoch (loss, lr, images/s, kNN top-1, ...)
//   loss.svg, knn.svg    plots per epoch
//   checkpoint.safetensors  model (torchvision names) + memory bank + SGD
//                        momentum + trainer state; written atomically every
//                        `checkpoint_every` epochs and at the end
//   model.safetensors    the final model alone, written when the last epoch
//                        ends (with or without the final evaluation): PyTorch
//                        layout, torchvision names; metadata npid.model and
//                        npid.config (the run's configuration)
//   final.json           final evaluation (unless final_eval is off): kNN on
//                        recomputed features and on the bank, linear eval,
//                        retrieval.png
//
// Epoch e visits the training set in epoch_permutation(seed, e) order (last
// partial batch dropped), augments on the device (from the resident set, or
// from the streaming loader's uploaded batch), and takes one TrainStep per
// batch. Every random choice is keyed by (seed,
// epoch, instance) or (seed, step), so on the CPU backend a resumed run equals
// the uninterrupted one bit for bit.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "npid/data.h"
#include "npid/evaluate.h"
#include "npid/train.h"

namespace npid {

struct TrainerConfig {
  std::string preset = "cifar10";
  TrainStepConfig step;
  std::int64_t epochs = 200;
  float lr = 0.03f;
  std::vector<std::int64_t> lr_milestones = {120, 160};  // lr *= gamma at each
  float lr_gamma = 0.1f;
  bool cosine = false;                 // cosine decay to 0 over `epochs` instead
  std::int64_t steps_per_epoch = 0;    // > 0: cap (quick runs); 0: the whole set
  std::int64_t knn_every = 1;          // kNN monitor on the bank every n epochs (0: never)
  std::int64_t knn_k = 200;
  std::int64_t checkpoint_every = 1;
  bool final_eval = true;              // kNN (recomputed) + linear eval at the end
  std::int64_t log_every = 20;         // fetch the loss every n steps (a host sync on CUDA)
  std::string data = "synthetic";      // what --data named (recorded, used on resume)
  std::uint64_t data_seed = 0;         // the synthetic set's seed

  // docs/math.md s.7: "cifar10" (lr 0.03, wd 5e-4, B 128, tau 0.1,
  // K 4096, 200 epochs, steps at 120/160, CIFAR augmentation, CIFAR stem) and
  // "imagenet" (wd 1e-4, B 256, tau 0.07, ImageNet stem and augmentation).
  static TrainerConfig from_preset(const std::string& name);
  std::string to_json() const;
  static TrainerConfig from_json(const std::string& json);  // kIo on a bad document
  float lr_at(std::int64_t epoch) const;
  // The checks a Trainer makes on the configuration alone (the step's
  // included): npid::Error naming the field, before any data is loaded.
  void validate() const;
};

struct EpochMetrics {
  std::int64_t epoch = 0, steps = 0;
  double loss = 0, lr = 0, images_per_s = 0, seconds = 0;
  double knn_top1 = -1;  // -1: not measured this epoch
  double knn_seconds = 0;  // the kNN monitor's time (not in `seconds`)
  double z = 0;
};

class Trainer {
 public:
  // Starts a new run in run_dir (created; an existing checkpoint there is an
  // error: use resume()). train/test: host image sets (kept resident: the
  // training set is uploaded once) or image folders (streamed: decoded on CPU
  // threads batch by batch, npid/loader.h). Both give the same run.
  Trainer(Context& ctx, const TrainerConfig& config, const DataSource& train, const DataSource& test,
          const std::string& run_dir);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Continues the run in run_dir from its checkpoint; `config` must equal the
  // checkpoint's configuration except `epochs` (may grow), `log_every` and
  // `step.cuda_graph`. kIo
  // for a missing, truncated or corrupt checkpoint; kInvalidArgument naming
  // the first differing field otherwise. Nothing in run_dir is modified
  // before the checkpoint has been validated.
  static std::unique_ptr<Trainer> resume(Context& ctx, const TrainerConfig& config, const DataSource& train,
                                         const DataSource& test, const std::string& run_dir);
  // The configuration stored in run_dir's checkpoint; epochs_done, when
  // given, receives the epochs the checkpoint has completed (-1 when its
  // trainer state is unreadable: resume() then reports it).
  static TrainerConfig stored_config(const std::string& run_dir, std::int64_t* epochs_done = nullptr);

  // Trains until `epochs` (or stop_after_epoch when >= 0, for tests),
  // checkpointing as configured; then writes model.safetensors and runs the
  // final evaluation. When it trains at least one epoch it first removes the
  // results of an earlier end (model.safetensors, final.json, retrieval.png).
  void run(std::int64_t stop_after_epoch = -1);

  // Called after every step with (epoch, step in epoch, steps in epoch, loss or NaN).
  std::function<void(std::int64_t, std::int64_t, std::int64_t, float)> on_step;
  bool progress = true;  // a progress line on stdout

  TrainStep& step();
  std::int64_t next_epoch() const;
  const std::vector<EpochMetrics>& history() const;
  const std::optional<EvalReport>& final_report() const;
  void save_checkpoint() const;

  struct Impl;

 private:
  Trainer();
  std::unique_ptr<Impl> impl_;
};

}  // namespace npid

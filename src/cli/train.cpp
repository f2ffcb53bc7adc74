// `npid train`: a full NPID training run (presets, overrides, the built-in
// synthetic data by default), resumable, with progress, metrics, plots,
// checkpoints and a final evaluation in a run folder.
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "cli/commands.h"
#include "cli/datasets.h"
#include "cli/options.h"
#include "npid/npid.h"

namespace npid::cli {
namespace {

const char* kHelp = R"(usage: npid train [options]            a new run
       npid train --resume RUN [--epochs E]  continue RUN from its checkpoint

Trains a ResNet-18 embedding by non-parametric instance discrimination and
evaluates it with weighted kNN. Without --data it trains on the built-in
synthetic shapes: on a GPU a CIFAR-size run (50,000 + 10,000 images, 32x32,
width 64, the preset's schedule); on a CPU a small run (width 16, 16x16 images,
2,000 + 500 images, full softmax, 25 epochs) that finishes in a few minutes
on two cores. With --data the preset applies as it is on either device (on a
CPU that is over an hour per epoch of CIFAR-10: shrink it with --width,
--image-size, --epochs and --steps-per-epoch; docs/training.md has a CPU recipe).

  --preset P           cifar10 (default) | imagenet      (docs/training.md, "Presets")
  --data DATA          synthetic[:TRAIN[:TEST]] (synthetic alone: 10,000 + 2,000 images)
                       | CIFAR-10 binary dir | dir with train/ and test/ image folders
                       | one image folder (a seeded tenth held out as the test split)
  --device D           auto (default) | cpu | cuda
  --run DIR            run folder (default runs/<preset>-<date>-<time>)
  --resume RUN         continue RUN with its stored configuration; besides --epochs only
                       --log-every, --device, --threads, --quiet, --stream,
                       --no-cuda-graph, --cudnn-autotune and --cudnn-nondeterministic may be given
overrides of the preset:
  --epochs E           --batch B          --lr LR            --lr-steps 120,160 (or none)
  --cosine             cosine LR decay instead of steps
  --criterion C        nce | softmax (default: the preset's nce; softmax in the built-in CPU run)
  --nce-k K            NCE negatives (default 4096)       --tau T    temperature (>= 0.015)
  --lambda L           proximal term
  --z-policy P         first_batch (default) | ema | fixed: how NCE's Z is set (docs/training.md)
  --z-fixed Z          Z for --z-policy fixed (> 0)      --z-ema-decay D   decay for ema (default 0.99)
  --bank-momentum M    --bank-dtype fp32|bf16        --bank-init uniform|unit
  --softmax-math M     tf32 (default) | fp32 | bf16: the full softmax's GEMMs (bf16 needs --bank-dtype bf16)
  --width W            --image-size S     --embedding-dim D
  --weight-decay WD    --momentum M       --nesterov
  --flip P             horizontal-flip probability of the augmentation
  --seed S             weights, bank, sampling, augmentation, synthetic data
  --steps-per-epoch N  cap the steps of an epoch (quick runs)
  --knn-every N        kNN monitor on the bank every N epochs (0 = never)
  --knn-k K            neighbours of the kNN monitor and final evaluation
  --checkpoint-every N checkpoint every N epochs (and always at the end)
  --no-final-eval      skip the final evaluation (model.safetensors is still written)
  --log-every N        fetch the loss every N steps on CUDA (default 20)
  --threads T          data decoding threads
  --quiet              no progress line, epoch lines or final table (the run header, the
                       results line and errors stay)
  --no-cuda-graph      launch every step's kernels directly (default: replay a CUDA graph)
  --cudnn-autotune     time cuDNN's candidate engines per convolution once at start-up and keep the
                       fastest (like PyTorch's cudnn.benchmark; deterministic engines only, but the
                       pick, and so the rounding, may differ between runs)
  --cudnn-nondeterministic  let nondeterministic cuDNN engines (atomics) compete too, as PyTorch
                       does by default: often faster, but no two runs round alike
  --stream             decode image folders batch by batch on CPU threads instead of keeping
                       them resident (automatic above 300,000 training images)
)";

const std::set<std::string> kKnown = {
    "--help", "--preset", "--data", "--device", "--run", "--resume", "--epochs", "--batch", "--lr", "--lr-steps",
    "--cosine", "--criterion", "--nce-k", "--tau", "--lambda", "--z-policy", "--z-fixed", "--z-ema-decay", "--bank-momentum", "--bank-dtype", "--softmax-math",
    "--bank-init", "--width", "--image-size", "--embedding-dim", "--weight-decay", "--momentum", "--nesterov", "--flip",
    "--seed", "--steps-per-epoch", "--knn-every", "--knn-k", "--checkpoint-every", "--no-final-eval", "--log-every",
    "--threads", "--quiet", "--no-cuda-graph", "--cudnn-autotune", "--cudnn-nondeterministic", "--stream"};

std::vector<std::int64_t> parse_steps(const std::string& s) {
  std::vector<std::int64_t> out;
  if (s == "none" || s.empty()) return out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) {
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v < 0)
      throw OptionError("option --lr-steps expects comma-separated epochs >= 0 (or none), got '" + s + "'");
    out.push_back(v);
  }
  return out;
}

// runs/<preset>-<date>-<time>, created here (atomically: two runs started in
// the same second get -2, -3, ... instead of sharing a folder).
std::string default_run_dir(const std::string& preset) {
  const std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", std::localtime(&t));
  const std::string base = "runs/" + preset + "-" + buf;
  std::filesystem::create_directories("runs");
  for (int i = 1; i < 1000; ++i) {
    const std::string dir = i == 1 ? base : base + "-" + std::to_string(i);
    if (std::filesystem::create_directory(dir)) return dir;
  }
  throw OptionError("option --run: could not create a fresh folder " + base + "[-N] (give --run DIR)");
}

bool is_synthetic(const std::string& spec) {
  return spec.compare(0, 9, "synthetic") == 0 && (spec.size() == 9 || spec[9] == ':');
}

}  // namespace

int train_main(const std::vector<std::string>& args) {
  Options o(args,
            {"--help", "--cosine", "--nesterov", "--no-final-eval", "--quiet", "--no-cuda-graph", "--cudnn-autotune",
             "--cudnn-nondeterministic", "--stream"},
            kKnown);
  if (o.has("--help")) {
    std::cout << kHelp;
    return 0;
  }
  const std::string device = o.choice("--device", "auto", {"auto", "cpu", "cuda"});
  const bool cuda = device == "cuda" || (device == "auto" && cuda_available());
  const int threads = static_cast<int>(o.integer("--threads", 0, 0, 1024));
  const bool quiet = o.has("--quiet");

  TrainerConfig cfg;
  std::string run_dir;
  const bool resuming = o.has("--resume");
  if (resuming) {
    // Everything but these would change the stored run's configuration.
    const std::set<std::string> with_resume = {"--help",    "--resume",  "--epochs", "--log-every",
                                               "--device",  "--threads", "--quiet",  "--stream",
                                               "--no-cuda-graph", "--cudnn-autotune", "--cudnn-nondeterministic"};
    for (const std::string& opt : kKnown) {
      if (with_resume.count(opt) || !o.has(opt)) continue;
      std::string allowed;
      for (const std::string& a : with_resume)
        if (a != "--help" && a != "--resume") allowed += (allowed.empty() ? "" : ", ") + a;
      throw OptionError("option " + opt + " cannot be combined with --resume (the run's stored configuration is "
                        "used; only " + allowed + " may be given)");
    }
    run_dir = o.required("--resume");
    std::int64_t done = -1;
    cfg = Trainer::stored_config(run_dir, &done);
    const std::int64_t stored_epochs = cfg.epochs;
    cfg.epochs = o.integer("--epochs", cfg.epochs, 1, 100000);
    cfg.log_every = o.integer("--log-every", cfg.log_every, 1, 1000000);
    if (o.has("--no-cuda-graph")) cfg.step.cuda_graph = false;
    if (o.has("--cudnn-autotune")) cfg.step.model.autotune_convolutions = true;
    if (o.has("--cudnn-nondeterministic")) cfg.step.model.deterministic_convolutions = false;
    // What the checkpoint allows, checked before any data is read.
    if (done >= 0 && cfg.epochs < done)
      throw OptionError("option --epochs " + std::to_string(cfg.epochs) + ": expected at least the " +
                        std::to_string(done) + " epochs " + run_dir + " has done");
    if (cfg.cosine && cfg.epochs != stored_epochs)
      throw OptionError("option --epochs: " + run_dir + " uses the cosine schedule, whose learning rate at every "
                        "epoch depends on the total; its epochs cannot change");
    // A finished run (trained, model written, evaluated as configured) has
    // nothing left to do: say so instead of evaluating it all over again.
    // (Training removes the previous result files first, so these are the
    // finished run's own.)
    const std::filesystem::path rd(run_dir);
    if (done >= 0 && done == cfg.epochs && std::filesystem::exists(rd / "model.safetensors") &&
        (!cfg.final_eval || std::filesystem::exists(rd / "final.json"))) {
      std::printf("npid train: %s is complete (%lld of %lld epochs)%s\n", run_dir.c_str(),
                  static_cast<long long>(done), static_cast<long long>(cfg.epochs),
                  cfg.cosine ? " (a cosine run cannot be extended)" : "; --epochs N with a larger N trains further");
      return 0;
    }
  } else {
    const std::string preset = o.choice("--preset", "cifar10", {"cifar10", "imagenet"});
    cfg = TrainerConfig::from_preset(preset);
    const bool builtin = !o.has("--data");
    cfg.data = o.str("--data", "synthetic");
    // Stored as an absolute path: eval and resume work from any folder.
    if (!is_synthetic(cfg.data) && !cfg.data.empty())
      cfg.data = std::filesystem::absolute(cfg.data).lexically_normal().string();
    if (builtin) {
      if (cuda) {
        cfg.data = "synthetic:50000:10000";
        cfg.step.model.image_size = preset == "cifar10" ? 32 : 64;
      } else {
        // Small enough for two CPU cores in minutes, large enough to learn:
        // 2,000 instances at 16x16, width 16, the full softmax (with so few
        // instances NCE's noise approximation, which wants N >> K, is poor).
        cfg.data = "synthetic:2000:500";
        cfg.step.model.width = 16;
        cfg.step.model.image_size = 16;
        cfg.step.batch_size = 64;
        cfg.step.criterion = CriterionKind::kSoftmax;
        cfg.step.num_negatives = 1024;
        cfg.epochs = 25;
        cfg.lr_milestones = {20};
        cfg.knn_every = 5;
        cfg.knn_k = 50;
        if (preset == "imagenet") cfg.step.model.stem = ResNetStem::kCifar;  // 16x16 needs the CIFAR stem
      }
      cfg.step.augment.out_height = cfg.step.augment.out_width = cfg.step.model.image_size;
      if (cfg.step.augment.resize_shorter > 0) cfg.step.augment.resize_shorter = cfg.step.model.image_size * 8 / 7;
    }
    // Overrides.
    cfg.epochs = o.integer("--epochs", cfg.epochs, 1, 100000);
    cfg.step.batch_size = o.integer("--batch", cfg.step.batch_size, 2, 65535);
    cfg.lr = static_cast<float>(o.number("--lr", cfg.lr, 1e-8, 100));
    if (o.has("--lr-steps")) cfg.lr_milestones = parse_steps(o.str("--lr-steps", ""));
    cfg.cosine = o.has("--cosine");
    if (o.has("--criterion"))
      cfg.step.criterion = o.choice("--criterion", "nce", {"nce", "softmax"}) == "nce" ? CriterionKind::kNce
                                                                                    : CriterionKind::kSoftmax;
    cfg.step.num_negatives = o.integer("--nce-k", cfg.step.num_negatives, 1, 1 << 20);
    cfg.step.temperature = static_cast<float>(o.number("--tau", cfg.step.temperature, 0.015, 10));
    cfg.step.proximal_lambda = static_cast<float>(o.number("--lambda", cfg.step.proximal_lambda, 0, 1e6));
    const std::string zp = o.choice("--z-policy", "first_batch", {"first_batch", "ema", "fixed"});
    cfg.step.z_policy = zp == "ema" ? ZPolicy::kEma : zp == "fixed" ? ZPolicy::kFixed : ZPolicy::kFirstBatch;
    if (o.has("--z-fixed") != (zp == "fixed"))
      throw OptionError("options --z-policy fixed and --z-fixed Z go together, got " +
                        std::string(o.has("--z-fixed") ? "--z-fixed without --z-policy fixed"
                                                       : "--z-policy fixed without --z-fixed"));
    cfg.step.z_fixed = static_cast<float>(o.number("--z-fixed", 0, 1e-3, 1e12));
    if (o.has("--z-ema-decay") && zp != "ema")
      throw OptionError("option --z-ema-decay needs --z-policy ema, got --z-policy " + zp);
    cfg.step.z_ema_decay = static_cast<float>(o.number("--z-ema-decay", cfg.step.z_ema_decay, 0, 0.999999));
    cfg.step.bank_momentum = static_cast<float>(o.number("--bank-momentum", cfg.step.bank_momentum, 0, 0.999999));
    cfg.step.bank_dtype = o.choice("--bank-dtype", "fp32", {"fp32", "bf16"}) == "bf16" ? DType::kBFloat16 : DType::kFloat32;
    if (o.has("--softmax-math")) {
      const std::string m = o.choice("--softmax-math", "tf32", {"tf32", "fp32", "bf16"});
      cfg.step.softmax_math = m == "bf16" ? SoftmaxMath::kBF16 : m == "fp32" ? SoftmaxMath::kFP32 : SoftmaxMath::kTF32;
    }
    cfg.step.bank_init = o.choice("--bank-init", "uniform", {"uniform", "unit"}) == "unit" ? BankInit::kUnit
                                                                                         : BankInit::kUniform;
    cfg.step.model.width = o.integer("--width", cfg.step.model.width, 1, 1024);
    cfg.step.model.embedding_dim = o.integer("--embedding-dim", cfg.step.model.embedding_dim, 1, 512);
    const std::int64_t size = o.integer("--image-size", cfg.step.model.image_size, 8, 1024);
    if (size != cfg.step.model.image_size) {
      cfg.step.model.image_size = size;
      cfg.step.augment.out_height = cfg.step.augment.out_width = size;
    }
    cfg.step.sgd.weight_decay = static_cast<float>(o.number("--weight-decay", cfg.step.sgd.weight_decay, 0, 1));
    cfg.step.sgd.momentum = static_cast<float>(o.number("--momentum", cfg.step.sgd.momentum, 0, 0.999999));
    cfg.step.sgd.nesterov = o.has("--nesterov");
    cfg.step.augment.flip_p = static_cast<float>(o.number("--flip", cfg.step.augment.flip_p, 0, 1));
    cfg.step.seed = static_cast<std::uint64_t>(o.integer("--seed", 0, 0, INT64_MAX));
    cfg.data_seed = cfg.step.seed;
    cfg.steps_per_epoch = o.integer("--steps-per-epoch", cfg.steps_per_epoch, 0, INT64_MAX);
    cfg.knn_every = o.integer("--knn-every", cfg.knn_every, 0, 100000);
    cfg.knn_k = o.integer("--knn-k", cfg.knn_k, 1, kMaxKnnK);
    cfg.checkpoint_every = o.integer("--checkpoint-every", cfg.checkpoint_every, 0, 100000);
    cfg.final_eval = !o.has("--no-final-eval");
    cfg.step.cuda_graph = !o.has("--no-cuda-graph");
    cfg.step.model.autotune_convolutions = o.has("--cudnn-autotune");
    cfg.step.model.deterministic_convolutions = !o.has("--cudnn-nondeterministic");
    cfg.log_every = o.integer("--log-every", cfg.log_every, 1, 1000000);
    if (cfg.cosine && o.has("--lr-steps"))
      throw OptionError("options --cosine and --lr-steps exclude each other (cosine decay has no steps), got both");
    if (o.has("--run") && std::filesystem::exists(std::filesystem::path(o.str("--run", "")) / "checkpoint.safetensors"))
      throw OptionError("option --run " + o.str("--run", "") +
                        ": the folder already holds a run's checkpoint (continue it with --resume, or pick another)");
    if (o.has("--run") && o.str("--run", "").empty()) throw OptionError("option --run expects a folder, got ''");
    run_dir = o.str("--run", "");  // default: made once the data have loaded (no empty folders on errors)
  }
  if (device == "cuda" && !cuda_available()) throw OptionError("option --device cuda: " + cuda_status());

  // Before the data are read: a bad combination fails in a second, not after loading.
  try {
    cfg.validate();
  } catch (const Error& e) {
    throw OptionError(e.what());
  }
  DataSplits data;
  try {
    data = load_data(cfg.data, cfg.step.model.image_size, cfg.data_seed, threads, o.has("--stream"));
  } catch (const OptionError& e) {
    if (!resuming) throw;
    throw OptionError(std::string("the run's stored data (") + run_dir + "/config.json \"data\"): " + e.what());
  }
  const std::int64_t n_train = data.train_source().size();
  if (n_train < cfg.step.batch_size)
    throw OptionError("option --batch " + std::to_string(cfg.step.batch_size) + ": expected at most the " +
                      std::to_string(n_train) + " training images of " + data.description);
  if (!cuda && !resuming && o.has("--data") && cfg.step.model.width >= 64 && cfg.steps_per_epoch == 0)
    std::fprintf(stderr, "npid train: note: the %s preset on a CPU (width %lld, every image every epoch) takes a "
                 "long time per epoch; see docs/training.md, \"On a CPU\", for a small recipe\n",
                 cfg.preset.c_str(), static_cast<long long>(cfg.step.model.width));
  if (cfg.step.criterion == CriterionKind::kNce && cfg.step.num_negatives * 2 > n_train)
    std::fprintf(stderr, "npid train: note: NCE with K = %lld negatives for %lld instances: NCE approximates the "
                 "softmax only for K much smaller than N; consider --criterion softmax or a smaller --nce-k\n",
                 static_cast<long long>(cfg.step.num_negatives), static_cast<long long>(n_train));
  if (cfg.steps_per_epoch > 0 && cfg.steps_per_epoch > n_train / cfg.step.batch_size)
    std::fprintf(stderr, "npid train: note: --steps-per-epoch %lld exceeds the %lld full batches of the training "
                 "set; epochs take %lld steps\n",
                 static_cast<long long>(cfg.steps_per_epoch), static_cast<long long>(n_train / cfg.step.batch_size),
                 static_cast<long long>(n_train / cfg.step.batch_size));
  if (run_dir.empty()) run_dir = default_run_dir(cfg.preset);
  Context ctx = cuda ? Context::cuda() : Context::cpu();
  std::printf("npid train: %s, %s on %s, %s, ResNet-18 (%s stem, width %lld, %lldx%lld), B %lld, %lld epochs\n  run: %s\n",
              cfg.preset.c_str(), to_string(cfg.step.criterion), ctx.device().str().c_str(), data.description.c_str(),
              to_string(cfg.step.model.stem), static_cast<long long>(cfg.step.model.width),
              static_cast<long long>(cfg.step.model.image_size), static_cast<long long>(cfg.step.model.image_size),
              static_cast<long long>(cfg.step.batch_size), static_cast<long long>(cfg.epochs), run_dir.c_str());
  std::unique_ptr<Trainer> trainer =
      resuming ? Trainer::resume(ctx, cfg, data.train_source(), data.test_source(), run_dir)
               : std::make_unique<Trainer>(ctx, cfg, data.train_source(), data.test_source(), run_dir);
  if (cuda && (cfg.step.model.autotune_convolutions || !cfg.step.model.deterministic_convolutions))
    std::printf("  cuDNN: convolution engines %s%s\n",
                cfg.step.model.autotune_convolutions ? "autotuned (--cudnn-autotune)" : "from heuristics",
                cfg.step.model.deterministic_convolutions ? "" : ", nondeterministic ones allowed (--cudnn-nondeterministic)");
  if (resuming)
    std::printf("  resuming at epoch %lld\n", static_cast<long long>(trainer->next_epoch() + 1));
  trainer->progress = !quiet;
  trainer->run();
  if (cuda) std::printf("  CUDA graph: %s\n", trainer->step().graph_status().c_str());
  std::string files;
  for (const char* f : {"metrics.jsonl", "loss.svg", "knn.svg", "final.json", "retrieval.png", "model.safetensors",
                        "checkpoint.safetensors"}) {
    if (std::filesystem::exists(std::filesystem::path(run_dir) / f)) files += std::string(files.empty() ? "" : ",") + f;
  }
  std::printf("  results: %s/{%s}\n", run_dir.c_str(), files.c_str());
  return 0;
}

}  // namespace npid::cli

// The NPID training loop (contract in npid/trainer.h).
#include "npid/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "io/plot.h"
#include "io/atomic_file.h"
#include "npid/augment.h"
#include "npid/checkpoint.h"
#include "npid/error.h"
#include "npid/loader.h"
#include "npid/safetensors.h"

namespace npid {
namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

// ---- configuration -------------------------------------------------------------

TrainerConfig TrainerConfig::from_preset(const std::string& name) {
  TrainerConfig c;
  c.preset = name;
  if (name == "cifar10") {
    c.step.model.stem = ResNetStem::kCifar;
    c.step.model.image_size = 32;
    c.step.batch_size = 128;
    c.step.temperature = 0.1f;
    c.step.sgd.weight_decay = 5e-4f;
    c.step.augment = AugmentConfig::cifar10_train();
  } else if (name == "imagenet") {
    c.step.model.stem = ResNetStem::kImageNet;
    c.step.model.image_size = 224;
    c.step.batch_size = 256;
    c.step.temperature = 0.07f;
    c.step.sgd.weight_decay = 1e-4f;
    c.step.augment = AugmentConfig::imagenet_train();
  } else {
    NPID_CHECK_ARG(false, "TrainerConfig::from_preset", "name", "expected cifar10 or imagenet, got '" << name << "'");
  }
  c.step.num_negatives = 4096;
  c.step.bank_momentum = 0.5f;
  c.step.sgd.momentum = 0.9f;
  c.lr = 0.03f;
  c.epochs = 200;
  c.lr_milestones = {120, 160};
  c.lr_gamma = 0.1f;
  return c;
}

float TrainerConfig::lr_at(std::int64_t epoch) const {
  if (cosine) return static_cast<float>(0.5 * lr * (1.0 + std::cos(M_PI * static_cast<double>(epoch) / epochs)));
  double r = lr;
  for (std::int64_t m : lr_milestones)
    if (epoch >= m) r *= lr_gamma;
  return static_cast<float>(r);
}

void TrainerConfig::validate() const {
  constexpr const char* op = "Trainer";
  const TrainerConfig& config = *this;
  NPID_CHECK_ARG(config.epochs >= 1, op, "config.epochs", "expected >= 1, got " << config.epochs);
  NPID_CHECK_ARG(std::isfinite(config.lr) && config.lr > 0, op, "config.lr", "expected > 0, got " << config.lr);
  NPID_CHECK_ARG(config.log_every >= 1, op, "config.log_every", "expected >= 1, got " << config.log_every);
  bool utf8 = true;
  try {
    (void)config.to_json();  // JSON text must be UTF-8; config.json and checkpoints store the configuration
  } catch (const json::exception&) {
    utf8 = false;
  }
  NPID_CHECK_ARG(utf8, op, "config.data", "expected UTF-8 text (the run stores it in config.json), got '"
                                               << config.data << "'");
  NPID_CHECK_ARG(config.knn_k >= 1 && config.knn_k <= kMaxKnnK, op, "config.knn_k",
                 "expected 1.." << kMaxKnnK << ", got " << config.knn_k);
  NPID_CHECK_ARG(std::isfinite(config.lr_gamma) && config.lr_gamma >= 0, op, "config.lr_gamma",
                 "expected a finite factor >= 0, got " << config.lr_gamma);
  for (std::int64_t m : config.lr_milestones)
    NPID_CHECK_ARG(m >= 0, op, "config.lr_milestones", "expected epochs >= 0, got " << m);
  NPID_CHECK_ARG(config.knn_every >= 0 && config.checkpoint_every >= 0 && config.steps_per_epoch >= 0, op,
                 "config.knn_every, config.checkpoint_every, config.steps_per_epoch",
                 "expected >= 0, got " << config.knn_every << ", " << config.checkpoint_every << ", "
                                       << config.steps_per_epoch);
  config.step.validate();
}

namespace {

const char* z_policy_name(ZPolicy p) { return to_string(p); }

// The stored name of an enum field, one of `names` (in the order of `values`);
// any other name is an error naming the field, not a silent default.
template <typename E>
E named(const json& j, const char* key, const char* path, std::initializer_list<const char*> names,
        std::initializer_list<E> values) {
  const std::string got = j.at(key);
  std::string expected;
  auto v = values.begin();
  for (const char* n : names) {
    if (got == n) return *v;
    ++v;
    expected += std::string(expected.empty() ? "" : " | ") + n;
  }
  throw Error(ErrorKind::kIo, std::string("trainer configuration: ") + path + ": expected " + expected +
                                  ", got '" + got + "'");
}

json augment_json(const AugmentConfig& a) {
  return {{"out_height", a.out_height}, {"out_width", a.out_width}, {"train", a.train},
          {"scale_min", a.scale_min},   {"scale_max", a.scale_max}, {"ratio_min", a.ratio_min},
          {"ratio_max", a.ratio_max},   {"brightness", a.brightness}, {"contrast", a.contrast},
          {"saturation", a.saturation}, {"hue", a.hue},             {"grayscale_p", a.grayscale_p},
          {"grayscale_first", a.grayscale_first}, {"flip_p", a.flip_p}, {"resize_shorter", a.resize_shorter},
          {"mean", {a.mean[0], a.mean[1], a.mean[2]}}, {"std", {a.std[0], a.std[1], a.std[2]}}};
}

AugmentConfig augment_from(const json& j) {
  AugmentConfig a;
  a.out_height = j.at("out_height");
  a.out_width = j.at("out_width");
  a.train = j.at("train");
  a.scale_min = j.at("scale_min");
  a.scale_max = j.at("scale_max");
  a.ratio_min = j.at("ratio_min");
  a.ratio_max = j.at("ratio_max");
  a.brightness = j.at("brightness");
  a.contrast = j.at("contrast");
  a.saturation = j.at("saturation");
  a.hue = j.at("hue");
  a.grayscale_p = j.at("grayscale_p");
  a.grayscale_first = j.at("grayscale_first");
  a.flip_p = j.at("flip_p");
  a.resize_shorter = j.at("resize_shorter");
  for (int i = 0; i < 3; ++i) {
    a.mean[i] = j.at("mean").at(i);
    a.std[i] = j.at("std").at(i);
  }
  return a;
}

const char* softmax_math_name(SoftmaxMath m) {
  return m == SoftmaxMath::kFP32 ? "fp32" : m == SoftmaxMath::kBF16 ? "bf16" : "tf32";
}
SoftmaxMath softmax_math_from(const std::string& name) {
  if (name == "tf32") return SoftmaxMath::kTF32;
  if (name == "fp32") return SoftmaxMath::kFP32;
  if (name == "bf16") return SoftmaxMath::kBF16;
  throw Error(ErrorKind::kIo, "trainer configuration: step.softmax_math: expected tf32, fp32 or bf16, got '" + name + "'");
}

json config_json(const TrainerConfig& c) {
  const TrainStepConfig& s = c.step;
  json model = {{"stem", to_string(s.model.stem)},         {"width", s.model.width},
                {"embedding_dim", s.model.embedding_dim},   {"image_size", s.model.image_size},
                {"bn_eps", s.model.bn_eps},                 {"bn_momentum", s.model.bn_momentum},
                {"tf32_convolutions", s.model.tf32_convolutions},
                {"autotune_convolutions", s.model.autotune_convolutions},
                {"deterministic_convolutions", s.model.deterministic_convolutions}};
  json step = {{"model", model},
               {"criterion", to_string(s.criterion)},
               {"num_negatives", s.num_negatives},
               {"temperature", s.temperature},
               {"proximal_lambda", s.proximal_lambda},
               {"z_policy", z_policy_name(s.z_policy)},
               {"z_fixed", s.z_fixed},
               {"z_ema_decay", s.z_ema_decay},
               {"bank_momentum", s.bank_momentum},
               {"bank_dtype", s.bank_dtype == DType::kBFloat16 ? "bf16" : "fp32"},
               {"softmax_math", softmax_math_name(s.softmax_math)},
               {"bank_init", to_string(s.bank_init)},
               {"sgd", {{"momentum", s.sgd.momentum}, {"weight_decay", s.sgd.weight_decay}, {"nesterov", s.sgd.nesterov}}},
               {"batch_size", s.batch_size},
               {"cuda_graph", s.cuda_graph},
               {"augment", augment_json(s.augment)},
               {"seed", s.seed}};
  return {{"preset", c.preset},       {"epochs", c.epochs},
          {"lr", c.lr},               {"lr_milestones", c.lr_milestones},
          {"lr_gamma", c.lr_gamma},   {"cosine", c.cosine},
          {"steps_per_epoch", c.steps_per_epoch}, {"knn_every", c.knn_every},
          {"knn_k", c.knn_k},         {"checkpoint_every", c.checkpoint_every},
          {"final_eval", c.final_eval}, {"log_every", c.log_every},
          {"data", c.data},           {"data_seed", c.data_seed},
          {"step", step}};
}

}  // namespace

std::string TrainerConfig::to_json() const { return config_json(*this).dump(2); }

TrainerConfig TrainerConfig::from_json(const std::string& text) {
  try {
    const json j = json::parse(text);
    TrainerConfig c;
    c.preset = j.at("preset");
    c.epochs = j.at("epochs");
    c.lr = j.at("lr");
    c.lr_milestones = j.at("lr_milestones").get<std::vector<std::int64_t>>();
    c.lr_gamma = j.at("lr_gamma");
    c.cosine = j.at("cosine");
    c.steps_per_epoch = j.at("steps_per_epoch");
    c.knn_every = j.at("knn_every");
    c.knn_k = j.at("knn_k");
    c.checkpoint_every = j.at("checkpoint_every");
    c.final_eval = j.at("final_eval");
    c.log_every = j.at("log_every");
    c.data = j.at("data");
    c.data_seed = j.at("data_seed");
    const json& s = j.at("step");
    const json& m = s.at("model");
    c.step.model.stem = named(m, "stem", "step.model.stem", {to_string(ResNetStem::kCifar), to_string(ResNetStem::kImageNet)},
                              {ResNetStem::kCifar, ResNetStem::kImageNet});
    c.step.model.width = m.at("width");
    c.step.model.embedding_dim = m.at("embedding_dim");
    c.step.model.image_size = m.at("image_size");
    c.step.model.bn_eps = m.at("bn_eps");
    c.step.model.bn_momentum = m.at("bn_momentum");
    c.step.model.tf32_convolutions = m.at("tf32_convolutions");
    c.step.model.autotune_convolutions = m.value("autotune_convolutions", false);  // absent in older runs
    c.step.model.deterministic_convolutions = m.value("deterministic_convolutions", true);
    c.step.criterion = named(s, "criterion", "step.criterion", {to_string(CriterionKind::kNce), to_string(CriterionKind::kSoftmax)},
                             {CriterionKind::kNce, CriterionKind::kSoftmax});
    c.step.num_negatives = s.at("num_negatives");
    c.step.temperature = s.at("temperature");
    c.step.proximal_lambda = s.at("proximal_lambda");
    c.step.z_policy = named(s, "z_policy", "step.z_policy",
                            {to_string(ZPolicy::kFirstBatch), to_string(ZPolicy::kEma), to_string(ZPolicy::kFixed)},
                            {ZPolicy::kFirstBatch, ZPolicy::kEma, ZPolicy::kFixed});
    c.step.z_fixed = s.value("z_fixed", 0.0f);        // absent in runs stored before it was configurable
    c.step.z_ema_decay = s.value("z_ema_decay", 0.99f);
    c.step.bank_momentum = s.at("bank_momentum");
    c.step.bank_dtype = named(s, "bank_dtype", "step.bank_dtype", {"fp32", "bf16"}, {DType::kFloat32, DType::kBFloat16});
    c.step.softmax_math = softmax_math_from(s.value("softmax_math", "tf32"));  // absent before 0.1 runs: tf32
    c.step.bank_init = named(s, "bank_init", "step.bank_init", {to_string(BankInit::kUniform), to_string(BankInit::kUnit)},
                             {BankInit::kUniform, BankInit::kUnit});
    c.step.sgd.momentum = s.at("sgd").at("momentum");
    c.step.sgd.weight_decay = s.at("sgd").at("weight_decay");
    c.step.sgd.nesterov = s.at("sgd").at("nesterov");
    c.step.batch_size = s.at("batch_size");
    c.step.cuda_graph = s.value("cuda_graph", true);
    c.step.augment = augment_from(s.at("augment"));
    c.step.seed = s.at("seed");
    return c;
  } catch (const json::exception& e) {
    throw Error(ErrorKind::kIo, std::string("trainer configuration: not a valid document: ") + e.what());
  }
}

// ---- the trainer --------------------------------------------------------------------

struct Trainer::Impl {
  Context* ctx = nullptr;
  TrainerConfig cfg;
  std::string dir;
  // Owned copies of the splits: decoded sets, or folder indexes (streaming).
  ImageSet train_set, test_set, resident;
  ImageFolderIndex train_folder, test_folder;
  bool train_streaming = false, test_streaming = false;
  std::unique_ptr<Loader> loader;  // streaming training
  std::unique_ptr<TrainStep> step;
  Tensor perm;
  std::vector<EpochMetrics> history;
  std::optional<EvalReport> final_report;
  std::int64_t next_epoch = 0;

  std::string path(const char* name) const { return (fs::path(dir) / name).string(); }

  DataSource train() const {
    return train_streaming ? DataSource(train_folder) : DataSource(train_set);
  }
  DataSource test() const { return test_streaming ? DataSource(test_folder) : DataSource(test_set); }

  void setup(Context& c, const TrainerConfig& config, const DataSource& tr, const DataSource& te,
             const std::string& d) {
    constexpr const char* op = "Trainer";
    config.validate();
    NPID_CHECK_ARG(tr.size() >= config.step.batch_size, op, "train",
                   "expected at least one batch of " << config.step.batch_size << " images, got " << tr.size());
    NPID_CHECK_ARG(te.size() >= 1, op, "test", "expected a non-empty test set, got 0 images");
    ctx = &c;
    cfg = config;
    cfg.step.validate_indices = false;  // indices come from the epoch permutation
    dir = d;
    for (const DataSource* src : {&tr, &te}) {
      NPID_CHECK_ARG(src->streaming() || !src->images->device().is_cuda(), op, "train, test",
                     "expected host image sets or image folders, got a set on " << src->images->device().str());
    }
    train_streaming = tr.streaming();
    test_streaming = te.streaming();
    if (train_streaming) {
      train_folder = *tr.folder;
    } else {
      train_set = tr.images->slice(0, tr.size());
    }
    if (test_streaming) {
      test_folder = *te.folder;
    } else {
      test_set = te.images->slice(0, te.size());
    }
    step = std::make_unique<TrainStep>(c, cfg.step, tr.size());
    if (train_streaming) {
      LoaderConfig lc;
      lc.batch_size = cfg.step.batch_size;
      lc.augment = cfg.step.augment;
      lc.seed = cfg.step.seed;  // the order and augmentation of the resident path
      loader = std::make_unique<Loader>(Loader::streaming(c, train_folder, lc));
    } else {
      resident = train_set.to(c);
      perm = Tensor({tr.size()}, DType::kInt64, c.device());
    }
  }

  std::int64_t steps_per_epoch() const {
    std::int64_t n = train().size() / cfg.step.batch_size;
    if (cfg.steps_per_epoch > 0) n = std::min(n, cfg.steps_per_epoch);
    return n;
  }

  static json metrics_json(const EpochMetrics& m) {
    json j = {{"epoch", m.epoch}, {"steps", m.steps}, {"loss", m.loss}, {"lr", m.lr},
              {"images_per_s", m.images_per_s}, {"seconds", m.seconds}, {"z", m.z}};
    if (m.knn_top1 >= 0) {
      j["knn_top1"] = m.knn_top1;
      j["knn_seconds"] = m.knn_seconds;
    }
    return j;
  }

  void write_metrics_and_plots() const {
    std::string lines;
    for (const EpochMetrics& m : history) lines += metrics_json(m).dump() + "\n";
    write_text_atomic(path("metrics.jsonl"), lines);
    PlotSeries loss{"training loss", {}, {}}, knn{"kNN top-1 (memory bank)", {}, {}};
    for (const EpochMetrics& m : history) {
      loss.x.push_back(static_cast<double>(m.epoch + 1));
      loss.y.push_back(m.loss);
      if (m.knn_top1 >= 0) {
        knn.x.push_back(static_cast<double>(m.epoch + 1));
        knn.y.push_back(100.0 * m.knn_top1);
      }
    }
    const std::string what = std::string(to_string(cfg.step.criterion)) + ", " + cfg.preset;
    write_svg_plot(path("loss.svg"), "training loss (" + what + ")", "epoch", "loss", {loss});
    if (!knn.y.empty())  // no kNN monitor (knn_every 0): no empty plot
      write_svg_plot(path("knn.svg"), "weighted kNN top-1 on the test split", "epoch", "accuracy (%)", {knn});
  }

  void save_checkpoint() const {
    TrainStep& s = *step;
    std::vector<NamedTensor> ts = model_state(*ctx, s.net());
    ts.push_back(to_named(*ctx, "memory_bank", s.bank().view()));
    ts.push_back(to_named(*ctx, "optimizer.momentum_buffer", s.optimizer().momentum_buffer()));
    NamedTensor z;
    z.name = "trainer.z";
    z.dtype = DType::kFloat32;
    z.bytes.resize(4);
    const float zv = s.z();
    std::memcpy(z.bytes.data(), &zv, 4);
    ts.push_back(z);
    const json state = {{"next_epoch", next_epoch},
                        {"steps_done", s.steps_done()},
                        {"z_initialized", s.z_initialized()},
                        {"sgd_started", s.optimizer().started()}};
    save_safetensors(path("checkpoint.safetensors"), ts,
                     {{"npid.model", model_config_json(cfg.step.model)},
                      {"npid.config", cfg.to_json()},
                      {"npid.trainer", state.dump()},
                      {"npid.data_seed", std::to_string(cfg.data_seed)},
                      {"format", "pt"}});
  }

  double knn_monitor() {
    const DataSource tr = train(), te = test();
    const Tensor features = embed_dataset(*ctx, step->net(), te, eval_transform_for(cfg.step.model));
    Tensor test_labels({te.size()}, DType::kInt64, ctx->device()), train_labels({tr.size()}, DType::kInt64, ctx->device());
    copy(*ctx, test_labels, view(te.labels().data(), {te.size()}));
    copy(*ctx, train_labels, view(tr.labels().data(), {tr.size()}));
    KnnConfig kc;
    kc.k = std::min(cfg.knn_k, tr.size());
    kc.sigma = cfg.step.temperature;
    kc.num_classes = std::max(tr.num_classes(), te.num_classes());
    return knn_classify(*ctx, kc, features, test_labels, step->bank().view(), train_labels).top1;
  }
};

Trainer::Trainer() : impl_(std::make_unique<Impl>()) {}

Trainer::Trainer(Context& ctx, const TrainerConfig& config, const DataSource& train, const DataSource& test,
                 const std::string& run_dir)
    : impl_(std::make_unique<Impl>()) {
  std::error_code ec;
  if (fs::exists(fs::path(run_dir) / "checkpoint.safetensors", ec)) {
    throw Error(ErrorKind::kIo, run_dir + ": already holds a checkpoint; resume it (npid train --resume " + run_dir +
                                    ") or choose another run folder");
  }
  impl_->setup(ctx, config, train, test, run_dir);
  fs::create_directories(run_dir, ec);
  if (ec) throw Error(ErrorKind::kIo, run_dir + ": cannot create the run folder: " + ec.message());
  write_text_atomic(impl_->path("config.json"), impl_->cfg.to_json() + "\n");
}

Trainer::~Trainer() = default;

namespace {

// The configuration stored in checkpoint `f` (read from path p).
TrainerConfig config_of(const SafetensorsFile& f, const std::string& p) {
  const auto it = f.metadata.find("npid.config");
  if (it == f.metadata.end()) throw Error(ErrorKind::kIo, p + ": no 'npid.config' metadata (not a training checkpoint)");
  try {
    return TrainerConfig::from_json(it->second);
  } catch (const Error& e) {
    throw Error(ErrorKind::kIo, p + ": " + e.what());
  }
}

}  // namespace

TrainerConfig Trainer::stored_config(const std::string& run_dir, std::int64_t* epochs_done) {
  const std::string p = (fs::path(run_dir) / "checkpoint.safetensors").string();
  const SafetensorsFile f = load_safetensors(p);
  if (epochs_done != nullptr) {
    *epochs_done = -1;
    try {
      const auto it = f.metadata.find("npid.trainer");
      if (it != f.metadata.end()) *epochs_done = json::parse(it->second).at("next_epoch").get<std::int64_t>();
    } catch (const json::exception&) {
      *epochs_done = -1;  // resume() reports the damage
    }
  }
  return config_of(f, p);
}

namespace {

// The first differing leaf of two JSON documents ("" when equal).
std::string first_difference(const json& a, const json& b, const std::string& prefix, std::string* va, std::string* vb) {
  if (a.is_object() && b.is_object()) {
    for (auto it = a.begin(); it != a.end(); ++it) {
      const std::string key = prefix.empty() ? it.key() : prefix + "." + it.key();
      if (!b.contains(it.key())) {
        *va = it.value().dump();
        *vb = "(absent)";
        return key;
      }
      const std::string d = first_difference(it.value(), b.at(it.key()), key, va, vb);
      if (!d.empty()) return d;
    }
    return "";
  }
  if (a != b) {
    *va = a.dump();
    *vb = b.dump();
    return prefix;
  }
  return "";
}

}  // namespace

std::unique_ptr<Trainer> Trainer::resume(Context& ctx, const TrainerConfig& config, const DataSource& train,
                                         const DataSource& test, const std::string& run_dir) {
  const std::string p = (fs::path(run_dir) / "checkpoint.safetensors").string();
  const SafetensorsFile f = load_safetensors(p);  // kIo when missing / truncated / corrupt
  const TrainerConfig stored = config_of(f, p);  // the same file: one read
  json a = config_json(stored), b = config_json(config);
  for (json* j : {&a, &b}) {  // fields that do not change the computation
    j->erase("epochs");
    j->erase("log_every");
    j->at("step").erase("cuda_graph");
    j->at("step").at("model").erase("autotune_convolutions");  // engine choice: rounding only
    j->at("step").at("model").erase("deterministic_convolutions");
  }
  std::string va, vb;
  const std::string diff = first_difference(a, b, "", &va, &vb);
  NPID_CHECK_ARG(diff.empty(), "Trainer::resume", "config",
                 "expected " << diff << " = " << va << " as in " << p << ", got " << vb);
  json state;
  try {
    state = json::parse(f.metadata.at("npid.trainer"));
  } catch (const std::exception& e) {
    throw Error(ErrorKind::kIo, p + ": bad 'npid.trainer' metadata: " + e.what());
  }
  // The trainer state, checked before anything is set up: a checkpoint that
  // fails here is damaged (kIo), not a caller's mistake.
  std::int64_t steps_done = 0, next_epoch = 0;
  bool z_initialized = false, sgd_started = false;
  try {
    steps_done = state.at("steps_done").get<std::int64_t>();
    next_epoch = state.at("next_epoch").get<std::int64_t>();
    z_initialized = state.at("z_initialized").get<bool>();
    sgd_started = state.at("sgd_started").get<bool>();
  } catch (const json::exception& e) {
    throw Error(ErrorKind::kIo, p + ": bad 'npid.trainer' metadata: " + e.what());
  }
  if (steps_done < 0 || next_epoch < 0)
    throw Error(ErrorKind::kIo, p + ": bad 'npid.trainer' metadata: steps_done " + std::to_string(steps_done) +
                                    ", next_epoch " + std::to_string(next_epoch) + " (expected >= 0)");
  const NamedTensor* stored_bank = f.find("memory_bank");
  if (stored_bank == nullptr || stored_bank->shape.size() != 2)
    throw Error(ErrorKind::kIo, p + ": has no 'memory_bank' matrix (not a training checkpoint, or damaged)");
  // Epochs may change, but not below the epochs done, nor under the cosine
  // schedule, whose learning rate at every epoch depends on the total.
  NPID_CHECK_ARG(config.epochs >= next_epoch, "Trainer::resume", "config.epochs",
                 "expected at least the " << next_epoch << " epochs " << p << " has done, got " << config.epochs);
  NPID_CHECK_ARG(!stored.cosine || config.epochs == stored.epochs, "Trainer::resume", "config.epochs",
                 "expected " << stored.epochs << " as in " << p << " (the cosine schedule's LR depends on it), got "
                             << config.epochs);
  std::unique_ptr<Trainer> t(new Trainer());
  Impl& m = *t->impl_;
  m.setup(ctx, config, train, test, run_dir);
  NPID_CHECK_ARG(stored_bank->shape[0] == train.size(), "Trainer::resume", "train",
                 "expected the " << stored_bank->shape[0] << " training images of the checkpoint's memory bank, got "
                                 << train.size());
  TrainStep& s = *m.step;
  // Validate every tensor before writing any state.
  const auto& bank = f.require("memory_bank", s.bank().storage(), {train.size(), s.bank().dim()}, p);
  const auto& mom = f.require("optimizer.momentum_buffer", DType::kFloat32, {s.optimizer().momentum_buffer().numel()}, p);
  const auto& z = f.require("trainer.z", DType::kFloat32, {}, p);
  load_model_state(ctx, s.net(), f, p);
  copy(ctx, s.bank().view(), TensorView(const_cast<std::uint8_t*>(bank.bytes.data()), bank.dtype,
                                        s.bank().view().shape, Device::cpu()));
  copy(ctx, s.optimizer().momentum_buffer(),
       TensorView(const_cast<std::uint8_t*>(mom.bytes.data()), DType::kFloat32, {s.optimizer().momentum_buffer().numel()},
                  Device::cpu()));
  float zv = 0;
  std::memcpy(&zv, z.bytes.data(), 4);
  if (z_initialized && config.step.criterion == CriterionKind::kNce && !(std::isfinite(zv) && zv > 0.0f))
    throw Error(ErrorKind::kIo, p + ": 'trainer.z' is " + std::to_string(zv) +
                                    ", expected a finite Z > 0 (the run diverged before this checkpoint?)");
  s.restore(steps_done, zv, z_initialized, sgd_started);
  m.next_epoch = next_epoch;
  // The history up to the checkpoint (later lines came from epochs after it).
  // JSON has no NaN or infinity: a diverged epoch's loss (or Z) was written
  // as null, and reads back as NaN. A line that does not parse (a file edited
  // by hand) is skipped, not the rest of the history with it.
  std::ifstream in(m.path("metrics.jsonl"));
  auto number = [](const json& j, const char* key) {
    const json& v = j.at(key);
    return v.is_null() ? std::numeric_limits<double>::quiet_NaN() : v.get<double>();
  };
  for (std::string line; std::getline(in, line);) {
    try {
      const json j = json::parse(line);
      EpochMetrics e;
      e.epoch = j.at("epoch");
      if (e.epoch >= m.next_epoch) continue;
      e.steps = j.at("steps");
      e.loss = number(j, "loss");
      e.lr = number(j, "lr");
      e.images_per_s = number(j, "images_per_s");
      e.seconds = number(j, "seconds");
      e.z = number(j, "z");
      e.knn_top1 = j.contains("knn_top1") ? number(j, "knn_top1") : -1.0;
      e.knn_seconds = j.contains("knn_seconds") ? number(j, "knn_seconds") : 0.0;
      m.history.push_back(e);
    } catch (const json::exception&) {
      continue;
    }
  }
  write_text_atomic(m.path("config.json"), m.cfg.to_json() + "\n");
  return t;
}

void Trainer::run(std::int64_t stop_after_epoch) {
  Impl& m = *impl_;
  Context& ctx = *m.ctx;
  const std::int64_t B = m.cfg.step.batch_size, nb = m.steps_per_epoch();
  const bool tty = progress && ::isatty(STDOUT_FILENO);
  const auto run_start = std::chrono::steady_clock::now();
  std::int64_t steps_this_run = 0;
  if (m.next_epoch < m.cfg.epochs && (stop_after_epoch < 0 || m.next_epoch <= stop_after_epoch)) {
    // Training moves on: the results of an earlier end (a run extended with
    // more epochs) no longer describe the model; they are made again at the end.
    for (const char* f : {"final.json", "retrieval.png", "model.safetensors"}) {
      std::error_code ec;
      fs::remove(m.path(f), ec);
    }
    m.final_report.reset();
  }
  for (std::int64_t e = m.next_epoch; e < m.cfg.epochs; ++e) {
    if (stop_after_epoch >= 0 && e > stop_after_epoch) break;
    const float lr = m.cfg.lr_at(e);
    if (m.loader) {
      m.loader->start_epoch(e);
    } else {
      epoch_permutation(ctx, m.cfg.step.seed, static_cast<std::uint64_t>(e), m.perm);
    }
    const auto t0 = std::chrono::steady_clock::now();
    double loss_sum = 0, z = 0;
    std::int64_t loss_count = 0;
    auto last_print = t0;
    for (std::int64_t b = 0; b < nb; ++b) {
      const bool fetch = !ctx.is_cuda() || b % m.cfg.log_every == 0 || b + 1 == nb;
      StepStats st;
      if (m.loader) {
        Batch batch;
        if (!m.loader->next(&batch)) break;
        st = m.step->step_images(batch.images, batch.indices, lr, fetch);
      } else {
        const TensorView idx(m.perm.data_as<std::int64_t>() + b * B, DType::kInt64, {B}, ctx.device());
        st = m.step->step(m.resident, idx, e, lr, fetch);
      }
      ++steps_this_run;
      if (fetch) {
        loss_sum += st.loss;
        ++loss_count;
        z = st.z;
      }
      if (on_step) on_step(e, b, nb, st.loss);
      const auto now = std::chrono::steady_clock::now();
      if (tty && (std::chrono::duration<double>(now - last_print).count() > 0.25 || b + 1 == nb)) {
        last_print = now;
        const double elapsed = std::chrono::duration<double>(now - run_start).count();
        const double per_step = elapsed / static_cast<double>(steps_this_run);
        const double remaining = per_step * static_cast<double>((m.cfg.epochs - e - 1) * nb + (nb - b - 1));
        const int bar = static_cast<int>(20 * (b + 1) / nb);
        std::printf("\repoch %lld/%lld [%.*s%*s] %lld/%lld loss %.4f %.0f img/s ETA %02d:%02d:%02d ",
                    static_cast<long long>(e + 1), static_cast<long long>(m.cfg.epochs), bar, "####################",
                    20 - bar, "", static_cast<long long>(b + 1), static_cast<long long>(nb),
                    loss_count ? loss_sum / loss_count : 0.0,
                    static_cast<double>((b + 1) * B) / std::chrono::duration<double>(now - t0).count(),
                    static_cast<int>(remaining / 3600),
                    static_cast<int>(remaining / 60) % 60, static_cast<int>(remaining) % 60);
        std::fflush(stdout);
      }
    }
    ctx.synchronize();
    EpochMetrics em;
    em.epoch = e;
    em.steps = nb;
    em.loss = loss_count ? loss_sum / loss_count : std::nan("");
    em.lr = lr;
    em.z = z;
    em.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    em.images_per_s = static_cast<double>(nb * B) / em.seconds;
    const bool last = e + 1 == m.cfg.epochs;
    if (m.cfg.knn_every > 0 && ((e + 1) % m.cfg.knn_every == 0 || last)) {
      const auto k0 = std::chrono::steady_clock::now();
      em.knn_top1 = m.knn_monitor();
      em.knn_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - k0).count();
    }
    m.history.push_back(em);
    m.next_epoch = e + 1;
    m.write_metrics_and_plots();
    if ((m.cfg.checkpoint_every > 0 && (e + 1) % m.cfg.checkpoint_every == 0) || last ||
        (stop_after_epoch >= 0 && e == stop_after_epoch)) {
      m.save_checkpoint();
    }
    if (progress) {
      char knn[64] = "";
      if (em.knn_top1 >= 0)
        std::snprintf(knn, sizeof knn, ", kNN top-1 %.2f %% (%.1f s)", 100 * em.knn_top1, em.knn_seconds);
      std::printf("%sepoch %lld/%lld: loss %.4f, lr %.4g, %.0f img/s%s, %.1f s\n", tty ? "\r\033[K" : "",
                  static_cast<long long>(e + 1), static_cast<long long>(m.cfg.epochs), em.loss, em.lr,
                  em.images_per_s, knn, em.seconds);
      std::fflush(stdout);
    }
  }
  if (m.next_epoch != m.cfg.epochs) return;
  // The trained model, with or without the final evaluation: the network
  // alone in PyTorch layout, plus the run's configuration (npid eval reads
  // its tau, kNN k and data from it).
  save_safetensors(m.path("model.safetensors"), model_state(ctx, m.step->net()),
                   {{"npid.model", model_config_json(m.cfg.step.model)},
                    {"npid.config", m.cfg.to_json()},
                    {"npid.data_seed", std::to_string(m.cfg.data_seed)},
                    {"format", "pt"}});
  if (m.cfg.final_eval && !m.final_report) {
    EvalConfig ec;
    ec.knn.k = std::min(m.cfg.knn_k, m.train().size());
    ec.knn.sigma = m.cfg.step.temperature;
    ec.retrieval_png = m.path("retrieval.png");
    if (progress) {
      std::printf("final evaluation: embedding %lld train and %lld test images, kNN, linear classifier...\n",
                  static_cast<long long>(m.train().size()), static_cast<long long>(m.test().size()));
      std::fflush(stdout);
    }
    m.final_report = evaluate(ctx, ec, m.step->net(), m.train(), m.test(), m.step->bank().view());
    write_text_atomic(m.path("final.json"), m.final_report->to_json() + "\n");
    if (progress) std::printf("%s", m.final_report->to_table().c_str());
  }
}

TrainStep& Trainer::step() { return *impl_->step; }
std::int64_t Trainer::next_epoch() const { return impl_->next_epoch; }
const std::vector<EpochMetrics>& Trainer::history() const { return impl_->history; }
const std::optional<EvalReport>& Trainer::final_report() const { return impl_->final_report; }
void Trainer::save_checkpoint() const { impl_->save_checkpoint(); }

}  // namespace npid

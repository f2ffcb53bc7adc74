// TrainStep and Trainer on the CPU backend: the loss falls, bank rows stay
// unit and move, two runs with one seed are identical, a resumed run equals
// the uninterrupted one bit for bit, and bad checkpoints / configurations
// are refused without touching the run folder.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/test_util.h"

using namespace npid;
namespace fs = std::filesystem;

namespace {

TrainerConfig tiny_config(CriterionKind criterion) {
  TrainerConfig c = TrainerConfig::from_preset("cifar10");
  c.step.model.width = 4;
  c.step.model.image_size = 8;
  c.step.model.embedding_dim = 16;
  c.step.augment.out_height = c.step.augment.out_width = 8;
  c.step.batch_size = 16;
  c.step.num_negatives = 32;
  c.step.criterion = criterion;
  c.step.seed = 5;
  c.epochs = 3;
  c.lr_milestones = {2};
  c.knn_every = 1;
  c.knn_k = 10;
  c.final_eval = false;
  return c;
}

ImageSet images(std::int64_t n, std::uint64_t seed) {
  SyntheticConfig sc;
  sc.count = n;
  sc.image_size = 8;
  sc.seed = seed;
  return make_synthetic(sc);
}

struct TempRun {
  std::string dir;
  explicit TempRun(const std::string& name)
      : dir((fs::temp_directory_path() / ("npid_run_" + std::to_string(::getpid()) + "_" + name)).string()) {
    fs::remove_all(dir);
  }
  ~TempRun() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

std::vector<std::uint8_t> read_all(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Every tensor of a checkpoint (model, bank, momentum, z).
std::vector<NamedTensor> state_of(const std::string& dir) {
  return load_safetensors((fs::path(dir) / "checkpoint.safetensors").string()).tensors;
}

}  // namespace

TEST_CASE("TrainStep: the loss falls and the bank rows move and stay unit (NCE and softmax)", "[train]") {
  Context ctx = Context::cpu();
  for (CriterionKind kind : {CriterionKind::kSoftmax, CriterionKind::kNce}) {
    INFO(to_string(kind));
    // NCE needs N >> K (a positive drawn among its own negatives costs
    // log(1 + P_pos), which grows as training succeeds): 1,024 instances, K = 32.
    TrainStepConfig cfg = tiny_config(kind).step;
    cfg.batch_size = 32;
    const ImageSet set = images(1024, 1);
    TrainStep step(ctx, cfg, set.size());
    std::vector<std::int64_t> idx(32);
    for (int i = 0; i < 32; ++i) idx[i] = i * 31;
    const std::vector<float> bank0(static_cast<const float*>(step.bank().view().data),
                                   static_cast<const float*>(step.bank().view().data) + 1024 * 16);
    std::vector<float> losses;
    for (int s = 0; s < 40; ++s) losses.push_back(step.step(set, view(idx.data(), {32}), s, 0.05f).loss);
    REQUIRE(step.steps_done() == 40);
    double first = 0, last = 0;
    for (int s = 0; s < 5; ++s) {
      first += losses[s];
      last += losses[35 + s];
    }
    REQUIRE(last < first);
    const auto* bank = static_cast<const float*>(step.bank().view().data);
    double moved = 0;
    for (std::int64_t r : idx) {
      double norm = 0;
      for (int d = 0; d < 16; ++d) {
        norm += double(bank[r * 16 + d]) * bank[r * 16 + d];
        moved += std::fabs(bank[r * 16 + d] - bank0[r * 16 + d]);
      }
      REQUIRE(std::sqrt(norm) == Approx(1.0).margin(1e-5));
    }
    REQUIRE(moved > 1.0);
  }
}

TEST_CASE("TrainStep rejects bad input naming it", "[train][errors]") {
  Context ctx = Context::cpu();
  const TrainStepConfig cfg = tiny_config(CriterionKind::kNce).step;
  const ImageSet set = images(32, 1);
  TrainStep step(ctx, cfg, 32);
  std::vector<std::int64_t> idx(16, 3);
  idx[5] = 32;
  test::require_error([&] { step.step(set, view(idx.data(), {16}), 0, 0.1f); }, ErrorKind::kInvalidArgument,
                      {"TrainStep::step", "indices"});
  idx[5] = 1;
  test::require_error([&] { step.step(set, view(idx.data(), {16}), 0, -1.0f); }, ErrorKind::kInvalidArgument,
                      {"TrainStep::step", "lr"});
  std::vector<std::int64_t> big(17, 0);
  test::require_error([&] { step.step(set, view(big.data(), {17}), 0, 0.1f); }, ErrorKind::kInvalidArgument,
                      {"indices", "batch_size 16", "17"});
  REQUIRE(step.steps_done() == 0);
  TrainStepConfig bad = cfg;
  bad.augment.out_height = 16;
  test::require_error([&] { TrainStep s(ctx, bad, 32); }, ErrorKind::kInvalidArgument, {"config.augment", "8 x 8"});
  bad = tiny_config(CriterionKind::kSoftmax).step;
  bad.softmax_math = SoftmaxMath::kBF16;  // needs a bf16 bank
  test::require_error([&] { TrainStep s(ctx, bad, 32); }, ErrorKind::kInvalidArgument,
                      {"config.softmax_math", "bf16 bank", "float32"});
  bad.bank_dtype = DType::kBFloat16;
  TrainStep ok(ctx, bad, 32);  // accepted (on the CPU the math is exact fp32 whatever it says)
  REQUIRE(ok.steps_done() == 0);
}

TEST_CASE("TrainStep with a fixed Z: Z stays the configured value, and a run with Z fixed at the first batch's "
          "estimate equals the first_batch run; without a Z it is refused",
          "[train]") {
  Context ctx = Context::cpu();
  TrainStepConfig cfg = tiny_config(CriterionKind::kNce).step;
  cfg.z_policy = ZPolicy::kFixed;
  test::require_error([&] { TrainStep s(ctx, cfg, 64); }, ErrorKind::kInvalidArgument,
                      {"TrainStep", "config.z_fixed", "got 0"});
  cfg.z_fixed = -1.0f;
  test::require_error([&] { TrainStep s(ctx, cfg, 64); }, ErrorKind::kInvalidArgument, {"config.z_fixed", "got -1"});
  cfg.z_fixed = 1.0f;
  cfg.z_ema_decay = 1.0f;
  test::require_error([&] { TrainStep s(ctx, cfg, 64); }, ErrorKind::kInvalidArgument,
                      {"config.z_ema_decay", "[0, 1)", "got 1"});
  cfg.z_ema_decay = 0.99f;

  const ImageSet set = images(1024, 1);
  std::vector<std::int64_t> idx(32);
  auto batch = [&](int s) {
    for (int i = 0; i < 32; ++i) idx[i] = (s * 32 + i) * 37 % 1024;
    return view(idx.data(), {32});
  };
  // first_batch estimates Z once, from the first batch, and keeps it.
  TrainStepConfig fb = tiny_config(CriterionKind::kNce).step;
  fb.batch_size = 32;
  TrainStep a(ctx, fb, set.size());
  std::vector<StepStats> sa;
  for (int s = 0; s < 8; ++s) sa.push_back(a.step(set, batch(s), 0, 0.05f));
  const float z1 = sa[0].z;
  REQUIRE(z1 > 0.f);

  // Fixed at that value from the start: the same run, bit for bit.
  cfg.batch_size = 32;
  cfg.z_fixed = z1;
  TrainStep b(ctx, cfg, set.size());
  REQUIRE(b.z_initialized());
  REQUIRE(b.z() == z1);
  for (int s = 0; s < 8; ++s) {
    const StepStats st = b.step(set, batch(s), 0, 0.05f);
    INFO("step " << s);
    REQUIRE(st.z == z1);
    REQUIRE(st.loss == sa[s].loss);
  }
  REQUIRE(test::max_abs_diff(test::to_host<float>(ctx, b.bank().view()), test::to_host<float>(ctx, a.bank().view())) == 0.0);

  // Fixed far from the estimate: Z is never re-estimated, not even after a
  // restore that forgets it.
  cfg.z_fixed = 777.0f;
  TrainStep c(ctx, cfg, set.size());
  for (int s = 0; s < 3; ++s) REQUIRE(c.step(set, batch(s), 0, 0.05f).z == 777.0f);
  c.restore(3, 0.f, false, true);
  REQUIRE(c.z_initialized());
  REQUIRE(c.z() == 777.0f);
  REQUIRE(c.step(set, batch(3), 0, 0.05f).z == 777.0f);

  // The EMA decay reaches the criterion: Z <- d Z + (1 - d) estimate. Two
  // runs that differ only in d have the same state through step 0 (Z is the
  // first batch's estimate in both) and the same estimate at step 1; with
  // d = 0 Z becomes that estimate, with d = 0.5 the midpoint.
  auto ema_run = [&](float decay) {
    TrainStepConfig ema = tiny_config(CriterionKind::kNce).step;
    ema.z_policy = ZPolicy::kEma;
    ema.z_ema_decay = decay;
    ema.batch_size = 32;
    TrainStep e(ctx, ema, set.size());
    const float z0 = e.step(set, batch(0), 0, 0.05f).z;
    return std::make_pair(z0, e.step(set, batch(1), 0, 0.05f).z);
  };
  const auto [z0, estimate] = ema_run(0.0f);
  const auto [h0, half] = ema_run(0.5f);
  REQUIRE(h0 == z0);
  REQUIRE(estimate != z0);
  REQUIRE(half == Approx(0.5 * z0 + 0.5 * estimate).epsilon(1e-6));
}

TEST_CASE("Trainer: two runs with one seed are identical; a resumed run equals the uninterrupted one", "[train]") {
  Context ctx = Context::cpu();
  const ImageSet train = images(64, 1), test = images(32, 2);
  for (CriterionKind kind : {CriterionKind::kNce, CriterionKind::kSoftmax}) {
    INFO(to_string(kind));
    const TrainerConfig cfg = tiny_config(kind);
    TempRun a("a"), b("b"), c("c");
    {
      Trainer t(ctx, cfg, train, test, a.dir);
      t.progress = false;
      t.run();
      REQUIRE(t.history().size() == 3);
      REQUIRE(t.history().back().knn_top1 >= 0);
    }
    {
      Trainer t(ctx, cfg, train, test, b.dir);
      t.progress = false;
      t.run();
    }
    const auto sa = state_of(a.dir), sb = state_of(b.dir);
    REQUIRE(sa.size() == sb.size());
    for (std::size_t i = 0; i < sa.size(); ++i) REQUIRE(sa[i].bytes == sb[i].bytes);
    // Interrupted after epoch 1 (index 0), then resumed in a new process-like
    // object from the checkpoint.
    {
      Trainer t(ctx, cfg, train, test, c.dir);
      t.progress = false;
      t.run(0);
      REQUIRE(t.next_epoch() == 1);
    }
    auto resumed = Trainer::resume(ctx, cfg, train, test, c.dir);
    resumed->progress = false;
    REQUIRE(resumed->next_epoch() == 1);
    REQUIRE(resumed->history().size() == 1);
    resumed->run();
    const auto sc = state_of(c.dir);
    REQUIRE(sc.size() == sa.size());
    for (std::size_t i = 0; i < sa.size(); ++i) {
      INFO(sa[i].name);
      REQUIRE(sc[i].name == sa[i].name);
      REQUIRE(sc[i].bytes == sa[i].bytes);
    }
    const auto ha = Trainer::resume(ctx, cfg, train, test, a.dir)->history();
    REQUIRE(resumed->history().size() == ha.size());
    for (std::size_t e = 0; e < ha.size(); ++e) {
      REQUIRE(resumed->history()[e].loss == ha[e].loss);
      REQUIRE(resumed->history()[e].knn_top1 == ha[e].knn_top1);
    }
  }
}

TEST_CASE("Trainer: bad checkpoints and other configurations are refused; nothing is overwritten", "[train][errors]") {
  Context ctx = Context::cpu();
  const ImageSet train = images(64, 1), test = images(32, 2);
  TrainerConfig cfg = tiny_config(CriterionKind::kNce);
  cfg.epochs = 1;
  TempRun r("bad");
  {
    Trainer t(ctx, cfg, train, test, r.dir);
    t.progress = false;
    t.run();
  }
  const std::string ck = (fs::path(r.dir) / "checkpoint.safetensors").string();
  const auto original = read_all(ck);
  // A new run into a folder with a checkpoint.
  test::require_error([&] { Trainer t(ctx, cfg, train, test, r.dir); }, ErrorKind::kIo, {r.dir, "already holds a checkpoint"});
  // Another configuration.
  TrainerConfig other = cfg;
  other.step.temperature = 0.2f;
  test::require_error([&] { Trainer::resume(ctx, other, train, test, r.dir); }, ErrorKind::kInvalidArgument,
                      {"Trainer::resume", "step.temperature", "checkpoint.safetensors"});
  // More epochs is allowed.
  TrainerConfig longer = cfg;
  longer.epochs = 2;
  REQUIRE(Trainer::resume(ctx, longer, train, test, r.dir)->next_epoch() == 1);
  // So are the run-time choices: CUDA graphs, cuDNN autotuning.
  TrainerConfig runtime = cfg;
  runtime.step.cuda_graph = !cfg.step.cuda_graph;
  runtime.step.model.autotune_convolutions = !cfg.step.model.autotune_convolutions;
  runtime.step.model.deterministic_convolutions = !cfg.step.model.deterministic_convolutions;
  REQUIRE(Trainer::resume(ctx, runtime, train, test, r.dir)->next_epoch() == 1);
  // A different training set size.
  test::require_error([&] { Trainer::resume(ctx, cfg, images(80, 1), test, r.dir); }, ErrorKind::kInvalidArgument,
                      {"train", "64"});
  REQUIRE(read_all(ck) == original);
  // Truncated and corrupted checkpoints.
  for (std::size_t keep : {original.size() / 2, std::size_t(40), std::size_t(3)}) {
    std::ofstream(ck, std::ios::binary | std::ios::trunc)
        .write(reinterpret_cast<const char*>(original.data()), static_cast<std::streamsize>(keep));
    test::require_error([&] { Trainer::resume(ctx, cfg, train, test, r.dir); }, ErrorKind::kIo, {"checkpoint.safetensors"});
  }
  auto flipped = original;
  flipped[12] ^= 0x55;
  std::ofstream(ck, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(flipped.data()), static_cast<std::streamsize>(flipped.size()));
  test::require_error([&] { Trainer::resume(ctx, cfg, train, test, r.dir); }, ErrorKind::kIo, {"checkpoint.safetensors"});
  fs::remove(ck);
  test::require_error([&] { Trainer::resume(ctx, cfg, train, test, r.dir); }, ErrorKind::kIo, {"checkpoint.safetensors", "cannot open"});
}

TEST_CASE("Trainer config: presets, JSON round trip, LR schedules", "[train]") {
  const TrainerConfig c = TrainerConfig::from_preset("cifar10");
  REQUIRE(c.step.batch_size == 128);
  REQUIRE(c.step.temperature == Approx(0.1f));
  REQUIRE(c.lr_at(0) == Approx(0.03f));
  REQUIRE(c.lr_at(120) == Approx(0.003f));
  REQUIRE(c.lr_at(160) == Approx(0.0003f));
  const TrainerConfig i = TrainerConfig::from_preset("imagenet");
  REQUIRE(i.step.model.stem == ResNetStem::kImageNet);
  REQUIRE(i.step.augment.flip_p == 0.5f);
  REQUIRE(i.step.sgd.weight_decay == Approx(1e-4f));
  REQUIRE(TrainerConfig::from_json(i.to_json()).to_json() == i.to_json());
  TrainerConfig b = c;
  b.step.bank_dtype = DType::kBFloat16;
  b.step.softmax_math = SoftmaxMath::kBF16;
  REQUIRE(TrainerConfig::from_json(b.to_json()).step.softmax_math == SoftmaxMath::kBF16);
  // A configuration written before softmax_math existed reads as tf32.
  std::string old_doc = c.to_json();
  const std::size_t at = old_doc.find("\"softmax_math\"");
  REQUIRE(at != std::string::npos);
  old_doc.erase(at, old_doc.find('\n', at) - at + 1);
  REQUIRE(TrainerConfig::from_json(old_doc).step.softmax_math == SoftmaxMath::kTF32);
  // The cuDNN engine choices survive the round trip; absent (runs stored
  // before they existed): heuristic engines, deterministic ones.
  TrainerConfig engines = c;
  engines.step.model.autotune_convolutions = true;
  engines.step.model.deterministic_convolutions = false;
  const TrainerConfig back = TrainerConfig::from_json(engines.to_json());
  REQUIRE(back.step.model.autotune_convolutions);
  REQUIRE_FALSE(back.step.model.deterministic_convolutions);
  nlohmann::ordered_json older = nlohmann::ordered_json::parse(engines.to_json());
  REQUIRE(older.at("step").at("model").erase("autotune_convolutions") == 1);
  REQUIRE(older.at("step").at("model").erase("deterministic_convolutions") == 1);
  const TrainerConfig before = TrainerConfig::from_json(older.dump(2));
  REQUIRE_FALSE(before.step.model.autotune_convolutions);
  REQUIRE(before.step.model.deterministic_convolutions);
  // The Z policy and its parameters survive the round trip; an unknown name is refused.
  TrainerConfig z = c;
  z.step.z_policy = ZPolicy::kFixed;
  z.step.z_fixed = 512.5f;
  z.step.z_ema_decay = 0.9f;
  const TrainerConfig zr = TrainerConfig::from_json(z.to_json());
  REQUIRE(zr.step.z_policy == ZPolicy::kFixed);
  REQUIRE(zr.step.z_fixed == 512.5f);
  REQUIRE(zr.step.z_ema_decay == 0.9f);
  std::string bad_doc = z.to_json();
  bad_doc.replace(bad_doc.find("\"fixed\""), 7, "\"fxied\"");
  test::require_error([&] { TrainerConfig::from_json(bad_doc); }, ErrorKind::kIo,
                      {"step.z_policy", "first_batch | ema | fixed", "fxied"});
  TrainerConfig cos = c;
  cos.cosine = true;
  REQUIRE(cos.lr_at(100) == Approx(0.015f));
  test::require_error([] { TrainerConfig::from_preset("mnist"); }, ErrorKind::kInvalidArgument, {"from_preset", "mnist"});
  test::require_error([] { TrainerConfig::from_json("{\"preset\": 1}"); }, ErrorKind::kIo, {"configuration"});
}

TEST_CASE("Trainer: streaming from image folders equals training on the resident sets", "[train]") {
  Context ctx = Context::cpu();
  // The same images as PNG folders (lossless) and as decoded sets.
  TempRun data("folders");
  auto write_folder = [&](const ImageSet& set, const std::string& dir) {
    for (std::int64_t i = 0; i < set.size(); ++i) {
      const fs::path cls = fs::path(dir) / set.class_names[static_cast<std::size_t>(set.labels[i])];
      fs::create_directories(cls);
      char name[32];
      std::snprintf(name, sizeof name, "%05lld.png", static_cast<long long>(i));
      write_png((cls / name).string(), set.pixels.data_as<const std::uint8_t>() + set.descs.data_as<std::int64_t>()[3 * i],
                8, 8);
    }
  };
  write_folder(images(64, 1), data.dir + "/train");
  write_folder(images(32, 2), data.dir + "/test");
  const ImageFolderIndex train_index = scan_image_folder(data.dir + "/train");
  const ImageFolderIndex test_index = scan_image_folder(data.dir + "/test");
  const ImageSet train = load_image_folder(data.dir + "/train"), test = load_image_folder(data.dir + "/test");
  TrainerConfig cfg = tiny_config(CriterionKind::kNce);
  cfg.epochs = 2;
  cfg.final_eval = true;
  TempRun a("resident"), b("streaming");
  Trainer r(ctx, cfg, train, test, a.dir);
  r.progress = false;
  r.run();
  Trainer s(ctx, cfg, train_index, test_index, b.dir);
  s.progress = false;
  s.run();
  const auto sa = state_of(a.dir), sb = state_of(b.dir);
  REQUIRE(sa.size() == sb.size());
  for (std::size_t i = 0; i < sa.size(); ++i) {
    INFO(sa[i].name);
    REQUIRE(sa[i].bytes == sb[i].bytes);
  }
  REQUIRE(r.history().back().knn_top1 == s.history().back().knn_top1);
  REQUIRE(s.final_report().has_value());
  REQUIRE(s.final_report()->knn_recompute->top1 == r.final_report()->knn_recompute->top1);
  REQUIRE(fs::file_size(fs::path(b.dir) / "retrieval.png") > 0);
}

TEST_CASE("TrainStep::restore sets or forgets NCE's Z", "[train]") {
  Context ctx = Context::cpu();
  TrainStepConfig cfg = tiny_config(CriterionKind::kNce).step;
  cfg.batch_size = 16;
  const ImageSet set = images(256, 3);
  TrainStep step(ctx, cfg, set.size());
  std::vector<std::int64_t> idx(16);
  for (int i = 0; i < 16; ++i) idx[i] = i * 13;
  step.step(set, view(idx.data(), {16}), 0, 0.05f);
  REQUIRE(step.z_initialized());
  const float z1 = step.z();
  REQUIRE(z1 > 0.f);

  step.restore(1, 2.5f, true, true);  // a checkpoint's Z
  CHECK(step.z_initialized());
  CHECK(step.z() == 2.5f);

  step.restore(1, 0.f, false, true);  // a checkpoint from before the first step
  CHECK_FALSE(step.z_initialized());
  CHECK(step.z() == 0.f);
  step.step(set, view(idx.data(), {16}), 0, 0.05f);  // initializes Z from this batch again
  REQUIRE(step.z_initialized());
  CHECK(step.z() > 0.f);
  CHECK(step.z() != 2.5f);
}

TEST_CASE("Trainer: settings are checked before training, naming the field", "[train][errors]") {
  Context ctx = Context::cpu();
  const ImageSet train = images(64, 1), test = images(32, 2);
  TempRun r("settings");
  auto refused = [&](TrainerConfig c, std::vector<std::string> needles) {
    test::require_error([&] { Trainer t(ctx, c, train, test, r.dir); }, ErrorKind::kInvalidArgument, needles);
    REQUIRE_FALSE(fs::exists(r.dir));  // nothing written
  };
  TrainerConfig c = tiny_config(CriterionKind::kNce);
  c.knn_k = 0;
  refused(c, {"Trainer", "config.knn_k", "got 0"});
  c.knn_k = kMaxKnnK + 1;
  refused(c, {"config.knn_k", "1025"});
  c = tiny_config(CriterionKind::kNce);
  c.lr_gamma = -0.1f;
  refused(c, {"config.lr_gamma", "-0.1"});
  c.lr_gamma = std::nanf("");
  refused(c, {"config.lr_gamma", "nan"});
  c = tiny_config(CriterionKind::kNce);
  c.lr_milestones = {3, -1};
  refused(c, {"config.lr_milestones", "got -1"});
  c = tiny_config(CriterionKind::kNce);
  c.data = "/data/caf\xe9";  // Latin-1, not UTF-8: JSON cannot hold it
  refused(c, {"config.data", "UTF-8"});
  // The step's own settings, before the network or bank exist.
  c = tiny_config(CriterionKind::kSoftmax);
  c.step.softmax_math = SoftmaxMath::kBF16;
  refused(c, {"TrainStep", "config.softmax_math", "bf16 bank"});
  c = tiny_config(CriterionKind::kNce);
  c.step.augment.out_height = 16;
  refused(c, {"config.augment", "8 x 8", "16 x 8"});
}

TEST_CASE("TrainerConfig::validate: the configuration alone, without data, as the trainer checks it",
          "[train][errors]") {
  TrainerConfig c = tiny_config(CriterionKind::kNce);
  c.validate();  // a good configuration passes
  c.knn_k = 0;
  test::require_error([&] { c.validate(); }, ErrorKind::kInvalidArgument, {"Trainer", "config.knn_k", "got 0"});
  c = tiny_config(CriterionKind::kNce);
  c.epochs = 0;
  test::require_error([&] { c.validate(); }, ErrorKind::kInvalidArgument, {"config.epochs", "got 0"});
  c = tiny_config(CriterionKind::kNce);
  c.step.bank_momentum = 1.0f;
  test::require_error([&] { c.validate(); }, ErrorKind::kInvalidArgument, {"TrainStep", "config.bank_momentum"});
  TrainStepConfig s = c.step;
  s.bank_momentum = 0.5f;
  s.batch_size = 0;
  test::require_error([&] { s.validate(); }, ErrorKind::kInvalidArgument, {"config.batch_size", "got 0"});
  s.batch_size = 16;
  s.z_policy = ZPolicy::kFixed;  // NCE with a fixed Z needs the Z
  test::require_error([&] { s.validate(); }, ErrorKind::kInvalidArgument, {"config.z_fixed"});
  s.z_fixed = 100.0f;
  s.validate();
}

TEST_CASE("Trainer: model.safetensors is written at the end with or without the final evaluation; the final "
          "report records its kNN k and sigma",
          "[train]") {
  Context ctx = Context::cpu();
  const ImageSet train = images(64, 1), test = images(32, 2);
  for (bool final_eval : {false, true}) {
    INFO("final_eval " << final_eval);
    TrainerConfig cfg = tiny_config(CriterionKind::kNce);
    cfg.epochs = 2;
    cfg.final_eval = final_eval;
    cfg.step.temperature = 0.25f;
    TempRun r(final_eval ? "model_eval" : "model_noeval");
    const fs::path model = fs::path(r.dir) / "model.safetensors";
    {
      Trainer t(ctx, cfg, train, test, r.dir);
      t.progress = false;
      t.run(0);  // one epoch of two: no model file yet
      REQUIRE_FALSE(fs::exists(model));
      t.run();
      REQUIRE(t.final_report().has_value() == final_eval);
      if (final_eval) {
        REQUIRE(t.final_report()->knn_k == 10);
        REQUIRE(t.final_report()->knn_sigma == 0.25f);
        REQUIRE(read_all((fs::path(r.dir) / "final.json").string()).size() > 0);
      }
    }
    REQUIRE(fs::exists(fs::path(r.dir) / "final.json") == final_eval);
    {
      // Extended by two epochs and stopped after the first of them: the
      // results of the earlier end are gone (they describe an older model).
      TrainerConfig longer = cfg;
      longer.epochs = 4;
      auto t = Trainer::resume(ctx, longer, train, test, r.dir);
      t->progress = false;
      t->run(0);  // stops before epoch index 2: nothing trained, nothing removed
      REQUIRE(fs::exists(model));
      t->run(2);  // trains epoch index 2 only
      REQUIRE_FALSE(fs::exists(model));
      REQUIRE_FALSE(fs::exists(fs::path(r.dir) / "final.json"));
      REQUIRE_FALSE(t->final_report().has_value());
    }
    {
      // Run to the end: the results are back.
      TrainerConfig longer = cfg;
      longer.epochs = 4;
      auto t = Trainer::resume(ctx, longer, train, test, r.dir);
      t->progress = false;
      t->run();
      REQUIRE(fs::exists(model));
      REQUIRE(fs::exists(fs::path(r.dir) / "final.json") == final_eval);
    }
    const SafetensorsFile f = load_safetensors(model.string());
    // The network alone (no bank, no optimizer state), and the run's configuration.
    REQUIRE(f.find("memory_bank") == nullptr);
    REQUIRE(f.find("optimizer.momentum_buffer") == nullptr);
    REQUIRE(f.find("conv1.weight") != nullptr);
    TrainerConfig stored = TrainerConfig::from_json(f.metadata.at("npid.config"));
    REQUIRE(stored.epochs == 4);
    stored.epochs = cfg.epochs;
    REQUIRE(stored.to_json() == cfg.to_json());
  }
}

TEST_CASE("Trainer::resume: epochs may change but not below those done nor under cosine; damaged state is kIo; "
          "a NaN epoch in the history survives",
          "[train][errors]") {
  Context ctx = Context::cpu();
  const ImageSet train = images(64, 1), test = images(32, 2);
  TrainerConfig cfg = tiny_config(CriterionKind::kNce);
  cfg.epochs = 2;
  TempRun r("resume_state");
  {
    Trainer t(ctx, cfg, train, test, r.dir);
    t.progress = false;
    t.run();
  }
  TrainerConfig shorter = cfg;
  shorter.epochs = 1;
  test::require_error([&] { Trainer::resume(ctx, shorter, train, test, r.dir); }, ErrorKind::kInvalidArgument,
                      {"Trainer::resume", "config.epochs", "at least the 2 epochs", "got 1"});

  // The history: a diverged epoch (loss and Z written as null) reads back as
  // NaN, and a damaged line costs only itself.
  const std::string metrics = (fs::path(r.dir) / "metrics.jsonl").string();
  std::vector<std::string> lines;
  {
    std::ifstream in(metrics);
    for (std::string l; std::getline(in, l);) lines.push_back(l);
  }
  REQUIRE(lines.size() == 2);
  const std::size_t at = lines[0].find("\"loss\":");
  REQUIRE(at != std::string::npos);
  lines[0] = lines[0].substr(0, at) + "\"loss\":null" + lines[0].substr(lines[0].find(',', at));
  {
    std::ofstream out(metrics, std::ios::trunc);
    out << lines[0] << "\n{\"epoch\": torn\n" << lines[1] << "\n";
  }
  {
    auto resumed = Trainer::resume(ctx, cfg, train, test, r.dir);
    REQUIRE(resumed->history().size() == 2);
    CHECK(std::isnan(resumed->history()[0].loss));
    CHECK(std::isfinite(resumed->history()[1].loss));
  }

  // Damaged trainer state: kIo naming the file, nothing overwritten.
  const std::string ck = (fs::path(r.dir) / "checkpoint.safetensors").string();
  const SafetensorsFile good = load_safetensors(ck);
  auto damaged = [&](const std::function<void(SafetensorsFile&)>& edit, std::vector<std::string> needles) {
    SafetensorsFile f = good;
    edit(f);
    save_safetensors(ck, f.tensors, f.metadata);
    const auto before = read_all(ck);
    needles.push_back("checkpoint.safetensors");
    test::require_error([&] { Trainer::resume(ctx, cfg, train, test, r.dir); }, ErrorKind::kIo, needles);
    REQUIRE(read_all(ck) == before);
  };
  auto set_state = [](SafetensorsFile& f, const char* key, const std::string& value) {
    std::string& s = f.metadata.at("npid.trainer");
    const std::size_t k = s.find(std::string("\"") + key + "\"");
    REQUIRE(k != std::string::npos);
    const std::size_t colon = s.find(':', k), end = s.find_first_of(",}", colon);
    s = s.substr(0, colon + 1) + value + s.substr(end);
  };
  damaged([&](SafetensorsFile& f) { set_state(f, "next_epoch", "-1"); }, {"next_epoch -1"});
  damaged([&](SafetensorsFile& f) { set_state(f, "steps_done", "-5"); }, {"steps_done -5"});
  damaged([&](SafetensorsFile& f) { set_state(f, "z_initialized", "\"yes\""); }, {"npid.trainer"});
  damaged(
      [&](SafetensorsFile& f) {
        set_state(f, "z_initialized", "true");
        for (NamedTensor& t : f.tensors)
          if (t.name == "trainer.z") {
            const float nan = std::nanf("");
            std::memcpy(t.bytes.data(), &nan, 4);
          }
      },
      {"trainer.z", "finite Z > 0"});
  damaged(
      [&](SafetensorsFile& f) {
        f.tensors.erase(std::remove_if(f.tensors.begin(), f.tensors.end(),
                                       [](const NamedTensor& t) { return t.name == "memory_bank"; }),
                        f.tensors.end());
      },
      {"memory_bank"});
  save_safetensors(ck, good.tensors, good.metadata);
  REQUIRE(Trainer::resume(ctx, cfg, train, test, r.dir)->next_epoch() == 2);

  // Cosine: the schedule depends on the total, so it cannot change.
  TrainerConfig cos = tiny_config(CriterionKind::kNce);
  cos.cosine = true;
  cos.epochs = 3;
  TempRun rc("resume_cosine");
  {
    Trainer t(ctx, cos, train, test, rc.dir);
    t.progress = false;
    t.run(0);  // stop after the first epoch
  }
  TrainerConfig cos_longer = cos;
  cos_longer.epochs = 4;
  test::require_error([&] { Trainer::resume(ctx, cos_longer, train, test, rc.dir); }, ErrorKind::kInvalidArgument,
                      {"config.epochs", "expected 3", "cosine", "got 4"});
  REQUIRE(Trainer::resume(ctx, cos, train, test, rc.dir)->next_epoch() == 1);
}

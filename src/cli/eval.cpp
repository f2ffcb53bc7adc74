// `npid eval`: kNN (recomputed features and/or the checkpoint's memory bank),
// the linear classifier and a retrieval grid for a model file or training
// checkpoint; JSON + a short table.
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <stdexcept>

#include "cli/commands.h"
#include "cli/datasets.h"
#include "cli/options.h"
#include "io/atomic_file.h"
#include "npid/npid.h"

namespace npid::cli {
namespace {

const char* kHelp = R"(usage: npid eval --checkpoint FILE [--data DATA] [options]

Evaluates an embedding network: weighted kNN on recomputed features and on the
checkpoint's memory bank, a linear classifier on frozen features, and a
retrieval picture. Writes OUT/eval.json and OUT/retrieval.png.

A run's files (RUN/model.safetensors, RUN/checkpoint.safetensors) carry the
run's configuration: its data, kNN k and tau are the defaults below.

  --checkpoint FILE     model file or training checkpoint (.safetensors)
  --data DATA           synthetic[:TRAIN[:TEST]] (synthetic alone: 10,000 + 2,000 images)
                        | CIFAR-10 binary dir | dir with train/ and test/ image folders
                        | one image folder (a seeded tenth held out as the test split)
                        (default: the run's data; required for a file without a configuration)
  --device D            auto (default) | cpu | cuda
  --out DIR             where results go (default: eval/ beside the checkpoint, so the
                        run's own retrieval.png is kept)
  --k K                 neighbours (default: the run's kNN k, 200 without one)
  --sigma S             neighbour weight exp(sim / S) (default: the run's tau, 0.1 without one)
  --knn MODES           recompute,bank (default) | recompute | bank | none
  --linear LOSS         hinge (default) | softmax | none
  --linear-iters N      gradient steps per fit (default 300)
  --retrieval N         query rows in the retrieval picture (default 8; 0 = none)
  --batch B             images per forward pass (default 256 on CUDA, 64 on CPU)
  --limit-train N       use N train images spread evenly over the split (0 = all)
  --limit-test N        use N test images spread evenly over the split (0 = all)
  --seed S              synthetic data seed (default: the checkpoint's, else 0)
  --threads T           decoding threads (default: all cores)
  --stream              decode image folders batch by batch (automatic above 300,000 images)
)";

}  // namespace

int eval_main(const std::vector<std::string>& args) {
  const std::set<std::string> flags = {"--help", "--stream"};
  Options o(args, flags,
            {"--help", "--stream", "--checkpoint", "--data", "--device", "--out", "--k", "--sigma", "--knn", "--linear",
             "--linear-iters", "--retrieval", "--batch", "--limit-train", "--limit-test", "--seed", "--threads"});
  if (o.has("--help")) {
    std::cout << kHelp;
    return 0;
  }
  const std::string ckpt = o.required("--checkpoint");
  if (o.has("--data")) (void)o.required("--data");  // not empty
  const std::string device = o.choice("--device", "auto", {"auto", "cpu", "cuda"});
  const std::string knn_modes = o.choice("--knn", "recompute,bank", {"recompute,bank", "bank,recompute", "recompute", "bank", "none"});
  const std::string linear = o.choice("--linear", "hinge", {"hinge", "softmax", "none"});
  const int threads = static_cast<int>(o.integer("--threads", 0, 0, 1024));

  // Every option is checked before any file is read.
  if (device == "cuda" && !cuda_available()) throw OptionError("option --device cuda: " + cuda_status());
  const bool cuda = device == "cuda" || (device == "auto" && cuda_available());
  const std::int64_t batch = o.integer("--batch", cuda ? 256 : 64, 1, 4096);
  const std::int64_t lt = o.integer("--limit-train", 0, 0, INT64_MAX), le = o.integer("--limit-test", 0, 0, INT64_MAX);
  EvalConfig ec;
  ec.knn.k = o.integer("--k", 200, 1, kMaxKnnK);  // or the run's, below
  ec.knn.sigma = static_cast<float>(o.number("--sigma", 0.1, 1e-4, 1e4));
  ec.knn_recompute = knn_modes.find("recompute") != std::string::npos;
  ec.knn_bank = knn_modes.find("bank") != std::string::npos;
  ec.linear = linear != "none";
  ec.linear_config.loss = linear == "softmax" ? LinearLoss::kSoftmax : LinearLoss::kHinge;
  ec.linear_config.iterations = o.integer("--linear-iters", 300, 1, 100000);
  ec.retrieval_queries = o.integer("--retrieval", 8, 0, 64);
  const std::int64_t seed_option = o.integer("--seed", -1, 0, INT64_MAX);

  const SafetensorsFile file = load_safetensors(ckpt);
  const ResNetConfig mc = model_config_from(file, ckpt);
  // The run's configuration (a run's checkpoint and model file store it; a
  // bare model file does not): its data, and kNN as the trainer's own
  // (sigma = tau, docs/math.md s.9; its k).
  std::optional<TrainerConfig> run_cfg;
  if (const auto it = file.metadata.find("npid.config"); it != file.metadata.end()) {
    try {
      run_cfg = TrainerConfig::from_json(it->second);
    } catch (const Error& e) {
      std::fprintf(stderr, "npid eval: %s: unreadable training configuration (%s); the defaults apply\n",
                   ckpt.c_str(), e.what());
    }
  }
  if (run_cfg && !o.has("--sigma")) ec.knn.sigma = run_cfg->step.temperature;
  if (run_cfg && !o.has("--k")) ec.knn.k = std::clamp<std::int64_t>(run_cfg->knn_k, 1, kMaxKnnK);
  if (!o.has("--data") && !run_cfg)
    throw OptionError("option --data is required: " + ckpt + " stores no training configuration to take it from");
  const std::string data_spec = o.has("--data") ? o.str("--data", "") : run_cfg->data;
  Context ctx = cuda ? Context::cuda() : Context::cpu();
  std::uint64_t seed = 0;
  if (const auto it = file.metadata.find("npid.data_seed"); it != file.metadata.end()) {
    const std::string& v = it->second;
    bool ok = !v.empty() && v.find_first_not_of("0123456789") == std::string::npos;
    try {
      if (ok) seed = std::stoull(v);
    } catch (const std::out_of_range&) {
      ok = false;
    }
    if (!ok) throw Error(ErrorKind::kIo, ckpt + ": metadata npid.data_seed: expected a 64-bit decimal seed, got '" + v + "'");
  }
  if (seed_option >= 0) seed = static_cast<std::uint64_t>(seed_option);

  DataSplits data;
  try {
    data = load_data(data_spec, mc.image_size, seed, threads, o.has("--stream"));
  } catch (const OptionError& e) {
    if (o.has("--data")) throw;
    throw OptionError("the run's data, stored in " + ckpt + " (give --data to use another): " + e.what());
  }
  const std::int64_t full_train = data.train_source().size();
  data.limit(lt, le);
  if (lt > 0 || le > 0)
    data.description += ", using " + std::to_string(data.train_source().size()) + " train and " +
                        std::to_string(data.test_source().size()) + " test images (--limit-*)";
  const DataSource train = data.train_source(), test = data.test_source();

  ResNet18 net(ctx, mc, batch, 0);
  load_model_state(ctx, net, file, ckpt);
  // The bank's rows are the training images of the run, in order: it serves
  // only a train split of exactly that size (before --limit-train picks its
  // rows, and the bank's with them). Asked for explicitly (--knn bank), a missing or foreign bank
  // is an error; by default bank kNN is skipped with a note.
  Tensor bank;
  const bool bank_asked = knn_modes == "bank";
  if (knn_modes.find("bank") != std::string::npos) {
    const NamedTensor* b = file.find("memory_bank");
    std::string why;
    if (b == nullptr) {
      why = ckpt + " holds no memory bank (a model file, not a training checkpoint)";
    } else if (b->shape.size() != 2 || b->shape[1] != mc.embedding_dim || b->shape[0] != full_train) {
      why = "the memory bank of " + ckpt + " has " + std::to_string(b->shape.empty() ? 0 : b->shape[0]) +
            " rows, the train split of --data " + data_spec + " " + std::to_string(full_train) +
            " images (another data set?)";
    } else {
      const std::int64_t rows = train.size(), D = mc.embedding_dim;
      const std::size_t row_bytes = static_cast<std::size_t>(D) * dtype_size(b->dtype);
      std::vector<std::uint8_t> kept;
      const std::uint8_t* src = b->bytes.data();
      if (!data.train_rows.empty()) {  // the rows --limit-train kept
        kept.resize(data.train_rows.size() * row_bytes);
        for (std::size_t i = 0; i < data.train_rows.size(); ++i)
          std::memcpy(kept.data() + i * row_bytes, src + static_cast<std::size_t>(data.train_rows[i]) * row_bytes,
                      row_bytes);
        src = kept.data();
      }
      bank = Tensor({rows, D}, b->dtype, ctx.device());
      copy(ctx, bank, TensorView(const_cast<std::uint8_t*>(src), b->dtype, {rows, D}, Device::cpu()));
    }
    if (!why.empty()) {
      if (bank_asked) throw OptionError("option --knn bank: " + why);
      std::fprintf(stderr, "npid eval: %s; bank kNN skipped\n", why.c_str());
    }
  }
  namespace fs = std::filesystem;
  const fs::path ckpt_dir = fs::path(ckpt).parent_path().empty() ? fs::path(".") : fs::path(ckpt).parent_path();
  const std::string out = o.str("--out", (ckpt_dir / "eval").string());
  fs::create_directories(out);

  ec.knn.k = std::min(ec.knn.k, train.size());
  if (ec.retrieval_queries > 0) ec.retrieval_png = (fs::path(out) / "retrieval.png").string();

  std::printf("npid eval: %s on %s, %s, kNN k %lld sigma %g\n", ckpt.c_str(), ctx.device().str().c_str(),
              data.description.c_str(), static_cast<long long>(ec.knn.k), static_cast<double>(ec.knn.sigma));
  const EvalReport report = evaluate(ctx, ec, net, train, test, bank);
  std::printf("%s", report.to_table().c_str());
  const std::string json_path = (fs::path(out) / "eval.json").string();
  write_text_atomic(json_path, report.to_json() + "\n");
  std::printf("  results: %s\n", json_path.c_str());
  return 0;
}

}  // namespace npid::cli

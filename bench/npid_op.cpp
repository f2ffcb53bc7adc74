// npid_op -- our side of the PyTorch side-by-side (tools/side_by_side.sh).
//
// Reads one problem written by bench/torch/side_by_side.py, runs our op once
// on exactly those inputs and writes the outputs back (equivalence), then times
// the op as training runs it (warm-up, then CUDA events per iteration; median).
//
//   npid_op nce|softmax|resnet|knn|train --dir DIR [--device cpu|cuda] [--warmup 5] [--iters 50]
//
// DIR holds meta.txt ("key value" lines: B D N tau momentum lambda, for nce
// also K z, optional bf16 = 1 to store the bank as bfloat16) and raw
// little-endian arrays: features.f32 (B,D), bank.f32 (N,D), targets.i64 (B),
// for nce negatives.i64 (B,K). Written: loss.f32 (1), grad.f32 (B,D),
// updated_rows.f32 (B,D) = the bank rows at `targets` after the update (widened
// to fp32 for a bf16 bank), and timing.json.
//
// Each timed iteration is one training step's criterion: forward+backward and
// the bank update. nce: equivalence uses the explicit negatives, the timed
// loop draws them in-kernel (the baseline draws them with torch.randint inside
// its loop). softmax: equivalence in exact fp32 math, timing with TF32 GEMMs
// (the baseline is timed with TF32 matmuls too).
//
// resnet: meta.txt holds stem (0 cifar, 1 imagenet) width D S B seed tf32
// lr; images.f32 (B,S,S,3) NHWC and grad.f32 (B,D). One training forward and
// backward at exact fp32 (tf32 = 0 for equivalence) writes emb.f32 (B,D),
// params.f32 and grads.f32 (flat, our storage order: conv weights
// (O,KH,KW,I)), stats.f32 (running statistics after the step) and layout.txt
// ("name offset numel d0 d1 ... | s0 s1 ..." per tensor: logical | storage
// shape); then times forward + backward + SGD steps with tf32 as given (and
// cuDNN autotuning when the optional key autotune is 1; nondeterministic
// engines allowed when the optional key deterministic is 0).
//
// knn: meta.txt holds Q N D k C sigma; queries.f32 (Q,D), train.f32 (N,D),
// labels.i64 (N), qlabels.i64 (Q). Writes values.f32 (Q,k) (the top-k
// similarities) and predictions.i64 (Q); times knn_classify (fp32 GEMMs).
//
// train: meta.txt holds B K softmax steps warmup [N]; data_path.txt (optional)
// names an image folder, else N synthetic 32x32 images. Runs the whole
// TrainStep (CIFAR preset, width 64) from the resident set: warm-up steps,
// then `steps` steps timed by the wall clock (as the baseline's pipeline);
// writes losses.txt (first, last) and timing.json (ms per step).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "common/bf16.h"
#include "core/check.h"
#include "npid/npid.h"

using namespace npid;

namespace {

template <typename T>
std::vector<T> read_array(const std::string& path, std::int64_t count) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorKind::kIo, "npid_op: cannot open " + path);
  std::vector<T> v(static_cast<std::size_t>(count));
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(T)));
  if (in.gcount() != static_cast<std::streamsize>(v.size() * sizeof(T)))
    throw Error(ErrorKind::kIo, "npid_op: " + path + " holds fewer than " + std::to_string(count) +
                                    " elements");
  return v;
}

template <typename T>
void write_array(const std::string& path, const std::vector<T>& v) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(T)));
  if (!out) throw Error(ErrorKind::kIo, "npid_op: cannot write " + path);
}

std::map<std::string, double> read_meta(const std::string& path, std::initializer_list<const char*> required) {
  std::ifstream in(path);
  if (!in) throw Error(ErrorKind::kIo, "npid_op: cannot open " + path);
  std::map<std::string, double> meta;
  std::string key;
  double value;
  while (in >> key >> value) meta[key] = value;
  for (const char* k : required)
    if (!meta.count(k)) throw Error(ErrorKind::kIo, std::string("npid_op: meta.txt lacks '") + k + "'");
  return meta;
}

// The bank as the op stores it: float32, or bf16 rounded to nearest even.
Tensor upload_bank(Context& ctx, const std::vector<float>& host, std::int64_t N, std::int64_t D, bool bf16_bank) {
  Tensor bank({N, D}, bf16_bank ? DType::kBFloat16 : DType::kFloat32, ctx.device());
  if (bf16_bank) {
    std::vector<bf16> rounded(host.size());
    for (std::size_t k = 0; k < host.size(); ++k) rounded[k] = float_to_bf16(host[k]);
    copy(ctx, bank, TensorView(rounded.data(), DType::kBFloat16, {N, D}, Device::cpu()));
  } else {
    copy(ctx, bank, view(host.data(), {N, D}));
  }
  return bank;
}

// Rows `targets` of the bank, widened to fp32, (B, D).
std::vector<float> gather_rows(Context& ctx, const Tensor& bank, const std::vector<std::int64_t>& targets) {
  const std::int64_t N = bank.shape()[0], D = bank.shape()[1];
  const auto B = static_cast<std::int64_t>(targets.size());
  std::vector<float> rows(static_cast<std::size_t>(B * D));
  if (bank.dtype() == DType::kBFloat16) {
    std::vector<bf16> all(static_cast<std::size_t>(N * D));
    copy(ctx, TensorView(all.data(), DType::kBFloat16, {N, D}, Device::cpu()), bank);
    for (std::int64_t i = 0; i < B; ++i)
      for (std::int64_t d = 0; d < D; ++d) rows[i * D + d] = bf16_to_float(all[targets[i] * D + d]);
  } else {
    std::vector<float> all(static_cast<std::size_t>(N * D));
    copy(ctx, view(all.data(), {N, D}), bank);
    for (std::int64_t i = 0; i < B; ++i) std::copy_n(&all[targets[i] * D], D, &rows[i * D]);
  }
  return rows;
}

// loss.f32, grad.f32 and updated_rows.f32 for the equivalence check.
void write_outputs(Context& ctx, const std::string& dir, const Tensor& loss, const Tensor& grad,
                   const Tensor& bank, const std::vector<std::int64_t>& targets) {
  std::vector<float> loss_h(1), grad_h(static_cast<std::size_t>(grad.numel()));
  copy(ctx, view(loss_h.data(), {1}), loss);
  copy(ctx, view(grad_h.data(), grad.shape()), grad);
  write_array(dir + "/loss.f32", loss_h);
  write_array(dir + "/grad.f32", grad_h);
  write_array(dir + "/updated_rows.f32", gather_rows(ctx, bank, targets));
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// Runs `step` warmup + iters times; median milliseconds (CUDA events on a GPU).
template <typename Step>
std::vector<double> time_steps(Context& ctx, int warmup, int iters, Step&& step) {
  std::vector<double> ms;
  cudaEvent_t start = nullptr, stop = nullptr;
  if (ctx.is_cuda()) {
    NPID_CUDA_CHECK(cudaEventCreate(&start));
    NPID_CUDA_CHECK(cudaEventCreate(&stop));
  }
  for (int it = 0; it < warmup + iters; ++it) {
    const auto t0 = std::chrono::steady_clock::now();
    if (ctx.is_cuda()) NPID_CUDA_CHECK(cudaEventRecord(start, ctx.stream()));
    step(it);
    double elapsed;
    if (ctx.is_cuda()) {
      NPID_CUDA_CHECK(cudaEventRecord(stop, ctx.stream()));
      NPID_CUDA_CHECK(cudaEventSynchronize(stop));
      float e = 0;
      NPID_CUDA_CHECK(cudaEventElapsedTime(&e, start, stop));
      elapsed = e;
    } else {
      elapsed = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    }
    if (it >= warmup) ms.push_back(elapsed);
  }
  if (ctx.is_cuda()) {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
  return ms;
}

void write_timing(const std::string& dir, const char* op, Context& ctx, const std::vector<double>& ms) {
  const std::string name = ctx.is_cuda() ? ctx.device_info().name : std::string("cpu");
  FILE* f = std::fopen((dir + "/timing.json").c_str(), "w");
  if (f == nullptr) throw Error(ErrorKind::kIo, "npid_op: cannot write timing.json");
  const double lo = ms.empty() ? 0.0 : *std::min_element(ms.begin(), ms.end());
  std::fprintf(f, "{\"side\": \"npid\", \"op\": \"%s\", \"device\": \"%s\", \"median_ms\": %.6f, "
                  "\"min_ms\": %.6f, \"iters\": %zu}\n",
               op, name.c_str(), median(ms), lo, ms.size());
  std::fclose(f);
  std::printf("npid %s on %s: median %.4f ms over %zu iterations\n", op, name.c_str(), median(ms), ms.size());
}


int run_nce(const std::string& dir, Context& ctx, int warmup, int iters) {
  const auto meta = read_meta(dir + "/meta.txt", {"B", "K", "D", "N", "tau", "z", "momentum", "lambda"});
  const auto B = static_cast<std::int64_t>(meta.at("B")), K = static_cast<std::int64_t>(meta.at("K"));
  const auto D = static_cast<std::int64_t>(meta.at("D")), N = static_cast<std::int64_t>(meta.at("N"));
  const float momentum = static_cast<float>(meta.at("momentum"));
  const float z0 = static_cast<float>(meta.at("z"));
  const bool bf16_bank = meta.count("bf16") && meta.at("bf16") != 0;
  const Device dev = ctx.device();

  auto features_h = read_array<float>(dir + "/features.f32", B * D);
  auto targets_h = read_array<std::int64_t>(dir + "/targets.i64", B);
  auto negatives_h = read_array<std::int64_t>(dir + "/negatives.i64", B * K);
  Tensor bank = upload_bank(ctx, read_array<float>(dir + "/bank.f32", N * D), N, D, bf16_bank);
  Tensor features({B, D}, DType::kFloat32, dev), targets({B}, DType::kInt64, dev), negatives({B, K}, DType::kInt64, dev);
  Tensor z({1}, DType::kFloat32, dev), loss({1}, DType::kFloat32, dev), grad({B, D}, DType::kFloat32, dev);
  copy(ctx, features, view(features_h.data(), {B, D}));
  copy(ctx, targets, view(targets_h.data(), {B}));
  copy(ctx, negatives, view(negatives_h.data(), {B, K}));
  copy(ctx, z, view(&z0, {1}));

  NceConfig cfg;
  cfg.num_negatives = K;
  cfg.temperature = static_cast<float>(meta.at("tau"));
  cfg.proximal_lambda = static_cast<float>(meta.at("lambda"));

  // 1. Equivalence: one step on the given inputs, explicit negatives, checked.
  nce_forward_backward(ctx, cfg, {features, targets, bank, negatives}, 0, ZUpdate::kKeep, z, {loss, grad, {}, {}});
  bank_update(ctx, bank, features, targets, momentum);
  write_outputs(ctx, dir, loss, grad, bank, targets_h);

  // 2. Timing: the steady-state training step -- in-kernel negatives, no
  // input validation (no host sync), forward+backward then the bank update.
  cfg.validate_inputs = false;
  ctx.workspace().reserve(nce_workspace_bytes(ctx, B, D, K), ctx.stream());
  const auto ms = time_steps(ctx, warmup, iters, [&](int it) {
    nce_forward_backward(ctx, cfg, {features, targets, bank, {}}, static_cast<std::uint64_t>(it + 1),
                         ZUpdate::kKeep, z, {loss, grad, {}, {}});
    bank_update(ctx, bank, features, targets, momentum, false);
  });
  write_timing(dir, bf16_bank ? "nce_step_bf16" : "nce_step", ctx, ms);
  return 0;
}

int run_softmax(const std::string& dir, Context& ctx, int warmup, int iters) {
  const auto meta = read_meta(dir + "/meta.txt", {"B", "D", "N", "tau", "momentum", "lambda"});
  const auto B = static_cast<std::int64_t>(meta.at("B")), D = static_cast<std::int64_t>(meta.at("D"));
  const auto N = static_cast<std::int64_t>(meta.at("N"));
  const float momentum = static_cast<float>(meta.at("momentum"));
  const bool bf16_bank = meta.count("bf16") && meta.at("bf16") != 0;
  const Device dev = ctx.device();
  auto features_h = read_array<float>(dir + "/features.f32", B * D);
  auto targets_h = read_array<std::int64_t>(dir + "/targets.i64", B);
  Tensor bank = upload_bank(ctx, read_array<float>(dir + "/bank.f32", N * D), N, D, bf16_bank);
  Tensor features({B, D}, DType::kFloat32, dev), targets({B}, DType::kInt64, dev);
  Tensor loss({1}, DType::kFloat32, dev), grad({B, D}, DType::kFloat32, dev);
  copy(ctx, features, view(features_h.data(), {B, D}));
  copy(ctx, targets, view(targets_h.data(), {B}));

  SoftmaxConfig cfg;
  cfg.temperature = static_cast<float>(meta.at("tau"));
  cfg.proximal_lambda = static_cast<float>(meta.at("lambda"));
  cfg.math = SoftmaxMath::kFP32;  // equivalence in exact fp32
  softmax_forward_backward(ctx, cfg, {features, targets, bank}, {loss, grad});
  bank_update(ctx, bank, features, targets, momentum);
  write_outputs(ctx, dir, loss, grad, bank, targets_h);

  // Timed: TF32 GEMMs, or bf16 GEMMs on a bf16 bank when the pair asks (bf16_math).
  const bool bf16_math = bf16_bank && meta.count("bf16_math") && meta.at("bf16_math") != 0;
  cfg.math = bf16_math ? SoftmaxMath::kBF16 : SoftmaxMath::kTF32;
  cfg.validate_inputs = false;
  SoftmaxCriterion criterion(ctx, cfg, B, D, N, bank.dtype());
  const auto ms = time_steps(ctx, warmup, iters, [&](int) {
    criterion.forward_backward({features, targets, bank}, {loss, grad});
    bank_update(ctx, bank, features, targets, momentum, false);
  });
  write_timing(dir, bf16_math ? "softmax_step_bf16_gemm" : bf16_bank ? "softmax_step_bf16" : "softmax_step", ctx, ms);
  return 0;
}

int run_resnet(const std::string& dir, Context& ctx, int warmup, int iters) {
  const auto meta = read_meta(dir + "/meta.txt", {"stem", "width", "D", "S", "B", "seed", "tf32", "lr"});
  ResNetConfig cfg;
  cfg.stem = meta.at("stem") != 0 ? ResNetStem::kImageNet : ResNetStem::kCifar;
  cfg.width = static_cast<std::int64_t>(meta.at("width"));
  cfg.embedding_dim = static_cast<std::int64_t>(meta.at("D"));
  cfg.image_size = static_cast<std::int64_t>(meta.at("S"));
  const auto B = static_cast<std::int64_t>(meta.at("B")), S = cfg.image_size, D = cfg.embedding_dim;
  const Device dev = ctx.device();
  auto images_h = read_array<float>(dir + "/images.f32", B * S * S * 3);
  auto grad_h = read_array<float>(dir + "/grad.f32", B * D);
  Tensor images({B, S, S, 3}, DType::kFloat32, dev), grad({B, D}, DType::kFloat32, dev), emb({B, D}, DType::kFloat32, dev);
  copy(ctx, images, view(images_h.data(), {B, S, S, 3}));
  copy(ctx, grad, view(grad_h.data(), {B, D}));

  // 1. Equivalence at exact fp32.
  cfg.tf32_convolutions = false;
  {
    ResNet18 net(ctx, cfg, B, static_cast<std::uint64_t>(meta.at("seed")));
    const std::int64_t np = net.parameter_buffer().numel();
    std::vector<float> params(static_cast<std::size_t>(np));
    copy(ctx, view(params.data(), {np}), net.parameter_buffer());  // before the step
    net.forward(images, emb, true);
    net.backward(grad);
    std::vector<float> emb_h(B * D), grads(params.size()), stats(static_cast<std::size_t>(net.buffer_buffer().numel()));
    copy(ctx, view(emb_h.data(), {B, D}), emb);
    copy(ctx, view(grads.data(), {np}), net.gradient_buffer());
    copy(ctx, view(stats.data(), {static_cast<std::int64_t>(stats.size())}), net.buffer_buffer());
    write_array(dir + "/emb.f32", emb_h);
    write_array(dir + "/params.f32", params);
    write_array(dir + "/grads.f32", grads);
    write_array(dir + "/stats.f32", stats);
    FILE* f = std::fopen((dir + "/layout.txt").c_str(), "w");
    if (f == nullptr) throw Error(ErrorKind::kIo, "npid_op: cannot write layout.txt");
    auto write = [f](const ParameterInfo& p, const char* kind) {
      std::fprintf(f, "%s %s %lld %lld", kind, p.name.c_str(), static_cast<long long>(p.offset),
                   static_cast<long long>(p.numel));
      for (int k = 0; k < p.shape.rank(); ++k) std::fprintf(f, " %lld", static_cast<long long>(p.shape[k]));
      std::fprintf(f, " |");
      for (int k = 0; k < p.storage_shape.rank(); ++k)
        std::fprintf(f, " %lld", static_cast<long long>(p.storage_shape[k]));
      std::fprintf(f, "\n");
    };
    for (const ParameterInfo& p : net.parameters()) write(p, "param");
    for (const ParameterInfo& p : net.buffers()) write(p, "buffer");
    std::fclose(f);
  }

  // 2. Timing: forward + backward + SGD, convolutions as the meta says.
  cfg.tf32_convolutions = meta.at("tf32") != 0;
  cfg.autotune_convolutions = meta.count("autotune") && meta.at("autotune") != 0;
  cfg.deterministic_convolutions = !meta.count("deterministic") || meta.at("deterministic") != 0;
  ResNet18 net(ctx, cfg, B, static_cast<std::uint64_t>(meta.at("seed")));
  Sgd sgd(ctx, SgdConfig{}, net.parameter_buffer().numel());
  const float lr = static_cast<float>(meta.at("lr"));
  const auto ms = time_steps(ctx, warmup, iters, [&](int) {
    net.forward(images, emb, true);
    net.backward(grad);
    sgd.step(net.parameter_buffer(), net.gradient_buffer(), lr);
  });
  const std::string op = std::string("resnet_step") + (cfg.autotune_convolutions ? "_autotuned" : "") +
                         (cfg.deterministic_convolutions ? "" : "_nondeterministic");
  write_timing(dir, op.c_str(), ctx, ms);
  return 0;
}

int run_knn(const std::string& dir, Context& ctx, int warmup, int iters) {
  const auto meta = read_meta(dir + "/meta.txt", {"Q", "N", "D", "k", "C", "sigma"});
  const auto Q = static_cast<std::int64_t>(meta.at("Q")), N = static_cast<std::int64_t>(meta.at("N"));
  const auto D = static_cast<std::int64_t>(meta.at("D")), k = static_cast<std::int64_t>(meta.at("k"));
  const Device dev = ctx.device();
  auto q_h = read_array<float>(dir + "/queries.f32", Q * D);
  auto t_h = read_array<float>(dir + "/train.f32", N * D);
  auto l_h = read_array<std::int64_t>(dir + "/labels.i64", N);
  auto ql_h = read_array<std::int64_t>(dir + "/qlabels.i64", Q);
  Tensor q({Q, D}, DType::kFloat32, dev), t({N, D}, DType::kFloat32, dev), l({N}, DType::kInt64, dev),
      ql({Q}, DType::kInt64, dev), values({Q, k}, DType::kFloat32, dev), indices({Q, k}, DType::kInt64, dev);
  copy(ctx, q, view(q_h.data(), {Q, D}));
  copy(ctx, t, view(t_h.data(), {N, D}));
  copy(ctx, l, view(l_h.data(), {N}));
  copy(ctx, ql, view(ql_h.data(), {Q}));
  KnnConfig cfg;
  cfg.k = k;
  cfg.sigma = static_cast<float>(meta.at("sigma"));
  cfg.num_classes = static_cast<std::int64_t>(meta.at("C"));
  // 1. Equivalence: exact fp32 similarities.
  knn_topk(ctx, q, t, k, values, indices);
  const KnnResult r = knn_classify(ctx, cfg, q, ql, t, l);
  std::vector<float> v_h(static_cast<std::size_t>(Q * k));
  copy(ctx, view(v_h.data(), {Q, k}), values);
  write_array(dir + "/values.f32", v_h);
  write_array(dir + "/predictions.i64", r.predictions);
  // 2. Timing: the whole evaluation (top-k search, vote, accuracy on the host).
  const auto ms = time_steps(ctx, warmup, iters, [&](int) { (void)knn_classify(ctx, cfg, q, ql, t, l); });
  write_timing(dir, "knn_classify", ctx, ms);
  return 0;
}

int run_train(const std::string& dir, Context& ctx, int, int) {
  const auto meta = read_meta(dir + "/meta.txt", {"B", "K", "softmax", "steps", "warmup"});
  TrainStepConfig cfg;  // CIFAR preset: ResNet-18 width 64, 32x32, tau 0.1, SGD 0.9 / 5e-4
  cfg.batch_size = static_cast<std::int64_t>(meta.at("B"));
  cfg.num_negatives = static_cast<std::int64_t>(meta.at("K"));
  cfg.criterion = meta.at("softmax") != 0 ? CriterionKind::kSoftmax : CriterionKind::kNce;
  cfg.temperature = 0.1f;
  cfg.validate_indices = false;
  const int steps = static_cast<int>(meta.at("steps")), warmup = static_cast<int>(meta.at("warmup"));
  ImageSet host;
  std::ifstream path_file(dir + "/data_path.txt");
  std::string data_path;
  if (path_file && std::getline(path_file, data_path) && !data_path.empty()) {
    host = load_image_folder(data_path);
  } else {
    SyntheticConfig sc;
    sc.count = meta.count("N") ? static_cast<std::int64_t>(meta.at("N")) : 50000;
    host = make_synthetic(sc);
  }
  const std::int64_t N = host.size(), B = cfg.batch_size, batches = N / B;
  const ImageSet set = host.to(ctx);
  TrainStep step(ctx, cfg, N);
  Tensor perm({N}, DType::kInt64, ctx.device());
  std::int64_t epoch = -1;
  auto one = [&](int s, bool fetch) {
    const std::int64_t e = s / batches, b = s % batches;
    if (e != epoch) {
      epoch = e;
      epoch_permutation(ctx, 0, static_cast<std::uint64_t>(e), perm);
    }
    const TensorView idx(perm.data_as<std::int64_t>() + b * B, DType::kInt64, {B}, ctx.device());
    return step.step(set, idx, e, 0.03f, fetch).loss;
  };
  const float first = one(0, true);
  for (int s = 1; s < warmup; ++s) one(s, false);
  ctx.synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  float last = 0;
  for (int s = 0; s < steps; ++s) last = one(warmup + s, s + 1 == steps);
  ctx.synchronize();
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / steps;
  std::ofstream(dir + "/losses.txt") << first << " " << last << "\n";
  write_timing(dir, cfg.criterion == CriterionKind::kNce ? "train_step_nce" : "train_step_softmax", ctx,
               std::vector<double>(1, ms));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || (std::strcmp(argv[1], "nce") != 0 && std::strcmp(argv[1], "softmax") != 0 &&
                    std::strcmp(argv[1], "resnet") != 0 && std::strcmp(argv[1], "knn") != 0 &&
                    std::strcmp(argv[1], "train") != 0)) {
    std::fprintf(stderr, "usage: %s nce|softmax|resnet|knn|train --dir DIR [--device cpu|cuda|auto] [--warmup W] [--iters N]\n",
                 argv[0]);
    return 2;
  }
  const std::string op = argv[1];
  std::string dir, device = "auto";
  int warmup = 5, iters = 50;
  for (int a = 2; a + 1 < argc; a += 2) {
    const std::string k = argv[a], v = argv[a + 1];
    if (k == "--dir") dir = v;
    else if (k == "--device") device = v;
    else if (k == "--warmup") warmup = std::stoi(v);
    else if (k == "--iters") iters = std::stoi(v);
    else {
      std::fprintf(stderr, "npid_op: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (dir.empty()) {
    std::fprintf(stderr, "npid_op: --dir is required\n");
    return 2;
  }
  try {
    const bool cuda = device == "cuda" || (device == "auto" && cuda_available());
    Context ctx = cuda ? Context::cuda() : Context::cpu();
    if (op == "resnet") return run_resnet(dir, ctx, warmup, iters);
    if (op == "knn") return run_knn(dir, ctx, warmup, iters);
    if (op == "train") return run_train(dir, ctx, warmup, iters);
    return op == "nce" ? run_nce(dir, ctx, warmup, iters) : run_softmax(dir, ctx, warmup, iters);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "npid_op: %s\n", e.what());
    return 1;
  }
}

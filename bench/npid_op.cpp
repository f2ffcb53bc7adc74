// npid_op -- our side of the PyTorch side-by-side (tools/side_by_side.sh).
//
// Reads one problem written by bench/torch/side_by_side.py, runs our op once
// on exactly those inputs and writes the outputs back (equivalence), then times
// the op as training runs it (warm-up, then CUDA events per iteration; median).
//
//   npid_op nce --dir DIR [--device cpu|cuda] [--warmup 5] [--iters 50]
//
// DIR holds meta.txt ("key value" lines: B K D N tau z momentum lambda) and raw
// little-endian arrays: features.f32 (B,D), bank.f32 (N,D), targets.i64 (B),
// negatives.i64 (B,K). Written: loss.f32 (1), grad.f32 (B,D), updated_rows.f32
// (B,D) = the bank rows at `targets` after the update, and timing.json.
//
// Equivalence uses the explicit negatives; the timed loop draws negatives
// in-kernel as a training step does (the baseline draws them with
// torch.randint inside its timed loop).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

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

std::map<std::string, double> read_meta(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(ErrorKind::kIo, "npid_op: cannot open " + path);
  std::map<std::string, double> meta;
  std::string key;
  double value;
  while (in >> key >> value) meta[key] = value;
  for (const char* k : {"B", "K", "D", "N", "tau", "z", "momentum", "lambda"})
    if (!meta.count(k)) throw Error(ErrorKind::kIo, std::string("npid_op: meta.txt lacks '") + k + "'");
  return meta;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

int run_nce(const std::string& dir, const std::string& device, int warmup, int iters) {
  const auto meta = read_meta(dir + "/meta.txt");
  const auto B = static_cast<std::int64_t>(meta.at("B")), K = static_cast<std::int64_t>(meta.at("K"));
  const auto D = static_cast<std::int64_t>(meta.at("D")), N = static_cast<std::int64_t>(meta.at("N"));
  const float momentum = static_cast<float>(meta.at("momentum"));
  const float z0 = static_cast<float>(meta.at("z"));

  const bool cuda = device == "cuda" || (device == "auto" && cuda_available());
  Context ctx = cuda ? Context::cuda() : Context::cpu();
  const Device dev = ctx.device();

  auto features_h = read_array<float>(dir + "/features.f32", B * D);
  auto bank_h = read_array<float>(dir + "/bank.f32", N * D);
  auto targets_h = read_array<std::int64_t>(dir + "/targets.i64", B);
  auto negatives_h = read_array<std::int64_t>(dir + "/negatives.i64", B * K);

  Tensor features({B, D}, DType::kFloat32, dev), bank({N, D}, DType::kFloat32, dev);
  Tensor targets({B}, DType::kInt64, dev), negatives({B, K}, DType::kInt64, dev);
  Tensor z({1}, DType::kFloat32, dev), loss({1}, DType::kFloat32, dev), grad({B, D}, DType::kFloat32, dev);
  copy(ctx, features, view(features_h.data(), {B, D}));
  copy(ctx, bank, view(bank_h.data(), {N, D}));
  copy(ctx, targets, view(targets_h.data(), {B}));
  copy(ctx, negatives, view(negatives_h.data(), {B, K}));
  copy(ctx, z, view(&z0, {1}));

  NceConfig cfg;
  cfg.num_negatives = K;
  cfg.temperature = static_cast<float>(meta.at("tau"));
  cfg.proximal_lambda = static_cast<float>(meta.at("lambda"));

  // 1. Equivalence: one step on the given inputs, explicit negatives, checked.
  nce_forward_backward(ctx, cfg, {features, targets, bank, negatives}, 0, ZUpdate::kKeep, z,
                       {loss, grad, {}, {}});
  bank_update(ctx, bank, features, targets, momentum);
  std::vector<float> loss_h(1), grad_h(B * D), bank_after(N * D), rows(B * D);
  copy(ctx, view(loss_h.data(), {1}), loss);
  copy(ctx, view(grad_h.data(), {B, D}), grad);
  copy(ctx, view(bank_after.data(), {N, D}), bank);
  for (std::int64_t i = 0; i < B; ++i)
    std::copy_n(&bank_after[targets_h[i] * D], D, &rows[i * D]);
  write_array(dir + "/loss.f32", loss_h);
  write_array(dir + "/grad.f32", grad_h);
  write_array(dir + "/updated_rows.f32", rows);

  // 2. Timing: the steady-state training step -- in-kernel negatives, no
  // input validation (no host sync), forward+backward then the bank update.
  cfg.validate_inputs = false;
  ctx.workspace().reserve(nce_workspace_bytes(ctx, B, D, K), ctx.stream());
  std::vector<double> ms;
  cudaEvent_t start = nullptr, stop = nullptr;
  if (cuda) {
    NPID_CUDA_CHECK(cudaEventCreate(&start));
    NPID_CUDA_CHECK(cudaEventCreate(&stop));
  }
  for (int it = 0; it < warmup + iters; ++it) {
    const auto t0 = std::chrono::steady_clock::now();
    if (cuda) NPID_CUDA_CHECK(cudaEventRecord(start, ctx.stream()));
    nce_forward_backward(ctx, cfg, {features, targets, bank, {}}, static_cast<std::uint64_t>(it + 1),
                         ZUpdate::kKeep, z, {loss, grad, {}, {}});
    bank_update(ctx, bank, features, targets, momentum, false);
    double elapsed;
    if (cuda) {
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
  if (cuda) {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
  const std::string name = cuda ? ctx.device_info().name : std::string("cpu");
  FILE* f = std::fopen((dir + "/timing.json").c_str(), "w");
  if (f == nullptr) throw Error(ErrorKind::kIo, "npid_op: cannot write timing.json");
  std::fprintf(f, "{\"side\": \"npid\", \"op\": \"nce_step\", \"device\": \"%s\", \"median_ms\": %.6f, "
                  "\"min_ms\": %.6f, \"iters\": %d}\n",
               name.c_str(), median(ms), ms.empty() ? 0.0 : *std::min_element(ms.begin(), ms.end()), iters);
  std::fclose(f);
  std::printf("npid nce_step on %s: median %.4f ms over %d iterations\n", name.c_str(), median(ms), iters);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "nce") != 0) {
    std::fprintf(stderr, "usage: %s nce --dir DIR [--device cpu|cuda|auto] [--warmup W] [--iters N]\n", argv[0]);
    return 2;
  }
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
    return run_nce(dir, device, warmup, iters);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "npid_op: %s\n", e.what());
    return 1;
  }
}

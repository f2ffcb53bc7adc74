// bench_data -- input pipeline throughput:
//   BM_JpegDecode        JPEG decode images/s on ONE core (32x32 and 256x256)
//   BM_LoadFolder        decode a whole image folder on all cores ($NPID_CIFAR_DIR/train)
//   BM_LoadResident      ... and upload it to the GPU (the resident data set)
//   BM_AugmentGpu        fused augmentation images/s, CIFAR 32x32 and ImageNet 224x224, B = 256
//   BM_AugmentCpu        the CPU reference, CIFAR preset
//   BM_StreamingCpu      streaming loader (decode on threads + augment) on a CPU context
// $NPID_CIFAR_DIR: the unpacked ../shared/data/cifar10-jpeg.tar.gz (train/, test/);
// without it the folder cases use generated JPEGs, and BM_LoadFolder is skipped.
#include <benchmark/benchmark.h>
#include <turbojpeg.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "augment.h"  // launch_augment: the kernel as TrainStep runs it
#include "bench_common.h"
#include "npid/npid.h"

namespace fs = std::filesystem;
using namespace npid;

namespace {

std::vector<std::uint8_t> encode_jpeg(const std::uint8_t* px, int h, int w) {
  tjhandle tj = tjInitCompress();
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  tjCompress2(tj, px, w, 0, h, TJPF_RGB, &buf, &size, TJSAMP_420, 75, 0);
  std::vector<std::uint8_t> out(buf, buf + size);
  tjFree(buf);
  tjDestroy(tj);
  return out;
}

std::string cifar_dir() {
  const char* d = std::getenv("NPID_CIFAR_DIR");
  return d && fs::is_directory(std::string(d) + "/train") ? std::string(d) : std::string();
}

// A folder of generated 32x32 JPEGs (10 classes) when CIFAR is absent.
const std::string& generated_folder() {
  static std::string root = [] {
    const fs::path r = fs::temp_directory_path() / ("npid_bench_data_" + std::to_string(::getpid()));
    SyntheticConfig sc;
    sc.count = 5000;
    const ImageSet s = make_synthetic(sc);
    for (std::int64_t i = 0; i < s.size(); ++i) {
      const fs::path dir = r / s.class_names[static_cast<std::size_t>(s.labels[i])];
      fs::create_directories(dir);
      const auto bytes = encode_jpeg(s.pixels.data_as<const std::uint8_t>() + i * 3072, 32, 32);
      std::ofstream(dir / (std::to_string(i) + ".jpg"), std::ios::binary)
          .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    }
    return r.string();
  }();
  // Registered after `root` is constructed, so it runs before `root` is
  // destroyed (handlers and static destructors run in reverse order).
  static const bool cleanup = (std::atexit([] {
                                 std::error_code ec;
                                 fs::remove_all(generated_folder(), ec);
                               }),
                               true);
  (void)cleanup;
  return root;
}

void BM_JpegDecode(benchmark::State& state) {
  const int S = static_cast<int>(state.range(0));
  SyntheticConfig sc;
  sc.count = 64;
  sc.image_size = S;
  const ImageSet s = make_synthetic(sc);
  std::vector<std::vector<std::uint8_t>> files;
  for (std::int64_t i = 0; i < s.size(); ++i)
    files.push_back(encode_jpeg(s.pixels.data_as<const std::uint8_t>() + i * S * S * 3, S, S));
  std::size_t k = 0;
  for (auto _ : state) {
    const auto& f = files[k++ % files.size()];
    benchmark::DoNotOptimize(decode_image(f.data(), f.size(), "bench.jpg").pixels.data());
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["images_per_s_per_core"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

void BM_LoadFolder(benchmark::State& state) {
  const std::string dir = cifar_dir();
  if (dir.empty()) {
    state.SkipWithError("skipped: set NPID_CIFAR_DIR to the unpacked CIFAR-10 image folder");
    for (auto _ : state) {
    }
    return;
  }
  std::int64_t n = 0;
  for (auto _ : state) n = load_image_folder(dir + "/train").size();
  state.SetItemsProcessed(state.iterations() * n);
  state.counters["threads"] = static_cast<double>(std::thread::hardware_concurrency());
}

void BM_LoadResident(benchmark::State& state) {
  if (bench::skip_without_gpu(state)) return;
  const std::string dir = cifar_dir().empty() ? generated_folder() : cifar_dir() + "/train";
  Context ctx = Context::cuda();
  std::int64_t n = 0;
  for (auto _ : state) {
    const ImageSet resident = load_image_folder(dir).to(ctx);
    n = resident.size();
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.SetLabel(cifar_dir().empty() ? "generated 32x32 JPEGs" : "CIFAR-10 train");
}

// B = 256 images per launch from a resident set of `pool` source images.
void run_augment(benchmark::State& state, Context& ctx, const AugmentConfig& c, std::int64_t src_size) {
  SyntheticConfig sc;
  sc.count = src_size == 32 ? 4096 : 512;
  sc.image_size = src_size;
  const ImageSet set = make_synthetic(sc).to(ctx);
  const std::int64_t B = 256;
  std::vector<std::int64_t> idx(B);
  for (std::int64_t i = 0; i < B; ++i) idx[i] = (i * 7919) % sc.count;
  Tensor src({B}, DType::kInt64, ctx.device());
  copy(ctx, src, view(idx.data(), {B}));
  Tensor out({B, c.out_height, c.out_width, 3}, DType::kFloat32, ctx.device());
  // The op alone, as TrainStep runs it: augment_batch() would add its
  // argument checks (an index scan with a host sync) to every timed batch.
  // One checked call first, so a broken setup still fails loudly.
  augment_batch(ctx, c, set.pixels, set.descs, src, {}, 1, 0, out);
  AugmentProblem p;
  p.config = c;
  p.pixels = set.pixels.data_as<const std::uint8_t>();
  p.descs = set.descs.data_as<const std::int64_t>();
  p.sources = src.data_as<const std::int64_t>();
  p.instances = p.sources;
  p.batch = B;
  p.seed = 1;
  p.out = out.data_as<float>();
  bench::IterationTimer timer(ctx);
  std::uint64_t epoch = 0;
  double total = 0;
  for (auto _ : state) {
    const double sec = timer.seconds([&] {
      p.epoch = epoch++;
      if (ctx.is_cuda())
        launch_augment(ctx, p);
      else
        augment_cpu(p, ctx.cpu_threads());
    });
    state.SetIterationTime(sec);
    total += sec;
  }
  state.counters["images_per_s"] = static_cast<double>(B * state.iterations()) / total;
}

void BM_AugmentGpu(benchmark::State& state) {
  if (bench::skip_without_gpu(state)) return;
  static Context ctx = Context::cuda();
  const bool imagenet = state.range(0) == 224;
  run_augment(state, ctx, imagenet ? AugmentConfig::imagenet_train() : AugmentConfig::cifar10_train(),
              imagenet ? 320 : 32);
}

void BM_AugmentCpu(benchmark::State& state) {
  Context ctx = Context::cpu();
  run_augment(state, ctx, AugmentConfig::cifar10_train(), 32);
}

void BM_StreamingCpu(benchmark::State& state) {
  const std::string dir = cifar_dir().empty() ? generated_folder() : cifar_dir() + "/train";
  Context ctx = Context::cpu();
  LoaderConfig cfg;
  cfg.batch_size = 256;
  cfg.threads = static_cast<int>(state.range(0));
  Loader loader = Loader::streaming(ctx, scan_image_folder(dir), cfg);
  std::int64_t epoch = 0, images = 0;
  loader.start_epoch(epoch);
  for (auto _ : state) {
    Batch b;
    if (!loader.next(&b)) {
      loader.start_epoch(++epoch);
      loader.next(&b);
    }
    images += b.size;
  }
  state.SetItemsProcessed(images);
  state.counters["decode_threads"] = static_cast<double>(cfg.threads);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  bench::report_cuda();
  benchmark::AddCustomContext("cifar_dir", cifar_dir().empty() ? "(unset: generated JPEGs)" : cifar_dir());
  benchmark::RegisterBenchmark("BM_JpegDecode", BM_JpegDecode)->ArgName("S")->Arg(32)->Arg(256);
  benchmark::RegisterBenchmark("BM_LoadFolder", BM_LoadFolder)->Unit(benchmark::kMillisecond)->Iterations(1);
  benchmark::RegisterBenchmark("BM_LoadResident", BM_LoadResident)->Unit(benchmark::kMillisecond)->Iterations(1);
  benchmark::RegisterBenchmark("BM_AugmentGpu", BM_AugmentGpu)
      ->ArgName("S")->Arg(32)->Arg(224)->UseManualTime()->Unit(benchmark::kMicrosecond)->MinTime(0.3);
  benchmark::RegisterBenchmark("BM_AugmentCpu", BM_AugmentCpu)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(0.5);
  const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  auto* s = benchmark::RegisterBenchmark("BM_StreamingCpu", BM_StreamingCpu)->ArgName("threads")->Arg(1);
  if (hw > 1) s->Arg(hw);
  s->Unit(benchmark::kMillisecond)->MinTime(1.0)->UseRealTime();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

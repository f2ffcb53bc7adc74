// Data on CUDA: the fused augmentation kernel against its CPU reference on
// real images (CIFAR-10 from $NPID_CIFAR_DIR when set, else the synthetic set
// plus odd-sized images), the epoch permutation, and both loader modes
// against their CPU runs.
#include <cmath>
#include <cstdlib>
#include <filesystem>

#include <unistd.h>

#include "common/test_util.h"

using namespace npid;
using test::to_device;
using test::to_host;

namespace {

// A synthetic 32x32 set as an image folder of PNGs (lossless: the loaders
// read back exactly its pixels), root/<class>/<index>.png; root is replaced.
void write_png_folder(const ImageSet& set, const std::filesystem::path& root) {
  std::filesystem::remove_all(root);
  for (std::int64_t i = 0; i < set.size(); ++i) {
    const std::filesystem::path dir = root / set.class_names[static_cast<std::size_t>(set.labels[i])];
    std::filesystem::create_directories(dir);
    char name[32];
    std::snprintf(name, sizeof name, "%05lld.png", static_cast<long long>(i));
    write_png((dir / name).string(), set.pixels.data_as<const std::uint8_t>() + i * 3072, 32, 32);
  }
}

// Real images when the device check unpacked CIFAR-10, plus images of odd
// sizes (RandomResizedCrop and ImageNet transforms from non-square sources).
ImageSet test_images() {
  ImageSetBuilder b;
  const char* dir = std::getenv("NPID_CIFAR_DIR");
  if (dir && std::filesystem::is_directory(std::string(dir) + "/test")) {
    ImageFolderOptions opt;
    opt.limit = 2000;
    const ImageSet real = load_image_folder(std::string(dir) + "/test", opt);
    for (std::int64_t i = 0; i < real.size(); i += 5) {
      b.add(real.pixels.data_as<const std::uint8_t>() + real.descs.data_as<const std::int64_t>()[3 * i], 32, 32, real.labels[i]);
    }
  } else {
    SyntheticConfig sc;
    sc.count = 400;
    const ImageSet s = make_synthetic(sc);
    for (std::int64_t i = 0; i < s.size(); ++i) b.add(s.pixels.data_as<const std::uint8_t>() + i * 3072, 32, 32, s.labels[i]);
  }
  for (int k = 0; k < 6; ++k) {
    SyntheticConfig sc;
    sc.count = 1;
    sc.image_size = 40 + 37 * k;
    sc.seed = static_cast<std::uint64_t>(k);
    const ImageSet s = make_synthetic(sc);
    // Crop to a non-square h x w.
    const std::int64_t S = sc.image_size, h = S, w = S - 3 * k - 5;
    std::vector<std::uint8_t> px(static_cast<std::size_t>(h * w * 3));
    for (std::int64_t y = 0; y < h; ++y)
      std::copy_n(s.pixels.data_as<const std::uint8_t>() + y * S * 3, w * 3, px.data() + y * w * 3);
    b.add(px.data(), h, w, 0);
  }
  return b.finish({"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"});
}

std::vector<float> run(Context& ctx, const AugmentConfig& c, const ImageSet& set,
                       const std::vector<std::int64_t>& src, std::uint64_t epoch) {
  const auto B = static_cast<std::int64_t>(src.size());
  Tensor s = ctx.is_cuda() ? to_device(ctx, src, {B}) : Tensor({B}, DType::kInt64, Device::cpu());
  if (!ctx.is_cuda()) std::copy(src.begin(), src.end(), s.data_as<std::int64_t>());
  Tensor out({B, c.out_height, c.out_width, 3}, DType::kFloat32, ctx.device());
  augment_batch(ctx, c, set.pixels, set.descs, s, {}, 17, epoch, out);
  return to_host<float>(ctx, out);
}

}  // namespace

TEST_CASE("augment: CUDA kernel matches the CPU reference (CIFAR and ImageNet presets)", "[gpu][augment][heavy]") {
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  const ImageSet host = test_images();
  const ImageSet dev = host.to(gpu);
  std::vector<std::int64_t> all(static_cast<std::size_t>(host.size()));
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<std::int64_t>(i);
  struct Preset { const char* name; AugmentConfig c; };
  const Preset presets[] = {{"cifar10_train", AugmentConfig::cifar10_train()},
                            {"cifar10_eval", AugmentConfig::cifar10_eval()},
                            {"imagenet_train", AugmentConfig::imagenet_train()},
                            {"imagenet_eval", AugmentConfig::imagenet_eval()}};
  for (const Preset& p : presets) {
    INFO(p.name);
    // Explicit parameters: the same parameters must give the same pixels.
    std::vector<AugmentParams> params;
    for (std::int64_t i = 0; i < host.size(); ++i)
      params.push_back(draw_augment_params(p.c, 17, 2, i, host.height(i), host.width(i)));
    const std::int64_t B = host.size(), HW = p.c.out_height * p.c.out_width * 3;
    Tensor src_d = to_device(gpu, all, {B});
    Tensor out_d({B, p.c.out_height, p.c.out_width, 3}, DType::kFloat32, gpu.device());
    augment_batch_with_params(gpu, p.c, dev.pixels, dev.descs, src_d, params.data(), out_d);
    std::vector<float> out_c(static_cast<std::size_t>(B * HW));
    augment_batch_with_params(cpu, p.c, host.pixels, host.descs, view(all.data(), {B}), params.data(),
                              view(out_c.data(), {B, p.c.out_height, p.c.out_width, 3}));
    const std::vector<float> g = to_host<float>(gpu, out_d);
    // Contrast means are summed in different orders (float block reduction vs
    // double): a few ulp of a value in [0, 1], amplified by 1/std < 5.
    CHECK(test::max_abs_diff(g, out_c) < 2e-5);

    // In-kernel draws: device expf/logf may differ from the host's by an ulp,
    // which can move a rounded crop edge by one pixel; at most 1% of images.
    const std::vector<float> gd = run(gpu, p.c, dev, all, 2), cd = run(cpu, p.c, host, all, 2);
    int differing = 0;
    for (std::int64_t i = 0; i < B; ++i) {
      differing += !(test::max_abs_diff(&gd[i * HW], &cd[i * HW], static_cast<std::size_t>(HW)) <= 2e-5);
    }
    CHECK(differing <= B / 100);
  }
}

TEST_CASE("epoch permutation: CUDA radix sort equals the CPU reference", "[gpu][augment]") {
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  for (std::int64_t n : {1LL, 2LL, 1000LL, 50000LL, 1281167LL}) {
    Tensor d({n}, DType::kInt64, gpu.device());
    epoch_permutation(gpu, 5, 7, d);
    std::vector<std::int64_t> c(static_cast<std::size_t>(n));
    epoch_permutation(cpu, 5, 7, view(c.data(), {n}));
    INFO("n=" << n);
    CHECK(to_host<std::int64_t>(gpu, d) == c);
  }
}

TEST_CASE("loader: resident and streaming on CUDA equal the CPU loader", "[gpu][loader][heavy]") {
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  // A small image folder of PNGs (exact pixels).
  namespace fs = std::filesystem;
  const fs::path root = fs::temp_directory_path() / "npid_gpu_loader";
  SyntheticConfig sc;
  sc.count = 300;
  write_png_folder(make_synthetic(sc), root);
  const ImageFolderIndex index = scan_image_folder(root.string());
  LoaderConfig cfg;
  cfg.batch_size = 64;
  cfg.seed = 3;
  cfg.prefetch = 2;
  // drop_last = false: 300 = 4 x 64 + a last batch of 44 (the partial-batch
  // paths of both loaders, and an odd number of batches per epoch).
  for (const auto& [streaming, drop_last] : {std::pair{false, true}, std::pair{true, true}, std::pair{false, false},
                                             std::pair{true, false}}) {
    cfg.drop_last = drop_last;
    INFO("streaming=" << streaming << " drop_last=" << drop_last);
    const ImageSet folder_set = load_image_folder(root.string());
    Loader g = streaming ? Loader::streaming(gpu, index, cfg) : Loader::resident(gpu, folder_set, cfg);
    Loader c = streaming ? Loader::streaming(cpu, index, cfg) : Loader::resident(cpu, folder_set, cfg);
    for (std::int64_t epoch : {0, 1}) {
      g.start_epoch(epoch);
      c.start_epoch(epoch);
      Batch gb, cb;
      int batches = 0;
      while (c.next(&cb)) {
        ++batches;
        REQUIRE(g.next(&gb));
        REQUIRE(std::equal(cb.host_indices, cb.host_indices + cb.size, gb.host_indices));
        CHECK(to_host<std::int64_t>(gpu, gb.indices) ==
              std::vector<std::int64_t>(cb.host_indices, cb.host_indices + cb.size));
        const std::vector<float> gi = to_host<float>(gpu, gb.images);
        const std::vector<float> ci(static_cast<const float*>(cb.images.data),
                                    static_cast<const float*>(cb.images.data) + cb.images.numel());
        // Same images up to the draw caveat above: compare per image.
        int differing = 0;
        const std::int64_t HW = 32 * 32 * 3;
        for (std::int64_t i = 0; i < cb.size; ++i) {
          differing += !(test::max_abs_diff(&gi[i * HW], &ci[i * HW], static_cast<std::size_t>(HW)) <= 2e-5);
        }
        CHECK(differing <= 1);
      }
      CHECK_FALSE(g.next(&gb));
      CHECK(batches == (drop_last ? 4 : 5));
    }
  }
  fs::remove_all(root);
}

TEST_CASE("loader on CUDA: streaming equals resident bit for bit with one prefetch slot, an odd batch count and a "
          "restart mid-epoch",
          "[gpu][loader]") {
  Context gpu = Context::cuda();
  namespace fs = std::filesystem;
  const fs::path root = fs::temp_directory_path() / ("npid_gpu_loader_restart_" + std::to_string(::getpid()));
  SyntheticConfig sc;
  sc.count = 150;
  sc.seed = 11;
  write_png_folder(make_synthetic(sc), root);
  const ImageFolderIndex index = scan_image_folder(root.string());
  const ImageSet folder_set = load_image_folder(root.string());
  LoaderConfig cfg;
  cfg.batch_size = 32;  // 150 = 4 x 32 + 22: five batches, the last partial
  cfg.seed = 7;
  cfg.prefetch = 1;     // the producer and the consumer hand one slot back and forth
  cfg.drop_last = false;
  Loader s = Loader::streaming(gpu, index, cfg);
  Loader r = Loader::resident(gpu, folder_set, cfg);
  // (epoch, batches taken before the next start_epoch; -1 = the whole epoch)
  const std::pair<std::int64_t, int> plan[] = {{0, 2}, {1, -1}, {1, 3}, {2, -1}};
  for (const auto& [epoch, take] : plan) {
    INFO("epoch " << epoch << ", batches " << take);
    s.start_epoch(epoch);
    r.start_epoch(epoch);
    Batch sb, rb;
    int n = 0;
    while ((take < 0 || n < take) && r.next(&rb)) {
      REQUIRE(s.next(&sb));
      ++n;
      REQUIRE(sb.size == rb.size);
      REQUIRE(std::equal(rb.host_indices, rb.host_indices + rb.size, sb.host_indices));
      CHECK(to_host<float>(gpu, sb.images) == to_host<float>(gpu, rb.images));
      CHECK(to_host<std::int64_t>(gpu, sb.indices) == to_host<std::int64_t>(gpu, rb.indices));
    }
    if (take < 0) {
      CHECK(n == 5);
      CHECK_FALSE(s.next(&sb));
    }
  }
  fs::remove_all(root);
}

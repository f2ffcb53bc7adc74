// Loader: resident and streaming modes yield the same batches (order from the
// epoch permutation, augmentation keyed by instance), cover the epoch, and
// handle bad files per policy.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "common/test_util.h"

using namespace npid;
namespace fs = std::filesystem;

namespace {

struct Folder {
  fs::path root;
  ImageSet set;  // the same images in memory
  explicit Folder(int count) {
    root = fs::temp_directory_path() / ("npid_loader_" + std::to_string(::getpid()) + "_" + std::to_string(count));
    fs::remove_all(root);
    SyntheticConfig sc;
    sc.count = count;
    sc.image_size = 16;
    sc.num_classes = 3;
    const ImageSet synth = make_synthetic(sc);
    // Class directories c0..c2, files named so that sorted order = index order
    // within a class; PNG keeps the pixels exact.
    ImageSetBuilder b;
    for (int cls = 0; cls < 3; ++cls) {
      fs::create_directories(root / ("c" + std::to_string(cls)));
      for (int i = cls; i < count; i += 3) {
        const auto* d = synth.descs.data_as<const std::int64_t>();
        const auto* px = synth.pixels.data_as<const std::uint8_t>() + d[3 * i];
        char name[32];
        std::snprintf(name, sizeof name, "%05d.png", i);
        write_png((root / ("c" + std::to_string(cls)) / name).string(), px, 16, 16);
        b.add(px, 16, 16, cls);
      }
    }
    set = b.finish({"c0", "c1", "c2"});
  }
  ~Folder() {
    std::error_code ec;
    fs::remove_all(root, ec);
  }
};

LoaderConfig small_config() {
  LoaderConfig c;
  c.batch_size = 8;
  c.augment = AugmentConfig::cifar10_train();
  c.augment.out_height = c.augment.out_width = 12;
  c.seed = 21;
  c.threads = 2;
  c.prefetch = 2;
  return c;
}

}  // namespace

TEST_CASE("Loader: resident epochs follow the epoch permutation and cover the data set", "[loader]") {
  Context ctx = Context::cpu();
  SyntheticConfig sc;
  sc.count = 30;
  sc.image_size = 16;
  const ImageSet set = make_synthetic(sc);
  LoaderConfig cfg = small_config();
  cfg.drop_last = false;
  Loader loader = Loader::resident(ctx, set, cfg);
  REQUIRE(loader.size() == 30);
  REQUIRE(loader.batches_per_epoch() == 4);
  for (std::int64_t epoch : {0, 1}) {
    std::vector<std::int64_t> perm(30);
    epoch_permutation(ctx, cfg.seed, static_cast<std::uint64_t>(epoch), view(perm.data(), {30}));
    loader.start_epoch(epoch);
    Batch b;
    std::vector<std::int64_t> seen;
    while (loader.next(&b)) {
      REQUIRE(b.epoch == epoch);
      REQUIRE(b.size == (b.index < 3 ? 8 : 6));
      REQUIRE(b.images.shape == Shape{b.size, 12, 12, 3});
      std::vector<float> expect(static_cast<std::size_t>(b.size * 12 * 12 * 3));
      augment_batch(ctx, cfg.augment, set.pixels, set.descs, b.indices, {}, cfg.seed,
                    static_cast<std::uint64_t>(epoch), view(expect.data(), {b.size, 12, 12, 3}));
      REQUIRE(std::equal(expect.begin(), expect.end(), static_cast<const float*>(b.images.data)));
      for (std::int64_t i = 0; i < b.size; ++i) {
        REQUIRE(b.host_indices[i] == perm[static_cast<std::size_t>(b.index * 8 + i)]);
        seen.push_back(b.host_indices[i]);
      }
    }
    REQUIRE(std::set<std::int64_t>(seen.begin(), seen.end()).size() == 30);
    REQUIRE_FALSE(loader.next(&b));
  }
  // drop_last drops the partial batch; shuffle off gives 0..N-1.
  cfg.drop_last = true;
  cfg.shuffle = false;
  Loader ordered = Loader::resident(ctx, set, cfg);
  REQUIRE(ordered.batches_per_epoch() == 3);
  ordered.start_epoch(5);
  Batch b;
  REQUIRE(ordered.next(&b));
  REQUIRE(ordered.next(&b));
  for (int i = 0; i < 8; ++i) REQUIRE(b.host_indices[i] == 8 + i);
}

TEST_CASE("Loader: streaming from an image folder equals the resident loader", "[loader]") {
  Folder folder(40);
  Context ctx = Context::cpu();
  const ImageFolderIndex index = scan_image_folder(folder.root.string());
  REQUIRE(index.files.size() == 40);
  const LoaderConfig cfg = small_config();
  Loader streaming = Loader::streaming(ctx, index, cfg);
  Loader resident = Loader::resident(ctx, folder.set, cfg);
  REQUIRE(streaming.labels() == folder.set.labels);
  for (std::int64_t epoch : {0, 3}) {
    streaming.start_epoch(epoch);
    resident.start_epoch(epoch);
    Batch s, r;
    int batches = 0;
    while (resident.next(&r)) {
      REQUIRE(streaming.next(&s));
      REQUIRE(s.size == r.size);
      REQUIRE(std::equal(r.host_indices, r.host_indices + r.size, s.host_indices));
      const auto* a = static_cast<const float*>(s.images.data);
      const auto* e = static_cast<const float*>(r.images.data);
      REQUIRE(std::equal(a, a + s.images.numel(), e));
      ++batches;
    }
    REQUIRE(batches == 5);
    REQUIRE_FALSE(streaming.next(&s));
  }
  // Restarting mid-epoch is fine.
  streaming.start_epoch(1);
  Batch s;
  REQUIRE(streaming.next(&s));
  streaming.start_epoch(2);
  REQUIRE(streaming.next(&s));
  REQUIRE(s.epoch == 2);
}

TEST_CASE("Loader: a bad file fails naming it, or becomes a counted black image", "[loader]") {
  Folder folder(12);
  // Corrupt one file.
  const fs::path bad = folder.root / "c1" / "00004.png";
  std::ofstream(bad, std::ios::binary | std::ios::trunc) << "garbage";
  Context ctx = Context::cpu();
  const ImageFolderIndex index = scan_image_folder(folder.root.string());
  LoaderConfig cfg = small_config();
  cfg.batch_size = 12;
  Loader failing = Loader::streaming(ctx, index, cfg);
  failing.start_epoch(0);
  Batch b;
  test::require_error([&] { failing.next(&b); }, ErrorKind::kIo, {"00004.png"});
  cfg.on_bad_file = OnBadFile::kSkip;
  Loader skipping = Loader::streaming(ctx, index, cfg);
  skipping.start_epoch(0);
  REQUIRE(skipping.next(&b));
  REQUIRE(skipping.bad_files() == 1);
}

TEST_CASE("Loader rejects bad configurations naming them", "[loader][errors]") {
  Context ctx = Context::cpu();
  SyntheticConfig sc;
  sc.count = 10;
  sc.image_size = 8;
  const ImageSet set = make_synthetic(sc);
  LoaderConfig cfg = small_config();
  cfg.batch_size = 11;
  test::require_error([&] { Loader::resident(ctx, set, cfg); }, ErrorKind::kInvalidArgument,
                      {"Loader", "config.batch_size", "10", "11"});
  cfg.batch_size = 4;
  cfg.augment.hue = 0.7f;
  test::require_error([&] { Loader::resident(ctx, set, cfg); }, ErrorKind::kInvalidArgument, {"config.hue"});
  cfg.augment.hue = 0.1f;
  Loader l = Loader::resident(ctx, set, cfg);
  Batch b;
  test::require_error([&] { l.next(&b); }, ErrorKind::kInvalidArgument, {"start_epoch"});
}

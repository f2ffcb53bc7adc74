// The real CIFAR-10 image folder (../shared/data/cifar10-jpeg.tar.gz, or the
// tarball named as argv[1]): 50,000 + 10,000 images in the official label
// order, every file decodes, and the train split's per-channel mean and std
// are the published figures. Exits 77 (CTest: skipped) without the tarball.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "npid/npid.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  const std::string tarball = argc > 1 ? argv[1] : "";
  if (tarball.empty() || !fs::is_regular_file(tarball)) {
    std::printf("SKIPPED: no CIFAR-10 tarball at '%s'\n", tarball.c_str());
    return 77;
  }
  const fs::path dir = fs::temp_directory_path() / "npid_real_cifar_test";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string cmd = "tar -xzf '" + tarball + "' -C '" + dir.string() + "'";
  if (std::system(cmd.c_str()) != 0) {
    std::printf("FAILED: %s\n", cmd.c_str());
    return 1;
  }
  int failures = 0;
  auto check = [&](bool ok, const std::string& what) {
    std::printf("%s: %s\n", ok ? "ok" : "FAILED", what.c_str());
    failures += !ok;
  };
  const char* names[10] = {"airplane", "automobile", "bird", "cat", "deer",
                           "dog", "frog", "horse", "ship", "truck"};
  try {
    const npid::ImageSet train = npid::load_image_folder((dir / "train").string());
    const npid::ImageSet test = npid::load_image_folder((dir / "test").string());
    check(train.size() == 50000 && test.size() == 10000, "50,000 train and 10,000 test images");
    bool order = train.num_classes() == 10;
    for (int c = 0; c < 10 && order; ++c) order = train.class_names[c] == names[c];
    for (std::int64_t i = 0; i < train.size() && order; ++i) order = train.labels[i] == i / 5000;
    check(order, "classes in the official label order, 5,000 per class, instance order by class");
    std::int64_t h = 0, w = 0;
    check(train.uniform_size(&h, &w) && h == 32 && w == 32 && train.skipped_files.empty(),
          "every file decodes to 32x32");
    double sum[3] = {0, 0, 0}, sq[3] = {0, 0, 0};
    const auto* px = train.pixels.data_as<const std::uint8_t>();
    const std::int64_t n = train.size() * 32 * 32;
    for (std::int64_t p = 0; p < n; ++p)
      for (int c = 0; c < 3; ++c) {
        const double v = px[3 * p + c] / 255.0;
        sum[c] += v;
        sq[c] += v * v;
      }
    const double mean_ref[3] = {0.4913, 0.4821, 0.4465}, std_ref[3] = {0.2452, 0.2428, 0.2606};
    bool stats = true;
    for (int c = 0; c < 3; ++c) {
      const double mean = sum[c] / n, sd = std::sqrt(sq[c] / n - mean * mean);
      std::printf("channel %d: mean %.4f std %.4f\n", c, mean, sd);
      stats = stats && std::fabs(mean - mean_ref[c]) < 1e-3 && std::fabs(sd - std_ref[c]) < 1e-3;
    }
    check(stats, "per-channel mean and std of the train split match the data set README");
  } catch (const std::exception& e) {
    check(false, e.what());
  }
  fs::remove_all(dir);
  return failures == 0 ? 0 : 1;
}

// train_step -- npid::TrainStep from host code: a few NPID training steps of a
// small ResNet-18 on the built-in synthetic images, printing the loss.
//
//   train_step [--device cpu|cuda] [--steps N]
#include <npid/npid.h>

#include <cstdio>
#include <cstring>
#include <string>

int main(int argc, char** argv) {
  std::string device = "auto";
  int steps = 20;
  for (int a = 1; a + 1 < argc; a += 2) {
    if (std::strcmp(argv[a], "--device") == 0) device = argv[a + 1];
    else if (std::strcmp(argv[a], "--steps") == 0) steps = std::atoi(argv[a + 1]);
  }
  try {
    const bool cuda = device == "cuda" || (device == "auto" && npid::cuda_available());
    npid::Context ctx = cuda ? npid::Context::cuda() : npid::Context::cpu();

    // 4,096 synthetic 16x16 images, kept where the step runs.
    npid::SyntheticConfig data;
    data.count = 4096;
    data.image_size = 16;
    const npid::ImageSet images = npid::make_synthetic(data).to(ctx);

    npid::TrainStepConfig cfg;               // ResNet-18, NCE, bank momentum 0.5, SGD 0.9 / 5e-4
    cfg.model.width = 16;
    cfg.model.image_size = 16;
    cfg.augment.out_height = cfg.augment.out_width = 16;  // CIFAR augmentation at 16x16
    cfg.batch_size = 64;
    cfg.num_negatives = 512;
    cfg.temperature = 0.1f;
    npid::TrainStep step(ctx, cfg, images.size());

    // One epoch's order, then steps over its batches.
    npid::Tensor order({images.size()}, npid::DType::kInt64, ctx.device());
    npid::epoch_permutation(ctx, /*seed=*/0, /*epoch=*/0, order);
    const std::int64_t batches = images.size() / cfg.batch_size;
    for (int s = 0; s < steps; ++s) {
      const std::int64_t epoch = s / batches, b = s % batches;
      if (b == 0) npid::epoch_permutation(ctx, 0, static_cast<std::uint64_t>(epoch), order);
      const npid::TensorView indices(order.data_as<std::int64_t>() + b * cfg.batch_size, npid::DType::kInt64,
                                     {cfg.batch_size}, ctx.device());
      const npid::StepStats st = step.step(images, indices, epoch, /*lr=*/0.03f);
      std::printf("step %3d  epoch %lld  loss %.4f  Z %.1f\n", s, static_cast<long long>(epoch), st.loss, st.z);
    }
    std::printf("%s: %lld steps on %s\n", "train_step", static_cast<long long>(step.steps_done()),
                ctx.device().str().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_step: %s\n", e.what());
    return 1;
  }
  return 0;
}

// TrainStep on CUDA against the CPU reference on the same batch: loss, the
// network's parameters after the SGD step (i.e. the gradients), and the
// updated bank rows, for NCE and the full softmax; then a short Trainer run.
#include <cmath>
#include <filesystem>

#include "common/test_util.h"

using namespace npid;
using test::to_device;
using test::to_host;

TEST_CASE("TrainStep: a CUDA step equals the CPU step on the same batch", "[gpu][train]") {
  Context gpu = Context::cuda();
  Context cpu = Context::cpu();
  for (CriterionKind kind : {CriterionKind::kNce, CriterionKind::kSoftmax}) {
    INFO(to_string(kind));
    TrainStepConfig cfg;
    cfg.model.width = 8;
    cfg.model.image_size = 16;
    cfg.model.tf32_convolutions = false;  // exact fp32 on both sides
    cfg.augment = AugmentConfig::cifar10_train();
    cfg.augment.out_height = cfg.augment.out_width = 16;
    cfg.batch_size = 24;
    cfg.criterion = kind;
    cfg.num_negatives = 64;
    SyntheticConfig sc;
    sc.count = 200;
    sc.image_size = 16;
    const ImageSet host = make_synthetic(sc);
    const ImageSet dev = host.to(gpu);
    TrainStep g(gpu, cfg, host.size()), c(cpu, cfg, host.size());
    std::vector<std::int64_t> idx(24);
    for (int i = 0; i < 24; ++i) idx[i] = (i * 37) % 200;
    Tensor idx_d = to_device(gpu, idx, {24});
    for (int s = 0; s < 3; ++s) {
      const StepStats sg = g.step(dev, idx_d, 0, 0.05f), scpu = c.step(host, view(idx.data(), {24}), 0, 0.05f);
      INFO("step " << s);
      CHECK(sg.loss == Approx(scpu.loss).epsilon(1e-3));
    }
    const auto pg = to_host<float>(gpu, g.net().parameter_buffer());
    const std::vector<float> pc(static_cast<const float*>(c.net().parameter_buffer().data),
                                static_cast<const float*>(c.net().parameter_buffer().data) + pg.size());
    CHECK(test::relative_error(pg, pc) < 1e-4);
    const auto bg = to_host<float>(gpu, g.bank().view());
    const std::vector<float> bc(static_cast<const float*>(c.bank().view().data),
                                static_cast<const float*>(c.bank().view().data) + bg.size());
    CHECK(test::max_abs_diff(bg, bc) < 1e-4);
  }
}

TEST_CASE("Trainer: a short CUDA run learns, checkpoints and resumes", "[gpu][train]") {
  Context gpu = Context::cuda();
  TrainerConfig cfg = TrainerConfig::from_preset("cifar10");
  cfg.step.model.width = 16;
  cfg.step.batch_size = 128;
  cfg.step.num_negatives = 256;
  cfg.epochs = 2;
  cfg.knn_every = 1;
  cfg.final_eval = false;
  SyntheticConfig sc;
  sc.count = 2048;
  const ImageSet train = make_synthetic(sc);
  sc.count = 256;
  sc.seed = 3;
  const ImageSet test = make_synthetic(sc);
  const std::string dir = "/tmp/npid_gpu_trainer_run";
  std::filesystem::remove_all(dir);
  {
    Trainer t(gpu, cfg, train, test, dir);
    t.progress = false;
    t.run(0);
  }
  auto r = Trainer::resume(gpu, cfg, train, test, dir);
  r->progress = false;
  r->run();
  REQUIRE(r->history().size() == 2);
  CHECK(std::isfinite(r->history().back().loss));
  CHECK(r->history().back().knn_top1 >= 0.0);
  std::filesystem::remove_all(dir);
}

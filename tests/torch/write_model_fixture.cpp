// Writes DIR/model.safetensors (a CIFAR-stem ResNet-18, width 64 or WIDTH,
// BatchNorm eps 1e-5 or BN_EPS, after one
// training forward so the running statistics are not the initial ones),
// DIR/images.f32 (2 NHWC 32x32 images) and DIR/emb.f32 (our eval-mode
// embeddings of them), for tools/load_npid_model.py to check in PyTorch.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "npid/npid.h"

int main(int argc, char** argv) {
  if (argc < 2 || argc > 4) {
    std::fprintf(stderr, "usage: %s DIR [WIDTH [BN_EPS]]\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  try {
    npid::Context ctx = npid::Context::cpu();
    npid::ResNetConfig cfg;  // CIFAR stem, width 64 (or WIDTH), 128-d
    if (argc >= 3) cfg.width = std::stoll(argv[2]);
    if (argc == 4) cfg.bn_eps = std::stof(argv[3]);
    npid::ResNet18 net(ctx, cfg, 2, 5);
    std::vector<float> img(2 * 32 * 32 * 3), emb(2 * 128);
    for (std::size_t i = 0; i < img.size(); ++i) img[i] = static_cast<float>((i * 7919) % 255) / 127.0f - 1.0f;
    net.forward(npid::view(img.data(), {2, 32, 32, 3}), npid::view(emb.data(), {2, 128}), true);
    net.forward(npid::view(img.data(), {2, 32, 32, 3}), npid::view(emb.data(), {2, 128}), false);
    npid::save_safetensors(dir + "/model.safetensors", npid::model_state(ctx, net),
                           {{"npid.model", npid::model_config_json(cfg)}, {"format", "pt"}});
    std::ofstream(dir + "/images.f32", std::ios::binary)
        .write(reinterpret_cast<const char*>(img.data()), static_cast<std::streamsize>(img.size() * 4));
    std::ofstream(dir + "/emb.f32", std::ios::binary)
        .write(reinterpret_cast<const char*>(emb.data()), static_cast<std::streamsize>(emb.size() * 4));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}

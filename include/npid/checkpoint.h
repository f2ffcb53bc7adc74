// npid/checkpoint.h -- model weights <-> safetensors in PyTorch's layout.
//
// model_state() lists a ResNet18's parameters and buffers under torchvision's
// resnet18 state_dict names with PyTorch's logical shapes and memory order
// (conv weights (O, I, KH, KW); we store them (O, KH, KW, I) and permute),
// plus every BatchNorm's num_batches_tracked, so
//     sd = safetensors.torch.load_file("model.safetensors")
//     torchvision.models.resnet18(num_classes=128).load_state_dict(sd)
// loads strictly (ImageNet stem; for the CIFAR stem replace conv1 by a 3x3
// stride-1 convolution and maxpool by Identity first). Our head is `fc`; the
// L2 normalization has no parameters.
//
// The network's configuration travels in the metadata ("npid.model": JSON of
// stem, width, embedding_dim, image_size), so a file names the network it fits.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "npid/resnet.h"
#include "npid/safetensors.h"

namespace npid {

std::vector<NamedTensor> model_state(Context& ctx, const ResNet18& net);
// Loads every parameter and buffer of `net` from `file` (named `what` in
// errors); a missing tensor or a shape mismatch throws kIo before anything is
// written to the network.
void load_model_state(Context& ctx, ResNet18& net, const SafetensorsFile& file, const std::string& what);

std::string model_config_json(const ResNetConfig& config);
// The ResNetConfig in a file's metadata (kIo naming `what` when absent or bad).
ResNetConfig model_config_from(const SafetensorsFile& file, const std::string& what);

}  // namespace npid

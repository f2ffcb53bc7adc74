// npid/resnet.h -- ResNet-18 embedding network and SGD (docs/math.md s.6-7).
//
// ResNet-18 with a CIFAR stem (3x3 stride-1 conv, no max-pool) or the ImageNet
// stem (7x7 stride-2 conv, 3x3 stride-2 max-pool), four stages of two
// BasicBlocks (width w, 2w, 4w, 8w channels; w = 64 is the standard network),
// global average pooling, a linear head to the embedding and L2 normalization.
//
// Parameters live in ONE contiguous float32 buffer and their gradients in
// another with the same layout; BatchNorm running statistics in a third. Each
// parameter is a named view whose name and logical shape follow torchvision's
// resnet18 state_dict (conv1.weight (64, 3, 3, 3), layer2.0.downsample.0.weight,
// bn1.running_mean, fc.weight (128, 512), ...). Convolution weights are stored
// channels-last -- memory order (O, KH, KW, I), as PyTorch's channels_last
// format -- to match the NHWC activations; an exporter to PyTorch permutes them.
//
// Activations are NHWC float32. Backends: the CPU reference (every layer in
// kernels/resnet_layers_cpu.cpp, threaded) and CUDA (convolutions through
// cuDNN's graph API, our BatchNorm / pooling / normalization kernels, the head
// on cuBLAS). On CUDA the parameter, gradient and statistics buffers are
// device memory; images and embeddings must be on the context's device.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "npid/context.h"
#include "npid/tensor.h"

namespace npid {

enum class ResNetStem { kCifar, kImageNet };

const char* to_string(ResNetStem stem) noexcept;

struct ResNetConfig {
  ResNetStem stem = ResNetStem::kCifar;
  std::int64_t width = 64;          // channels of the first stage
  std::int64_t embedding_dim = 128;
  std::int64_t image_size = 32;     // input height = width
  float bn_eps = 1e-5f;
  float bn_momentum = 0.1f;         // running = (1 - m) running + m batch
  // CUDA: let cuDNN run convolutions on TF32 tensor cores (fp32 storage and
  // accumulation, ~1e-3 relative error); false restricts it to exact fp32.
  bool tf32_convolutions = true;
  // CUDA: time up to 8 candidate cuDNN engines per convolution when its plan
  // is made (once per shape; like PyTorch's cudnn.benchmark) and keep the
  // fastest. Only deterministic engines compete, but two processes may pick
  // different engines, so results can differ between runs in rounding; false
  // keeps cuDNN's heuristic choice (reproducible).
  bool autotune_convolutions = false;
  // CUDA: true (default) keeps convolutions deterministic (cuDNN engines
  // without atomics, as long as one works within 2 GiB of workspace); false
  // lets nondeterministic engines compete too, as PyTorch does unless
  // torch.backends.cudnn.deterministic is set: often faster weight
  // gradients, but results vary in rounding from run to run.
  bool deterministic_convolutions = true;
};

struct ParameterInfo {
  std::string name;                 // torchvision state_dict key
  Shape shape;                      // torchvision's logical shape
  Shape storage_shape;              // memory order ((O, KH, KW, I) for conv weights)
  std::int64_t offset = 0;          // elements into the flat buffer
  std::int64_t numel = 0;
};

class ResNet18 {
 public:
  // Sizes every activation for batches up to max_batch and initializes the
  // parameters from `seed` (conv ~ N(0, 2/(k*k*out)), BN weight 1 / bias 0,
  // linear ~ U(+-1/sqrt(fan_in)); running mean 0, running var 1).
  ResNet18(Context& ctx, const ResNetConfig& config, std::int64_t max_batch, std::uint64_t seed);
  ~ResNet18();
  ResNet18(const ResNet18&) = delete;
  ResNet18& operator=(const ResNet18&) = delete;

  const ResNetConfig& config() const;
  std::int64_t max_batch() const;
  void initialize(std::uint64_t seed);

  // images (B, S, S, 3) float32 NHWC, B <= max_batch, S = config.image_size;
  // embeddings (B, embedding_dim) float32, written (unit rows).
  // training: BatchNorm uses batch statistics and updates the running ones,
  // and the activations are kept for backward(); else running statistics.
  // `images` must stay valid and unchanged until the matching backward(); on
  // CUDA it must be 16-byte aligned (any Tensor is).
  void forward(const TensorView& images, const TensorView& embeddings, bool training);
  // Gradient of the loss w.r.t. the embeddings (B, embedding_dim) of the last
  // training forward -> gradients() (overwritten, not accumulated).
  void backward(const TensorView& grad_embeddings);

  const std::vector<ParameterInfo>& parameters() const;  // trainable, in state_dict order
  const std::vector<ParameterInfo>& buffers() const;     // running_mean / running_var
  // (P) float32; each parameter's offset is rounded up to 4 floats (16-byte
  // aligned views), the padding is zero, so P >= num_parameters().
  TensorView parameter_buffer() const;
  TensorView gradient_buffer() const;                    // (P) float32, same layout
  TensorView buffer_buffer() const;                      // running statistics, float32
  // The named parameter or buffer, as a view of its storage (storage_shape).
  TensorView tensor(const std::string& name) const;
  std::int64_t num_parameters() const;  // trainable values (no padding)
  // Training forwards so far (torchvision's num_batches_tracked, same for every BN).
  std::int64_t num_batches_tracked() const;
  void set_num_batches_tracked(std::int64_t n);  // restoring a checkpoint
  // Changes whenever the network reallocates internal scratch memory (CUDA;
  // e.g. the first batch of a new size): a CUDA graph that captured the old
  // buffers must be re-captured.
  std::uint64_t workspace_generation() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

struct SgdConfig {
  float momentum = 0.9f;
  float weight_decay = 5e-4f;  // applied to every parameter, BN and biases too
  bool nesterov = false;
};

// One SGD step with PyTorch semantics over flat buffers (dampening 0):
//   g = grad + wd * w;  buf = first_step ? g : momentum * buf + g;
//   w -= lr * (nesterov ? g + momentum * buf : buf)
// lr_device (optional, CUDA): (1) float32 on the device read when the kernel
// runs instead of `lr` (CUDA-graph replay with a new learning rate).
void sgd_step(Context& ctx, const SgdConfig& config, float lr, const TensorView& params,
              const TensorView& grads, const TensorView& momentum_buffer, bool first_step,
              const TensorView& lr_device = {});

// Owns the momentum buffer and the first-step flag.
class Sgd {
 public:
  Sgd(Context& ctx, const SgdConfig& config, std::int64_t count);
  void step(const TensorView& params, const TensorView& grads, float lr, const TensorView& lr_device = {});
  TensorView momentum_buffer() const { return buffer_.view(); }
  bool started() const { return started_; }
  // Restoring a checkpoint: whether the next step is not the first one.
  void set_started(bool started) { started_ = started; }

 private:
  Context* ctx_;
  SgdConfig config_;
  Tensor buffer_;
  bool started_ = false;
};

}  // namespace npid

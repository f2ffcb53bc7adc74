// resnet_net.h -- ResNet-18 as data plus a runner (library-internal).
//
// NetSpec is the network with every shape and every parameter's offset in the
// flat buffers, built once from a ResNetConfig; it knows nothing of memory.
// CpuRunner<Real> executes a NetSpec on the CPU with the layer references
// (kernels/resnet_layers.h): float for the library's CPU backend, double for
// the finite-difference tests of the whole network. A CUDA runner will take
// the same NetSpec.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "npid/resnet.h"
#include "resnet_layers.h"

namespace npid {
namespace resnet {

struct Conv {
  std::string name;  // "layer1.0.conv1"
  std::int64_t in_c = 0, out_c = 0, k = 1, stride = 1, pad = 0;
  std::int64_t in_h = 0, in_w = 0;
  std::int64_t weight = 0;  // parameter offset
  layers::ConvShape shape(std::int64_t n) const;
  std::int64_t out_h() const { return shape(1).out_h(); }
  std::int64_t out_w() const { return shape(1).out_w(); }
};

struct Norm {
  std::string name;  // "layer1.0.bn1"
  std::int64_t channels = 0;
  std::int64_t gamma = 0, beta = 0;  // parameter offsets
  std::int64_t mean = 0, var = 0;    // running-statistics offsets
};

struct Block {
  Conv conv1, conv2, down;
  Norm bn1, bn2, down_bn;
  bool has_down = false;
  std::int64_t in_h = 0, in_w = 0, in_c = 0, out_h = 0, out_w = 0, out_c = 0;
};

struct NetSpec {
  ResNetConfig cfg;
  Conv stem;
  Norm stem_bn;
  bool maxpool = false;
  layers::PoolShape pool;  // n unset
  std::vector<Block> blocks;
  std::int64_t fc_weight = 0, fc_bias = 0, fc_in = 0;
  std::vector<ParameterInfo> params, bufs;
  std::map<std::string, std::pair<bool, std::size_t>> by_name;  // (is parameter, index)
  // Buffer lengths (parameter offsets are padded to 4 floats).
  std::int64_t num_params() const { return params.back().offset + params.back().numel; }
  std::int64_t num_stats() const { return bufs.back().offset + bufs.back().numel; }
  // The number of trainable values (no padding).
  std::int64_t parameter_count() const {
    std::int64_t n = 0;
    for (const ParameterInfo& p : params) n += p.numel;
    return n;
  }

  // Every convolution in execution order, the stem first (the stem is the
  // only one whose data gradient is never needed: its input is the images).
  std::vector<const Conv*> convs() const;
  // Whether a convolution's data gradient is added onto its block input's
  // gradient, which already holds another term when it runs (an identity
  // block's conv1: the shortcut; a downsampling conv: conv1's), rather than
  // written: the order CudaRunner::backward sums in place.
  bool data_grad_accumulates(const Conv* conv) const;

  // Validates the configuration (errors name the layer and the shapes).
  static NetSpec build(const ResNetConfig& cfg);
};

// Parameters from `seed` (docs/math.md s.6), running mean 0 / var 1.
void initialize(const NetSpec& spec, std::uint64_t seed, float* params, float* stats, int threads);

template <typename Real>
class CpuRunner {
 public:
  CpuRunner(const NetSpec& spec, std::int64_t max_batch, int threads);
  // images (n, S, S, 3) NHWC; embeddings (n, D). training updates `stats`
  // and keeps what backward() needs (including the `images` pointer).
  void forward(const Real* params, Real* stats, const Real* images, std::int64_t n, Real* embeddings,
               bool training);
  // Gradients of every parameter for the last training forward (overwritten).
  void backward(const Real* params, Real* grads, const Real* grad_embeddings);
  std::int64_t pending_batch() const { return last_batch_; }

 private:
  struct Act {
    std::int64_t h = 0, w = 0, c = 0;
    std::vector<Real> value, grad;
  };
  struct Saved {
    std::vector<Real> mean, invstd;
  };
  Act make_act(std::int64_t h, std::int64_t w, std::int64_t c) const;
  void norm_forward(const Norm& nm, Saved& sv, std::int64_t count, const Real* params, Real* stats, const Real* x,
                    const Real* residual, bool relu, Real* y, bool training) const;
  void norm_backward(const Norm& nm, const Saved& sv, std::int64_t count, const Real* params, Real* grads,
                     const Real* dy, const Real* x, const Real* y, bool relu, Real* dx, Real* residual_grad) const;

  const NetSpec& spec_;
  std::int64_t max_batch_;
  int threads_;
  Act stem_z_, stem_y_, pool_;
  std::vector<std::int64_t> argmax_;
  Saved stem_saved_;
  struct BlockActs {
    Act z1, y1, z2, out, zd, res;
    Saved s1, s2, sd;
    std::vector<Real> tmp;
  };
  std::vector<BlockActs> blocks_;
  std::vector<Real> pooled_, pooled_grad_, fc_out_, fc_grad_, embeddings_;
  std::int64_t last_batch_ = 0;
  const Real* last_images_ = nullptr;
};

extern template class CpuRunner<float>;
extern template class CpuRunner<double>;

// The same network on CUDA (src/resnet_cuda.cpp): device pointers throughout,
// work on ctx.stream(). Convolution plans for max_batch are built at
// construction, so steady-state steps at that batch allocate nothing.
class CudaRunner {
 public:
  CudaRunner(Context& ctx, const NetSpec& spec, std::int64_t max_batch);
  ~CudaRunner();
  CudaRunner(const CudaRunner&) = delete;
  CudaRunner& operator=(const CudaRunner&) = delete;
  void forward(const float* params, float* stats, const float* images, std::int64_t n, float* embeddings,
               bool training);
  void backward(const float* params, float* grads, const float* grad_embeddings);
  std::int64_t pending_batch() const;
  // Bumped whenever an internal scratch buffer is reallocated (a captured
  // CUDA graph holding the old address must be re-captured).
  std::uint64_t workspace_generation() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace resnet
}  // namespace npid

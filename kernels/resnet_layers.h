// kernels/resnet_layers.h -- the ResNet-18 layer family's internal interface:
// CPU references (resnet_layers_cpu.cpp) and CUDA launchers (resnet_layers.cu)
// of every layer, forward and backward, on raw pointers. Templated on the real type so that the finite-
// difference tests run them in double; the library instantiates float.
//
// Layouts (the same on every backend):
//   activations  NHWC, row-major: (N, H, W, C)
//   conv weights (O, KH, KW, I) in memory -- torchvision's logical shape
//                (O, I, KH, KW) stored channels-last, as PyTorch's
//                channels_last memory format does; convolutions have no bias
//   linear       weight (out, in) row-major, bias (out)
// Backward functions overwrite their outputs (no accumulation) unless noted.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/hostdevice.h"
#include "npid/context.h"

namespace npid {
namespace layers {

struct ConvShape {
  std::int64_t n = 0, h = 0, w = 0, c = 0;  // input (N, H, W, C)
  std::int64_t out_c = 0, k = 1, stride = 1, pad = 0;
  static ConvShape of(std::int64_t n, std::int64_t h, std::int64_t w, std::int64_t c, std::int64_t out_c,
                      std::int64_t k, std::int64_t stride, std::int64_t pad) {
    ConvShape s;
    s.n = n;
    s.h = h;
    s.w = w;
    s.c = c;
    s.out_c = out_c;
    s.k = k;
    s.stride = stride;
    s.pad = pad;
    return s;
  }
  NPID_HD std::int64_t out_h() const { return (h + 2 * pad - k) / stride + 1; }
  NPID_HD std::int64_t out_w() const { return (w + 2 * pad - k) / stride + 1; }
  NPID_HD std::int64_t weight_size() const { return out_c * k * k * c; }
};

// y (N, Ho, Wo, O) = conv(x, w) by im2col + GEMM; threads over images.
template <typename Real>
void conv2d_forward_cpu(const ConvShape& s, const Real* x, const Real* w, Real* y, int threads);
// dx (N, H, W, C) from dy (N, Ho, Wo, O).
template <typename Real>
void conv2d_backward_data_cpu(const ConvShape& s, const Real* dy, const Real* w, Real* dx, int threads);
// dw (O, KH, KW, I) from x and dy.
template <typename Real>
void conv2d_backward_weight_cpu(const ConvShape& s, const Real* x, const Real* dy, Real* dw, int threads);

// BatchNorm over the (N*H*W) positions of each of C channels, PyTorch
// semantics (eps, biased variance to normalize, unbiased to update the
// running variance, running = (1 - momentum) running + momentum batch),
// optionally followed by "+ residual" and ReLU in the same pass:
//   y = relu?( gamma * (x - mean) * invstd + beta + residual? )
struct NormShape {
  std::int64_t count = 0;  // N * H * W
  std::int64_t channels = 0;
};

template <typename Real>
void batchnorm_train_forward_cpu(const NormShape& s, const Real* x, const Real* gamma, const Real* beta,
                                 Real eps, Real momentum, Real* running_mean, Real* running_var,
                                 const Real* residual, bool relu, Real* y, Real* save_mean,
                                 Real* save_invstd);
template <typename Real>
void batchnorm_eval_forward_cpu(const NormShape& s, const Real* x, const Real* gamma, const Real* beta,
                                const Real* running_mean, const Real* running_var, Real eps,
                                const Real* residual, bool relu, Real* y);
// From dy (gradient of y) and the saved statistics: dx, dgamma, dbeta, and,
// when residual_grad != null, the residual's gradient (dy after the ReLU
// mask). y is the forward output (needed for the ReLU mask when relu).
template <typename Real>
void batchnorm_backward_cpu(const NormShape& s, const Real* dy, const Real* x, const Real* y, bool relu,
                            const Real* gamma, const Real* save_mean, const Real* save_invstd, Real* dx,
                            Real* dgamma, Real* dbeta, Real* residual_grad);

// Max pool k x k, stride, pad (padding never wins), NHWC. argmax receives,
// per output element, the flat input index that won (first in window order
// on ties), for the backward pass.
struct PoolShape {
  std::int64_t n = 0, h = 0, w = 0, c = 0;
  std::int64_t k = 3, stride = 2, pad = 1;
  NPID_HD std::int64_t out_h() const { return (h + 2 * pad - k) / stride + 1; }
  NPID_HD std::int64_t out_w() const { return (w + 2 * pad - k) / stride + 1; }
};
template <typename Real>
void maxpool_forward_cpu(const PoolShape& s, const Real* x, Real* y, std::int64_t* argmax);
template <typename Real>
void maxpool_backward_cpu(const PoolShape& s, const Real* dy, const std::int64_t* argmax, Real* dx);

// Global average pool: (N, H, W, C) -> (N, C).
template <typename Real>
void avgpool_forward_cpu(std::int64_t n, std::int64_t hw, std::int64_t c, const Real* x, Real* y);
template <typename Real>
void avgpool_backward_cpu(std::int64_t n, std::int64_t hw, std::int64_t c, const Real* dy, Real* dx);

// y (N, out) = x (N, in) W^T + b.
template <typename Real>
void linear_forward_cpu(std::int64_t n, std::int64_t in, std::int64_t out, const Real* x, const Real* w,
                        const Real* b, Real* y);
template <typename Real>
void linear_backward_cpu(std::int64_t n, std::int64_t in, std::int64_t out, const Real* x, const Real* w,
                         const Real* dy, Real* dx, Real* dw, Real* db);

// y = x / max(||x||, 1e-12), per row of (N, D).
template <typename Real>
void l2norm_forward_cpu(std::int64_t n, std::int64_t d, const Real* x, Real* y);
template <typename Real>
void l2norm_backward_cpu(std::int64_t n, std::int64_t d, const Real* x, const Real* y, const Real* dy, Real* dx);

// SGD with PyTorch semantics over flat buffers (dampening 0):
//   g = grad + weight_decay * w;  buf = first ? g : momentum * buf + g
//   w -= lr * (nesterov ? g + momentum * buf : buf)
template <typename Real>
void sgd_step_cpu(std::int64_t count, Real* w, const Real* grad, Real* buf, Real lr, Real momentum,
                  Real weight_decay, bool nesterov, bool first);

// ---- CUDA (kernels/resnet_layers.cu) ---------------------------------------------
// Same contracts, float, on ctx.stream(); deterministic (fixed reduction
// orders, no atomics). Convolutions are cuDNN graphs (kernels/cudnn_conv.h);
// the head's GEMMs are cuBLAS calls made by the network runner.

// Scratch bytes the BatchNorm launchers need for this shape.
std::size_t batchnorm_cuda_workspace_bytes(const NormShape& s);

void launch_batchnorm_train_forward(Context& ctx, const NormShape& s, const float* x, const float* gamma,
                                    const float* beta, float eps, float momentum, float* running_mean,
                                    float* running_var, const float* residual, bool relu, float* y, float* save_mean,
                                    float* save_invstd, void* workspace);
void launch_batchnorm_eval_forward(Context& ctx, const NormShape& s, const float* x, const float* gamma,
                                   const float* beta, const float* running_mean, const float* running_var, float eps,
                                   const float* residual, bool relu, float* y, void* workspace);
void launch_batchnorm_backward(Context& ctx, const NormShape& s, const float* dy, const float* x, const float* y,
                               bool relu, const float* gamma, const float* save_mean, const float* save_invstd,
                               float* dx, float* dgamma, float* dbeta, float* residual_grad, void* workspace);
void launch_maxpool_forward(Context& ctx, const PoolShape& s, const float* x, float* y, std::int64_t* argmax);
void launch_maxpool_backward(Context& ctx, const PoolShape& s, const float* dy, const std::int64_t* argmax, float* dx);
void launch_avgpool_forward(Context& ctx, std::int64_t n, std::int64_t hw, std::int64_t c, const float* x, float* y);
void launch_avgpool_backward(Context& ctx, std::int64_t n, std::int64_t hw, std::int64_t c, const float* dy, float* dx);
void launch_l2norm_forward(Context& ctx, std::int64_t n, std::int64_t d, const float* x, float* y);
void launch_l2norm_backward(Context& ctx, std::int64_t n, std::int64_t d, const float* x, const float* y,
                            const float* dy, float* dx);
// y (n, d) += bias (d);  db (d) = column sums of dy (n, d).
void launch_add_bias(Context& ctx, std::int64_t n, std::int64_t d, const float* bias, float* y);
void launch_bias_grad(Context& ctx, std::int64_t n, std::int64_t d, const float* dy, float* db);
// lr_device (optional): the learning rate is read from device memory when the
// kernel runs (CUDA-graph replay with a new lr).
void launch_sgd_step(Context& ctx, std::int64_t count, float* w, const float* grad, float* buf, float lr,
                     float momentum, float weight_decay, bool nesterov, bool first, const float* lr_device = nullptr);

}  // namespace layers
}  // namespace npid

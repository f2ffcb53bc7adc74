// resnet_layers_cpu.cpp -- CPU references of the ResNet-18 layers (contracts
// in resnet_layers.h). They are the oracle of the GPU layers and the CPU
// training backend, so they are written for clarity first and speed second:
// convolutions are im2col + a GEMM written as axpys over contiguous rows (they
// vectorize; four output rows share each weight row), threaded over images
// (or output channels for the weight gradient); BatchNorm walks positions
// with the channels innermost. Every sum has a fixed order -- each output adds
// its terms in index order, from 0 -- so results depend neither on the thread
// count nor on the blocking. Sums over many terms (BatchNorm statistics)
// accumulate in double.
#include "resnet_layers.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/parallel.h"

namespace npid {
namespace layers {

namespace {

// col (M = Ho*Wo, K = KH*KW*C) for image `img`; rows in (oh, ow) order, columns
// in (kh, kw, c) order -- the order of a weight row (O, KH, KW, I).
template <typename Real>
void im2col(const ConvShape& s, const Real* x, std::int64_t img, Real* col) {
  const std::int64_t ho = s.out_h(), wo = s.out_w(), kk = s.k * s.k * s.c;
  const Real* xi = x + img * s.h * s.w * s.c;
  for (std::int64_t oh = 0; oh < ho; ++oh) {
    for (std::int64_t ow = 0; ow < wo; ++ow) {
      Real* row = col + (oh * wo + ow) * kk;
      for (std::int64_t kh = 0; kh < s.k; ++kh) {
        const std::int64_t ih = oh * s.stride - s.pad + kh;
        for (std::int64_t kw = 0; kw < s.k; ++kw) {
          const std::int64_t iw = ow * s.stride - s.pad + kw;
          Real* dst = row + (kh * s.k + kw) * s.c;
          if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) {
            std::fill(dst, dst + s.c, Real(0));
          } else {
            const Real* src = xi + (ih * s.w + iw) * s.c;
            std::copy(src, src + s.c, dst);
          }
        }
      }
    }
  }
}

// Adds dcol (M, K) back into dx for image `img` (the adjoint of im2col).
template <typename Real>
void col2im_add(const ConvShape& s, const Real* dcol, std::int64_t img, Real* dx) {
  const std::int64_t ho = s.out_h(), wo = s.out_w(), kk = s.k * s.k * s.c;
  Real* dxi = dx + img * s.h * s.w * s.c;
  for (std::int64_t oh = 0; oh < ho; ++oh) {
    for (std::int64_t ow = 0; ow < wo; ++ow) {
      const Real* row = dcol + (oh * wo + ow) * kk;
      for (std::int64_t kh = 0; kh < s.k; ++kh) {
        const std::int64_t ih = oh * s.stride - s.pad + kh;
        if (ih < 0 || ih >= s.h) continue;
        for (std::int64_t kw = 0; kw < s.k; ++kw) {
          const std::int64_t iw = ow * s.stride - s.pad + kw;
          if (iw < 0 || iw >= s.w) continue;
          const Real* src = row + (kh * s.k + kw) * s.c;
          Real* dst = dxi + (ih * s.w + iw) * s.c;
          for (std::int64_t c = 0; c < s.c; ++c) dst[c] += src[c];
        }
      }
    }
  }
}

// C (M, N) = A (M, K) B (K, N), all row-major and contiguous, as axpys over
// C's rows (they vectorize), four rows of C per row of B (B is read once per
// four). Every C[p][j] adds its K products in order i = 0..K-1, starting from
// 0: the value of the plain triple loop, bit for bit, whatever the blocking.
template <typename Real>
void gemm_rows(std::int64_t m, std::int64_t k, std::int64_t n, const Real* a, const Real* b, Real* c) {
  std::fill(c, c + m * n, Real(0));
  std::int64_t p = 0;
  for (; p + 4 <= m; p += 4) {
    const Real* a0 = a + p * k;
    const Real *a1 = a0 + k, *a2 = a1 + k, *a3 = a2 + k;
    Real* c0 = c + p * n;
    Real *c1 = c0 + n, *c2 = c1 + n, *c3 = c2 + n;
    for (std::int64_t i = 0; i < k; ++i) {
      const Real* bi = b + i * n;
      const Real x0 = a0[i], x1 = a1[i], x2 = a2[i], x3 = a3[i];
      for (std::int64_t j = 0; j < n; ++j) {
        const Real bj = bi[j];
        c0[j] += x0 * bj;
        c1[j] += x1 * bj;
        c2[j] += x2 * bj;
        c3[j] += x3 * bj;
      }
    }
  }
  for (; p < m; ++p) {
    const Real* ap = a + p * k;
    Real* cp = c + p * n;
    for (std::int64_t i = 0; i < k; ++i) {
      const Real x = ap[i];
      const Real* bi = b + i * n;
      for (std::int64_t j = 0; j < n; ++j) cp[j] += x * bi[j];
    }
  }
}

// y = x * scale[c] + shift[c] (in double, rounded once), + residual, then
// ReLU: the apply pass of both BatchNorm modes, positions outer.
template <typename Real>
void batchnorm_apply(const NormShape& s, const Real* x, const std::vector<double>& scale,
                     const std::vector<double>& shift, const Real* residual, bool relu, Real* y) {
  const std::int64_t count = s.count, ch = s.channels;
  for (std::int64_t p = 0; p < count; ++p) {
    const std::int64_t e0 = p * ch;
    for (std::int64_t c = 0; c < ch; ++c) {
      Real v = static_cast<Real>(static_cast<double>(x[e0 + c]) * scale[c] + shift[c]);
      if (residual != nullptr) v += residual[e0 + c];
      y[e0 + c] = relu && v < Real(0) ? Real(0) : v;
    }
  }
}

}  // namespace

template <typename Real>
void conv2d_forward_cpu(const ConvShape& s, const Real* x, const Real* w, Real* y, int threads) {
  const std::int64_t m = s.out_h() * s.out_w(), kk = s.k * s.k * s.c, oc = s.out_c;
  // w^T (K, O): gemm_rows' inner loop then runs over contiguous output
  // channels (independent sums, which vectorize where a dot product's one
  // running sum does not), and each y[p, o] is still the in-order dot product.
  std::vector<Real> wt(static_cast<std::size_t>(kk * oc));
  for (std::int64_t o = 0; o < oc; ++o)
    for (std::int64_t q = 0; q < kk; ++q) wt[static_cast<std::size_t>(q * oc + o)] = w[o * kk + q];
  parallel_for(s.n, threads, [&](std::int64_t img) {
    std::vector<Real> col(static_cast<std::size_t>(m * kk));
    im2col(s, x, img, col.data());
    Real* yi = y + img * m * oc;
    gemm_rows(m, kk, oc, col.data(), wt.data(), yi);  // y (M, O) = col (M, K) w^T (K, O)
  });
}

template <typename Real>
void conv2d_backward_data_cpu(const ConvShape& s, const Real* dy, const Real* w, Real* dx, int threads) {
  const std::int64_t m = s.out_h() * s.out_w(), kk = s.k * s.k * s.c;
  parallel_for(s.n, threads, [&](std::int64_t img) {
    std::vector<Real> dcol(static_cast<std::size_t>(m * kk));
    gemm_rows(m, s.out_c, kk, dy + img * m * s.out_c, w, dcol.data());  // dcol (M, K) = dy (M, O) w (O, K)
    Real* dxi = dx + img * s.h * s.w * s.c;
    std::fill(dxi, dxi + s.h * s.w * s.c, Real(0));
    col2im_add(s, dcol.data(), img, dx);
  });
}

template <typename Real>
void conv2d_backward_weight_cpu(const ConvShape& s, const Real* x, const Real* dy, Real* dw, int threads) {
  const std::int64_t m = s.out_h() * s.out_w(), kk = s.k * s.k * s.c;
  std::vector<Real> cols(static_cast<std::size_t>(s.n * m * kk));
  parallel_for(s.n, threads, [&](std::int64_t img) { im2col(s, x, img, cols.data() + img * m * kk); });
  // dw (O, K) = sum over images and positions of dy (M, O)^T col (M, K);
  // each thread owns a contiguous range of output channels and walks the
  // images and positions once, in order (a column row is read once per range,
  // not once per channel); every dw row adds its terms in (image, position)
  // order whatever the thread count.
  const std::int64_t oc = s.out_c;
  const std::int64_t t = std::max<std::int64_t>(1, std::min<std::int64_t>(threads, oc));
  parallel_for(t, static_cast<int>(t), [&](std::int64_t w) {
    const std::int64_t o_begin = oc * w / t, o_end = oc * (w + 1) / t;
    std::fill(dw + o_begin * kk, dw + o_end * kk, Real(0));
    for (std::int64_t img = 0; img < s.n; ++img) {
      const Real* dyi = dy + img * m * oc;
      const Real* coli = cols.data() + img * m * kk;
      // Four positions per pass over a dw row (a quarter of the row traffic),
      // added one after another in position order. A zero g adds +-0, which
      // leaves a running sum that started at +0 unchanged (finite columns), so
      // skipping zeros or not gives the same bits; all-zero quads are skipped.
      std::int64_t p = 0;
      for (; p + 4 <= m; p += 4) {
        const Real* a0 = coli + p * kk;
        const Real *a1 = a0 + kk, *a2 = a1 + kk, *a3 = a2 + kk;
        const Real* d0 = dyi + p * oc;
        for (std::int64_t o = o_begin; o < o_end; ++o) {
          const Real g0 = d0[o], g1 = d0[oc + o], g2 = d0[2 * oc + o], g3 = d0[3 * oc + o];
          if (g0 == Real(0) && g1 == Real(0) && g2 == Real(0) && g3 == Real(0)) continue;
          Real* row = dw + o * kk;
          for (std::int64_t q = 0; q < kk; ++q) {
            Real r = row[q];
            r += g0 * a0[q];
            r += g1 * a1[q];
            r += g2 * a2[q];
            r += g3 * a3[q];
            row[q] = r;
          }
        }
      }
      for (; p < m; ++p) {
        const Real* a = coli + p * kk;
        for (std::int64_t o = o_begin; o < o_end; ++o) {
          const Real g = dyi[p * oc + o];
          if (g == Real(0)) continue;
          Real* row = dw + o * kk;
          for (std::int64_t q = 0; q < kk; ++q) row[q] += g * a[q];
        }
      }
    }
  });
}

// ---- BatchNorm ----------------------------------------------------------------

// BatchNorm walks the NHWC tensor position by position with the channels
// innermost (contiguous memory), keeping one running sum per channel; each
// channel's sums still add its positions in order p = 0..count-1, so results
// are those of a channel-by-channel loop, bit for bit.
template <typename Real>
void batchnorm_train_forward_cpu(const NormShape& s, const Real* x, const Real* gamma, const Real* beta,
                                 Real eps, Real momentum, Real* running_mean, Real* running_var,
                                 const Real* residual, bool relu, Real* y, Real* save_mean,
                                 Real* save_invstd) {
  const std::int64_t count = s.count, ch = s.channels;
  const auto n = static_cast<std::size_t>(ch);
  std::vector<double> mean(n, 0.0), sq(n, 0.0), scale(n), shift(n);
  for (std::int64_t p = 0; p < count; ++p) {
    const Real* xp = x + p * ch;
    for (std::int64_t c = 0; c < ch; ++c) mean[c] += static_cast<double>(xp[c]);
  }
  for (std::int64_t c = 0; c < ch; ++c) mean[c] /= static_cast<double>(count);
  for (std::int64_t p = 0; p < count; ++p) {
    const Real* xp = x + p * ch;
    for (std::int64_t c = 0; c < ch; ++c) {
      const double d = static_cast<double>(xp[c]) - mean[c];
      sq[c] += d * d;
    }
  }
  for (std::int64_t c = 0; c < ch; ++c) {
    const double var = sq[c] / static_cast<double>(count);
    const double invstd = 1.0 / std::sqrt(var + static_cast<double>(eps));
    save_mean[c] = static_cast<Real>(mean[c]);
    save_invstd[c] = static_cast<Real>(invstd);
    const double unbiased = count > 1 ? sq[c] / static_cast<double>(count - 1) : var;
    running_mean[c] = static_cast<Real>((1.0 - momentum) * running_mean[c] + momentum * mean[c]);
    running_var[c] = static_cast<Real>((1.0 - momentum) * running_var[c] + momentum * unbiased);
    scale[c] = static_cast<double>(gamma[c]) * invstd;
    shift[c] = static_cast<double>(beta[c]) - mean[c] * scale[c];
  }
  batchnorm_apply(s, x, scale, shift, residual, relu, y);
}

template <typename Real>
void batchnorm_eval_forward_cpu(const NormShape& s, const Real* x, const Real* gamma, const Real* beta,
                                const Real* running_mean, const Real* running_var, Real eps,
                                const Real* residual, bool relu, Real* y) {
  const std::int64_t ch = s.channels;
  std::vector<double> scale(static_cast<std::size_t>(ch)), shift(static_cast<std::size_t>(ch));
  for (std::int64_t c = 0; c < ch; ++c) {
    const double invstd = 1.0 / std::sqrt(static_cast<double>(running_var[c]) + static_cast<double>(eps));
    scale[c] = static_cast<double>(gamma[c]) * invstd;
    shift[c] = static_cast<double>(beta[c]) - static_cast<double>(running_mean[c]) * scale[c];
  }
  batchnorm_apply(s, x, scale, shift, residual, relu, y);
}

template <typename Real>
void batchnorm_backward_cpu(const NormShape& s, const Real* dy, const Real* x, const Real* y, bool relu,
                            const Real* gamma, const Real* save_mean, const Real* save_invstd, Real* dx,
                            Real* dgamma, Real* dbeta, Real* residual_grad) {
  const std::int64_t count = s.count, ch = s.channels;
  const auto n = static_cast<std::size_t>(ch);
  std::vector<double> mean(n), invstd(n), sum_g(n, 0.0), sum_gx(n, 0.0), k(n);
  for (std::int64_t c = 0; c < ch; ++c) {
    mean[c] = save_mean[c];
    invstd[c] = save_invstd[c];
  }
  // g = dy masked by the ReLU (y <= 0, or NaN, passes nothing), one position
  // at a time into `g_row`; the branches stay outside the channel loops.
  std::vector<double> g_row(n);
  auto masked = [&](std::int64_t e0) {
    if (relu) {
      for (std::int64_t c = 0; c < ch; ++c) {
        const double d = static_cast<double>(dy[e0 + c]);  // loaded unconditionally: a select, not a branch
        g_row[c] = y[e0 + c] > Real(0) ? d : 0.0;
      }
    } else {
      for (std::int64_t c = 0; c < ch; ++c) g_row[c] = static_cast<double>(dy[e0 + c]);
    }
  };
  for (std::int64_t p = 0; p < count; ++p) {
    const std::int64_t e0 = p * ch;
    masked(e0);
    if (residual_grad != nullptr)
      for (std::int64_t c = 0; c < ch; ++c) residual_grad[e0 + c] = static_cast<Real>(g_row[c]);
    for (std::int64_t c = 0; c < ch; ++c) {
      const double g = g_row[c];
      sum_g[c] += g;
      sum_gx[c] += g * (static_cast<double>(x[e0 + c]) - mean[c]) * invstd[c];
    }
  }
  for (std::int64_t c = 0; c < ch; ++c) {
    dbeta[c] = static_cast<Real>(sum_g[c]);
    dgamma[c] = static_cast<Real>(sum_gx[c]);
    k[c] = static_cast<double>(gamma[c]) * invstd[c] / static_cast<double>(count);
  }
  const double m = static_cast<double>(count);
  for (std::int64_t p = 0; p < count; ++p) {
    const std::int64_t e0 = p * ch;
    masked(e0);
    for (std::int64_t c = 0; c < ch; ++c) {
      const double xhat = (static_cast<double>(x[e0 + c]) - mean[c]) * invstd[c];
      dx[e0 + c] = static_cast<Real>(k[c] * (m * g_row[c] - sum_g[c] - xhat * sum_gx[c]));
    }
  }
}

// ---- pooling --------------------------------------------------------------------

template <typename Real>
void maxpool_forward_cpu(const PoolShape& s, const Real* x, Real* y, std::int64_t* argmax) {
  const std::int64_t ho = s.out_h(), wo = s.out_w();
  for (std::int64_t img = 0; img < s.n; ++img) {
    for (std::int64_t oh = 0; oh < ho; ++oh) {
      for (std::int64_t ow = 0; ow < wo; ++ow) {
        for (std::int64_t c = 0; c < s.c; ++c) {
          Real best = -std::numeric_limits<Real>::infinity();
          std::int64_t where = -1;
          for (std::int64_t kh = 0; kh < s.k; ++kh) {
            const std::int64_t ih = oh * s.stride - s.pad + kh;
            if (ih < 0 || ih >= s.h) continue;
            for (std::int64_t kw = 0; kw < s.k; ++kw) {
              const std::int64_t iw = ow * s.stride - s.pad + kw;
              if (iw < 0 || iw >= s.w) continue;
              const std::int64_t e = ((img * s.h + ih) * s.w + iw) * s.c + c;
              if (x[e] > best || where < 0) {
                best = x[e];
                where = e;
              }
            }
          }
          const std::int64_t o = ((img * ho + oh) * wo + ow) * s.c + c;
          y[o] = best;
          argmax[o] = where;
        }
      }
    }
  }
}

template <typename Real>
void maxpool_backward_cpu(const PoolShape& s, const Real* dy, const std::int64_t* argmax, Real* dx) {
  std::fill(dx, dx + s.n * s.h * s.w * s.c, Real(0));
  const std::int64_t outputs = s.n * s.out_h() * s.out_w() * s.c;
  for (std::int64_t o = 0; o < outputs; ++o) dx[argmax[o]] += dy[o];
}

template <typename Real>
void avgpool_forward_cpu(std::int64_t n, std::int64_t hw, std::int64_t c, const Real* x, Real* y) {
  for (std::int64_t img = 0; img < n; ++img) {
    for (std::int64_t ch = 0; ch < c; ++ch) {
      double sum = 0.0;
      for (std::int64_t p = 0; p < hw; ++p) sum += static_cast<double>(x[(img * hw + p) * c + ch]);
      y[img * c + ch] = static_cast<Real>(sum / static_cast<double>(hw));
    }
  }
}

template <typename Real>
void avgpool_backward_cpu(std::int64_t n, std::int64_t hw, std::int64_t c, const Real* dy, Real* dx) {
  const Real inv = Real(1) / static_cast<Real>(hw);
  for (std::int64_t img = 0; img < n; ++img)
    for (std::int64_t p = 0; p < hw; ++p)
      for (std::int64_t ch = 0; ch < c; ++ch) dx[(img * hw + p) * c + ch] = dy[img * c + ch] * inv;
}

// ---- head -----------------------------------------------------------------------

template <typename Real>
void linear_forward_cpu(std::int64_t n, std::int64_t in, std::int64_t out, const Real* x, const Real* w,
                        const Real* b, Real* y) {
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t o = 0; o < out; ++o) {
      Real acc = b[o];
      for (std::int64_t k = 0; k < in; ++k) acc += x[i * in + k] * w[o * in + k];
      y[i * out + o] = acc;
    }
  }
}

template <typename Real>
void linear_backward_cpu(std::int64_t n, std::int64_t in, std::int64_t out, const Real* x, const Real* w,
                         const Real* dy, Real* dx, Real* dw, Real* db) {
  std::fill(dx, dx + n * in, Real(0));
  std::fill(dw, dw + out * in, Real(0));
  std::fill(db, db + out, Real(0));
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t o = 0; o < out; ++o) {
      const Real g = dy[i * out + o];
      db[o] += g;
      for (std::int64_t k = 0; k < in; ++k) {
        dx[i * in + k] += g * w[o * in + k];
        dw[o * in + k] += g * x[i * in + k];
      }
    }
  }
}

template <typename Real>
void l2norm_forward_cpu(std::int64_t n, std::int64_t d, const Real* x, Real* y) {
  for (std::int64_t i = 0; i < n; ++i) {
    double ss = 0.0;
    for (std::int64_t k = 0; k < d; ++k) ss += static_cast<double>(x[i * d + k]) * static_cast<double>(x[i * d + k]);
    const double inv = 1.0 / std::max(std::sqrt(ss), 1e-12);
    for (std::int64_t k = 0; k < d; ++k) y[i * d + k] = static_cast<Real>(static_cast<double>(x[i * d + k]) * inv);
  }
}

template <typename Real>
void l2norm_backward_cpu(std::int64_t n, std::int64_t d, const Real* x, const Real* y, const Real* dy, Real* dx) {
  for (std::int64_t i = 0; i < n; ++i) {
    double ss = 0.0, ydy = 0.0;
    for (std::int64_t k = 0; k < d; ++k) {
      ss += static_cast<double>(x[i * d + k]) * static_cast<double>(x[i * d + k]);
      ydy += static_cast<double>(y[i * d + k]) * static_cast<double>(dy[i * d + k]);
    }
    const double norm = std::sqrt(ss);
    for (std::int64_t k = 0; k < d; ++k) {
      // Below the clamp y = x / 1e-12 is linear in x.
      dx[i * d + k] = static_cast<Real>(norm > 1e-12 ? (static_cast<double>(dy[i * d + k]) - static_cast<double>(y[i * d + k]) * ydy) / norm
                                                     : static_cast<double>(dy[i * d + k]) / 1e-12);
    }
  }
}

template <typename Real>
void sgd_step_cpu(std::int64_t count, Real* w, const Real* grad, Real* buf, Real lr, Real momentum,
                  Real weight_decay, bool nesterov, bool first) {
  for (std::int64_t e = 0; e < count; ++e) {
    const Real g = grad[e] + weight_decay * w[e];
    const Real b = first ? g : momentum * buf[e] + g;
    buf[e] = b;
    w[e] -= lr * (nesterov ? g + momentum * b : b);
  }
}

#define NPID_INSTANTIATE_LAYERS(Real)                                                                   \
  template void conv2d_forward_cpu<Real>(const ConvShape&, const Real*, const Real*, Real*, int);       \
  template void conv2d_backward_data_cpu<Real>(const ConvShape&, const Real*, const Real*, Real*, int); \
  template void conv2d_backward_weight_cpu<Real>(const ConvShape&, const Real*, const Real*, Real*, int); \
  template void batchnorm_train_forward_cpu<Real>(const NormShape&, const Real*, const Real*, const Real*, \
                                                  Real, Real, Real*, Real*, const Real*, bool, Real*, Real*, \
                                                  Real*);                                               \
  template void batchnorm_eval_forward_cpu<Real>(const NormShape&, const Real*, const Real*, const Real*, \
                                                 const Real*, const Real*, Real, const Real*, bool, Real*); \
  template void batchnorm_backward_cpu<Real>(const NormShape&, const Real*, const Real*, const Real*, bool, \
                                             const Real*, const Real*, const Real*, Real*, Real*, Real*, \
                                             Real*);                                                    \
  template void maxpool_forward_cpu<Real>(const PoolShape&, const Real*, Real*, std::int64_t*);          \
  template void maxpool_backward_cpu<Real>(const PoolShape&, const Real*, const std::int64_t*, Real*);   \
  template void avgpool_forward_cpu<Real>(std::int64_t, std::int64_t, std::int64_t, const Real*, Real*); \
  template void avgpool_backward_cpu<Real>(std::int64_t, std::int64_t, std::int64_t, const Real*, Real*); \
  template void linear_forward_cpu<Real>(std::int64_t, std::int64_t, std::int64_t, const Real*, const Real*, \
                                         const Real*, Real*);                                           \
  template void linear_backward_cpu<Real>(std::int64_t, std::int64_t, std::int64_t, const Real*, const Real*, \
                                          const Real*, Real*, Real*, Real*);                            \
  template void l2norm_forward_cpu<Real>(std::int64_t, std::int64_t, const Real*, Real*);               \
  template void l2norm_backward_cpu<Real>(std::int64_t, std::int64_t, const Real*, const Real*, const Real*, \
                                          Real*);                                                       \
  template void sgd_step_cpu<Real>(std::int64_t, Real*, const Real*, Real*, Real, Real, Real, bool, bool);

NPID_INSTANTIATE_LAYERS(float)
NPID_INSTANTIATE_LAYERS(double)
#undef NPID_INSTANTIATE_LAYERS

}  // namespace layers
}  // namespace npid

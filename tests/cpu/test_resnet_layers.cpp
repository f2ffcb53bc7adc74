// ResNet-18 layer references: against independent direct computations, and
// every backward against finite differences in double (loss = sum(y * r)).
#include <cmath>

#include "common/fd.h"
#include "resnet_layers.h"

using namespace npid;
using namespace npid::layers;
using test::dot;
using test::numeric_grad;
using test::randn;

namespace {

// Direct convolution, NHWC x, OHWI w -- no im2col.
std::vector<double> direct_conv(const ConvShape& s, const std::vector<double>& x, const std::vector<double>& w) {
  const std::int64_t ho = s.out_h(), wo = s.out_w();
  std::vector<double> y(static_cast<std::size_t>(s.n * ho * wo * s.out_c), 0.0);
  for (std::int64_t n = 0; n < s.n; ++n)
    for (std::int64_t oh = 0; oh < ho; ++oh)
      for (std::int64_t ow = 0; ow < wo; ++ow)
        for (std::int64_t o = 0; o < s.out_c; ++o) {
          double acc = 0;
          for (std::int64_t kh = 0; kh < s.k; ++kh)
            for (std::int64_t kw = 0; kw < s.k; ++kw)
              for (std::int64_t c = 0; c < s.c; ++c) {
                const std::int64_t ih = oh * s.stride - s.pad + kh, iw = ow * s.stride - s.pad + kw;
                if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
                acc += x[((n * s.h + ih) * s.w + iw) * s.c + c] * w[((o * s.k + kh) * s.k + kw) * s.c + c];
              }
          y[((n * ho + oh) * wo + ow) * s.out_c + o] = acc;
        }
  return y;
}


}  // namespace

TEST_CASE("conv2d: im2col forward equals the direct convolution", "[layers][conv]") {
  for (const ConvShape& s : {ConvShape::of(2, 5, 6, 3, 4, 3, 1, 1), ConvShape::of(1, 9, 9, 2, 3, 7, 2, 3),
                             ConvShape::of(3, 4, 4, 5, 2, 1, 2, 0), ConvShape::of(1, 8, 5, 4, 6, 3, 2, 1)}) {
    auto x = randn(static_cast<std::size_t>(s.n * s.h * s.w * s.c), 1);
    auto w = randn(static_cast<std::size_t>(s.weight_size()), 2);
    std::vector<double> y(static_cast<std::size_t>(s.n * s.out_h() * s.out_w() * s.out_c));
    conv2d_forward_cpu(s, x.data(), w.data(), y.data(), 3);
    const auto want = direct_conv(s, x, w);
    INFO("k=" << s.k << " stride=" << s.stride << " pad=" << s.pad);
    CHECK(test::relative_error(y, want) < 1e-14);
    // Exactly: each output adds its products in (kh, kw, c) order from 0, as
    // the direct loop does (padding contributes +-0, which changes no sum),
    // whatever blocking the implementation uses (output rows by four, here
    // with remainders: 30, 25, 8, 12 positions per image).
    CHECK(y == want);
  }
}

TEST_CASE("conv2d: data and weight gradients match finite differences", "[layers][conv]") {
  for (const ConvShape& s : {ConvShape::of(2, 4, 5, 3, 2, 3, 1, 1), ConvShape::of(1, 7, 7, 2, 3, 3, 2, 1),
                             ConvShape::of(2, 3, 3, 2, 2, 1, 2, 0)}) {
    auto x = randn(static_cast<std::size_t>(s.n * s.h * s.w * s.c), 3);
    auto w = randn(static_cast<std::size_t>(s.weight_size()), 4);
    const std::size_t ny = static_cast<std::size_t>(s.n * s.out_h() * s.out_w() * s.out_c);
    const auto r = randn(ny, 5);
    std::vector<double> y(ny);
    auto loss = [&] {
      conv2d_forward_cpu(s, x.data(), w.data(), y.data(), 2);
      return dot(y, r);
    };
    std::vector<double> dx(x.size()), dw(w.size());
    conv2d_backward_data_cpu(s, r.data(), w.data(), dx.data(), 2);
    conv2d_backward_weight_cpu(s, x.data(), r.data(), dw.data(), 2);
    INFO("k=" << s.k << " stride=" << s.stride);
    CHECK(test::relative_error(dx, numeric_grad(x, loss)) < 1e-7);
    CHECK(test::relative_error(dw, numeric_grad(w, loss)) < 1e-7);
  }
}

TEST_CASE("conv2d: results do not depend on the thread count", "[layers][conv]") {
  const ConvShape s = ConvShape::of(5, 6, 6, 4, 7, 3, 1, 1);
  std::vector<float> x(static_cast<std::size_t>(s.n * s.h * s.w * s.c)), w(static_cast<std::size_t>(s.weight_size()));
  for (std::size_t k = 0; k < x.size(); ++k) x[k] = std::sin(0.37f * static_cast<float>(k));
  for (std::size_t k = 0; k < w.size(); ++k) w[k] = std::cos(0.11f * static_cast<float>(k));
  std::vector<float> y1(static_cast<std::size_t>(s.n * 36 * 7)), y4(y1.size()), dw1(w.size()), dw4(w.size());
  conv2d_forward_cpu(s, x.data(), w.data(), y1.data(), 1);
  conv2d_forward_cpu(s, x.data(), w.data(), y4.data(), 4);
  conv2d_backward_weight_cpu(s, x.data(), y1.data(), dw1.data(), 1);
  conv2d_backward_weight_cpu(s, x.data(), y1.data(), dw4.data(), 4);
  CHECK(y1 == y4);
  CHECK(dw1 == dw4);
}

TEST_CASE("batchnorm: training forward, running statistics, eval", "[layers][bn]") {
  const NormShape s{6, 2};  // 6 positions, 2 channels
  std::vector<double> x = {1, 10, 2, 20, 3, 30, 4, 40, 5, 50, 6, 60};
  std::vector<double> gamma = {2, 0.5}, beta = {1, -1}, rm = {0, 0}, rv = {1, 1}, y(12), sm(2), si(2);
  batchnorm_train_forward_cpu(s, x.data(), gamma.data(), beta.data(), 1e-5, 0.1, rm.data(), rv.data(),
                              static_cast<const double*>(nullptr), false, y.data(), sm.data(), si.data());
  // Channel 0: mean 3.5, biased var 35/12, unbiased var 3.5.
  CHECK(sm[0] == Approx(3.5));
  CHECK(si[0] == Approx(1 / std::sqrt(35.0 / 12 + 1e-5)));
  CHECK(y[0] == Approx(2 * (1 - 3.5) * si[0] + 1));
  CHECK(rm[0] == Approx(0.35));
  CHECK(rv[0] == Approx(0.9 + 0.1 * 3.5));
  CHECK(rm[1] == Approx(3.5));
  CHECK(rv[1] == Approx(0.9 + 0.1 * 350));
  // Normalized output: mean beta, standard deviation ~gamma.
  double m0 = 0, v0 = 0;
  for (int p = 0; p < 6; ++p) m0 += y[p * 2] / 6;
  for (int p = 0; p < 6; ++p) v0 += (y[p * 2] - m0) * (y[p * 2] - m0) / 6;
  CHECK(m0 == Approx(1.0));
  CHECK(std::sqrt(v0) == Approx(2.0).epsilon(1e-5));
  // Eval uses the running statistics, not the batch's.
  std::vector<double> ye(12);
  batchnorm_eval_forward_cpu(s, x.data(), gamma.data(), beta.data(), rm.data(), rv.data(), 1e-5,
                             static_cast<const double*>(nullptr), false, ye.data());
  CHECK(ye[0] == Approx(2 * (1 - rm[0]) / std::sqrt(rv[0] + 1e-5) + 1));
  // Running statistics after several steps: exponential moving average.
  std::vector<double> rm2 = {0, 0}, rv2 = {1, 1};
  for (int step = 0; step < 3; ++step)
    batchnorm_train_forward_cpu(s, x.data(), gamma.data(), beta.data(), 1e-5, 0.1, rm2.data(), rv2.data(),
                                static_cast<const double*>(nullptr), false, y.data(), sm.data(), si.data());
  CHECK(rm2[0] == Approx(3.5 * (1 - std::pow(0.9, 3))));
  CHECK(rv2[0] == Approx(std::pow(0.9, 3) + 3.5 * (1 - std::pow(0.9, 3))));
}

TEST_CASE("batchnorm: backward matches finite differences, with residual and ReLU", "[layers][bn]") {
  for (bool relu : {false, true}) {
    for (bool residual : {false, true}) {
      const NormShape s{10, 3};
      auto x = randn(30, 11), gamma = randn(3, 12), beta = randn(3, 13), res = randn(30, 14), r = randn(30, 15);
      std::vector<double> y(30), sm(3), si(3);
      auto loss = [&] {
        std::vector<double> rm(3, 0.0), rv(3, 1.0);
        batchnorm_train_forward_cpu(s, x.data(), gamma.data(), beta.data(), 1e-5, 0.1, rm.data(), rv.data(),
                                    residual ? res.data() : nullptr, relu, y.data(), sm.data(), si.data());
        return dot(y, r);
      };
      loss();
      std::vector<double> dx(30), dg(3), db(3), dres(30);
      batchnorm_backward_cpu(s, r.data(), x.data(), y.data(), relu, gamma.data(), sm.data(), si.data(), dx.data(),
                             dg.data(), db.data(), residual ? dres.data() : nullptr);
      INFO("relu=" << relu << " residual=" << residual);
      CHECK(test::relative_error(dx, numeric_grad(x, loss)) < 1e-6);
      CHECK(test::relative_error(dg, numeric_grad(gamma, loss)) < 1e-6);
      CHECK(test::relative_error(db, numeric_grad(beta, loss)) < 1e-6);
      if (residual) CHECK(test::relative_error(dres, numeric_grad(res, loss)) < 1e-6);
    }
  }
}

TEST_CASE("max pool 3x3/2: forward by hand, backward by finite differences", "[layers][pool]") {
  PoolShape s;
  s.n = 2;
  s.h = 5;
  s.w = 6;
  s.c = 3;
  auto x = randn(static_cast<std::size_t>(s.n * s.h * s.w * s.c), 21);  // distinct values: no ties
  const std::size_t ny = static_cast<std::size_t>(s.n * s.out_h() * s.out_w() * s.c);
  std::vector<double> y(ny);
  std::vector<std::int64_t> arg(ny);
  maxpool_forward_cpu(s, x.data(), y.data(), arg.data());
  CHECK(s.out_h() == 3);
  CHECK(s.out_w() == 3);
  // Output (0, 1, 1, c) pools rows 1..3, columns 1..3.
  for (std::int64_t c = 0; c < s.c; ++c) {
    double m = -1e300;
    for (int ih = 1; ih <= 3; ++ih)
      for (int iw = 1; iw <= 3; ++iw) m = std::max(m, x[(ih * s.w + iw) * s.c + c]);
    CHECK(y[(1 * 3 + 1) * s.c + c] == m);
  }
  const auto r = randn(ny, 22);
  auto loss = [&] {
    maxpool_forward_cpu(s, x.data(), y.data(), arg.data());
    return dot(y, r);
  };
  loss();
  std::vector<double> dx(x.size());
  maxpool_backward_cpu(s, r.data(), arg.data(), dx.data());
  CHECK(test::relative_error(dx, numeric_grad(x, loss)) < 1e-7);
}

TEST_CASE("avgpool, linear and L2 normalization: backward by finite differences", "[layers][head]") {
  const std::int64_t n = 3, hw = 5, c = 4, out = 6;
  auto x = randn(static_cast<std::size_t>(n * hw * c), 31), r = randn(static_cast<std::size_t>(n * c), 32);
  std::vector<double> y(static_cast<std::size_t>(n * c)), dx(x.size());
  auto pool_loss = [&] {
    avgpool_forward_cpu(n, hw, c, x.data(), y.data());
    return dot(y, r);
  };
  avgpool_backward_cpu(n, hw, c, r.data(), dx.data());
  CHECK(test::relative_error(dx, numeric_grad(x, pool_loss)) < 1e-7);

  auto xi = randn(static_cast<std::size_t>(n * c), 33), w = randn(static_cast<std::size_t>(out * c), 34),
       b = randn(static_cast<std::size_t>(out), 35), rl = randn(static_cast<std::size_t>(n * out), 36);
  std::vector<double> yl(static_cast<std::size_t>(n * out)), dxi(xi.size()), dw(w.size()), db(b.size());
  auto lin_loss = [&] {
    linear_forward_cpu(n, c, out, xi.data(), w.data(), b.data(), yl.data());
    return dot(yl, rl);
  };
  linear_backward_cpu(n, c, out, xi.data(), w.data(), rl.data(), dxi.data(), dw.data(), db.data());
  CHECK(test::relative_error(dxi, numeric_grad(xi, lin_loss)) < 1e-7);
  CHECK(test::relative_error(dw, numeric_grad(w, lin_loss)) < 1e-7);
  CHECK(test::relative_error(db, numeric_grad(b, lin_loss)) < 1e-7);

  auto z = randn(static_cast<std::size_t>(n * out), 37), rz = randn(z.size(), 38);
  std::vector<double> u(z.size()), dz(z.size());
  auto norm_loss = [&] {
    l2norm_forward_cpu(n, out, z.data(), u.data());
    return dot(u, rz);
  };
  norm_loss();
  for (std::int64_t i = 0; i < n; ++i) {
    double ss = 0;
    for (std::int64_t k = 0; k < out; ++k) ss += u[i * out + k] * u[i * out + k];
    CHECK(std::sqrt(ss) == Approx(1.0));
  }
  l2norm_backward_cpu(n, out, z.data(), u.data(), rz.data(), dz.data());
  CHECK(test::relative_error(dz, numeric_grad(z, norm_loss)) < 1e-7);
}

TEST_CASE("SGD: three steps against a hand computation", "[layers][sgd]") {
  for (bool nesterov : {false, true}) {
    std::vector<double> w = {1.0, -2.0}, buf(2, 123.0);  // buf is ignored on the first step
    const double lr = 0.1, mom = 0.9, wd = 0.01;
    const std::vector<std::vector<double>> grads = {{0.5, 0.25}, {-1.0, 0.0}, {0.2, -0.4}};
    std::vector<double> ew = w, eb(2, 0.0);
    for (int step = 0; step < 3; ++step) {
      sgd_step_cpu(2, w.data(), grads[step].data(), buf.data(), lr, mom, wd, nesterov, step == 0);
      for (int e = 0; e < 2; ++e) {
        const double g = grads[step][e] + wd * ew[e];
        eb[e] = step == 0 ? g : mom * eb[e] + g;
        ew[e] -= lr * (nesterov ? g + mom * eb[e] : eb[e]);
      }
      INFO("nesterov=" << nesterov << " step " << step);
      CHECK(w[0] == Approx(ew[0]).epsilon(1e-14));
      CHECK(w[1] == Approx(ew[1]).epsilon(1e-14));
    }
    // First step: w1 = 1 - 0.1 * (0.5 + 0.01) (plain) by hand.
    if (!nesterov) CHECK(ew[0] != 1.0);
  }
  // The hand rule's first step, written out: buf = g, w -= lr * buf.
  std::vector<double> w = {1.0}, b = {7.0};
  const std::vector<double> g = {0.5};
  sgd_step_cpu(1, w.data(), g.data(), b.data(), 0.1, 0.9, 0.0, false, true);
  CHECK(w[0] == Approx(1.0 - 0.1 * 0.5));
  CHECK(b[0] == Approx(0.5));
}

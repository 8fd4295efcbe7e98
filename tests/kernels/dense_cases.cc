// tests/kernels/dense_cases.cc: ops_test cases for the per-token ops (GEMM, Linear,
// RMSNorm, RoPE, SwiGLU): the op in both precisions, naive loops, analytic backward.
#include <cmath>
#include <complex>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/ops.h"
#include "tests/kernels/op_check.h"

namespace mt::opcheck {

// ---- GEMM and Linear ------------------------------------------------------------------

OpCase GemmCase(bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t pad, double alpha,
                double beta) {
  // Stored shapes: A [ta ? K : M, lda], B [tb ? N : K, ldb], C [M, ldc]; the padding
  // columns must come back untouched.
  const int64_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
  OpCase c;
  c.name = std::string("gemm_") + (ta ? "T" : "N") + (tb ? "T" : "N") + "_pad" +
           std::to_string(pad) + (beta != 0 ? "_beta" : "");
  c.inputs = {{(ta ? K : M) * lda}, {(tb ? N : K) * ldb}, {M * ldc}};
  c.forward = BothPrecisions([=](auto t, const Vecs& in) {
    using T = decltype(t);
    auto a = Cast<T>(in[0]), b = Cast<T>(in[1]), cc = Cast<T>(in[2]);
    ops::Gemm<T>(ta, tb, M, N, K, T(alpha), a.data(), lda, b.data(), ldb, T(beta), cc.data(), ldc);
    return Vecs{Up(cc)};
  });
  c.reference = [=](const Vecs& in) {
    Vec cc = in[2];
    for (int64_t i = 0; i < M; ++i) {
      for (int64_t j = 0; j < N; ++j) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) {
          s += in[0][ta ? k * lda + i : i * lda + k] * in[1][tb ? j * ldb + k : k * ldb + j];
        }
        cc[i * ldc + j] = alpha * s + beta * in[2][i * ldc + j];
      }
    }
    return Vecs{cc};
  };
  return c;
}

// y[M,N] = x[M,K] W[N,K]^T; backward overwrites dx (or adds, `accumulate`) and adds to dW.
OpCase LinearCase(int64_t M, int64_t K, int64_t N, bool accumulate) {
  OpCase c;
  c.name = std::string("linear") + (accumulate ? "_accumulate" : "");
  c.inputs = {{M * K}, {N * K}};
  c.forward = BothPrecisions([=](auto t, const Vecs& in) {
    using T = decltype(t);
    auto x = Cast<T>(in[0]), w = Cast<T>(in[1]);
    std::vector<T> y(M * N, std::numeric_limits<T>::quiet_NaN());  // must be overwritten
    ops::LinearForward<T>(x.data(), w.data(), y.data(), M, K, N);
    return Vecs{Up(y)};
  });
  c.reference = [=](const Vecs& in) {
    Vec y(M * N, 0);
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j)
        for (int64_t k = 0; k < K; ++k) y[i * N + j] += in[0][i * K + k] * in[1][j * K + k];
    return Vecs{y};
  };
  c.backward = [=](const Vecs& in, const Vecs& dout) {
    // Pre-filled buffers: what was there must be added to (dW, accumulate dx) or lost.
    Vec prefill_dx(M * K), prefill_dw(N * K);
    for (size_t i = 0; i < prefill_dx.size(); ++i) prefill_dx[i] = 0.25 + 0.01 * i;
    for (size_t i = 0; i < prefill_dw.size(); ++i) prefill_dw[i] = -0.5 + 0.02 * i;
    Vec dx = accumulate ? prefill_dx : Vec(M * K, std::numeric_limits<double>::quiet_NaN());
    Vec dw = prefill_dw;
    ops::LinearBackwardInput<double>(dout[0].data(), in[1].data(), dx.data(), M, K, N, accumulate);
    ops::LinearBackwardWeight<double>(dout[0].data(), in[0].data(), dw.data(), M, K, N);
    for (size_t i = 0; i < dx.size() && accumulate; ++i) dx[i] -= prefill_dx[i];
    for (size_t i = 0; i < dw.size(); ++i) dw[i] -= prefill_dw[i];
    return Vecs{dx, dw};
  };
  return c;
}

// ---- RMSNorm --------------------------------------------------------------------------

OpCase RmsNormCase(int64_t rows, int64_t C, double eps) {
  OpCase c;
  c.name = "rmsnorm_" + std::to_string(rows) + "x" + std::to_string(C);
  c.inputs = {{rows * C, 2.0}, {C, 0.5, 1.0}};
  c.diff_outputs = 1;  // y; rstd is saved state, checked against the reference only
  c.forward = BothPrecisions([=](auto t, const Vecs& in) {
    using T = decltype(t);
    auto x = Cast<T>(in[0]), w = Cast<T>(in[1]);
    std::vector<T> y(rows * C), rstd(rows);
    ops::RmsNormForward<T>(x.data(), w.data(), y.data(), rstd.data(), rows, C, eps);
    return Vecs{Up(y), Up(rstd)};
  });
  c.reference = [=](const Vecs& in) {
    Vec y(rows * C), rstd(rows);
    for (int64_t r = 0; r < rows; ++r) {
      double ms = 0;
      for (int64_t j = 0; j < C; ++j) ms += in[0][r * C + j] * in[0][r * C + j] / C;
      rstd[r] = 1 / std::sqrt(ms + eps);
      for (int64_t j = 0; j < C; ++j) y[r * C + j] = in[0][r * C + j] * rstd[r] * in[1][j];
    }
    return Vecs{y, rstd};
  };
  c.backward = [=](const Vecs& in, const Vecs& dout) {
    Vec y(rows * C), rstd(rows), dx(rows * C), dw(C, 3.0);  // dw += onto 3.0
    ops::RmsNormForward<double>(in[0].data(), in[1].data(), y.data(), rstd.data(), rows, C, eps);
    ops::RmsNormBackward<double>(dout[0].data(), in[0].data(), in[1].data(), rstd.data(), dx.data(),
                                 dw.data(), rows, C);
    for (double& g : dw) g -= 3.0;
    return Vecs{dx, dw};
  };
  return c;
}

// ---- RoPE -----------------------------------------------------------------------------

OpCase RopeCase(int64_t B, int64_t S, int64_t H, int64_t stride, int64_t offset, int64_t dr,
                double mscale) {
  // Tables [S, dr/2], YaRN-style factor `mscale` folded into both.
  auto cos = std::make_shared<Vec>(S * dr / 2), sin = std::make_shared<Vec>(S * dr / 2);
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t i = 0; i < dr / 2; ++i) {
      const double angle = s * std::pow(10000.0, -2.0 * i / dr);
      (*cos)[s * dr / 2 + i] = mscale * std::cos(angle);
      (*sin)[s * dr / 2 + i] = mscale * std::sin(angle);
    }
  }
  const int64_t n = B * S * H * stride;
  OpCase c;
  c.name = "rope" + std::string(mscale != 1 ? "_scaled" : "");
  c.inputs = {{n}};
  c.forward = BothPrecisions([=](auto t, const Vecs& in) {
    using T = decltype(t);
    auto x = Cast<T>(in[0]);
    ops::RopeForward<T>(x.data(), B, S, H, stride, offset, dr, cos->data(), sin->data());
    return Vecs{Up(x)};
  });
  c.reference = [=](const Vecs& in) {
    Vec y = in[0];
    for (int64_t row = 0; row < B * S * H; ++row) {
      const int64_t s = (row / H) % S;
      for (int64_t i = 0; i < dr / 2; ++i) {
        double* p = &y[row * stride + offset + 2 * i];
        const std::complex<double> z =
            std::complex<double>(p[0], p[1]) *
            std::complex<double>((*cos)[s * dr / 2 + i], (*sin)[s * dr / 2 + i]);
        p[0] = z.real();
        p[1] = z.imag();
      }
    }
    return Vecs{y};
  };
  c.backward = [=](const Vecs& in, const Vecs& dout) {
    Vec dx = dout[0];
    ops::RopeBackward<double>(dx.data(), B, S, H, stride, offset, dr, cos->data(), sin->data());
    return Vecs{dx};
  };
  // Backward after forward is the identity scaled by mscale^2 inside the slice.
  c.extra = [=](const Vecs& in) {
    Vec x = in[0];
    ops::RopeForward<double>(x.data(), B, S, H, stride, offset, dr, cos->data(), sin->data());
    ops::RopeBackward<double>(x.data(), B, S, H, stride, offset, dr, cos->data(), sin->data());
    Vec want = in[0];
    for (int64_t row = 0; row < B * S * H; ++row)
      for (int64_t j = offset; j < offset + dr; ++j) want[row * stride + j] *= mscale * mscale;
    EXPECT_LT(RelErr(x, want), 1e-14) << "RopeBackward(RopeForward(x)) != mscale^2 x";
  };
  return c;
}

// ---- SwiGLU ---------------------------------------------------------------------------

OpCase SwigluCase(int64_t n) {
  OpCase c;
  c.name = "swiglu";
  c.inputs = {{n, 5.0}, {n}};
  c.forward = BothPrecisions([=](auto t, const Vecs& in) {
    using T = decltype(t);
    auto g = Cast<T>(in[0]), u = Cast<T>(in[1]);
    std::vector<T> h(n);
    ops::SwigluForward<T>(g.data(), u.data(), h.data(), n);
    return Vecs{Up(h)};
  });
  c.reference = [=](const Vecs& in) {
    Vec h(n);
    for (int64_t i = 0; i < n; ++i) h[i] = in[0][i] * in[1][i] / (1 + std::exp(-in[0][i]));
    return Vecs{h};
  };
  c.backward = [=](const Vecs& in, const Vecs& dout) {
    Vec dg(n), du(n);
    ops::SwigluBackward<double>(dout[0].data(), in[0].data(), in[1].data(), dg.data(), du.data(),
                                n);
    return Vecs{dg, du};
  };
  return c;
}

}  // namespace mt::opcheck

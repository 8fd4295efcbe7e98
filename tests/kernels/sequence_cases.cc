// tests/kernels/sequence_cases.cc: ops_test cases for the ops that mix positions or
// vocabulary rows (causal attention, embedding, cross-entropy) and the elementwise helpers.
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/ops.h"
#include "tests/kernels/op_check.h"

namespace mt::opcheck {

// ---- Causal attention -----------------------------------------------------------------

OpCase AttentionCase(int64_t B, int64_t S, int64_t N, int64_t Dqk, int64_t Dv) {
  const double scale = 1.5 / std::sqrt(double(Dqk));  // > 1/sqrt(D): peakier softmax
  OpCase c;
  c.name = "attention_S" + std::to_string(S);
  // q, k [B,S,N,Dqk], v [B,S,N,Dv]
  c.inputs = {{B * S * N * Dqk}, {B * S * N * Dqk}, {B * S * N * Dv}};
  c.diff_outputs = 1;  // out; probs is saved state
  c.forward = BothPrecisions([=](auto t, const Vecs& in) {
    using T = decltype(t);
    auto q = Cast<T>(in[0]), k = Cast<T>(in[1]), v = Cast<T>(in[2]);
    std::vector<T> out(B * S * N * Dv), probs(B * N * S * S, T(-1));
    ops::AttentionForward<T>(q.data(), k.data(), v.data(), out.data(), probs.data(), B, S, N, Dqk,
                             Dv, scale);
    return Vecs{Up(out), Up(probs)};
  });
  c.reference = [=](const Vecs& in) {
    Vec out(B * S * N * Dv, 0), probs(B * N * S * S, 0);
    auto qk = [&](int64_t b, int64_t s, int64_t h) { return ((b * S + s) * N + h) * Dqk; };
    auto vi = [&](int64_t b, int64_t s, int64_t h) { return ((b * S + s) * N + h) * Dv; };
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < N; ++h) {
        for (int64_t i = 0; i < S; ++i) {
          Vec e(i + 1);
          double z = 0;
          for (int64_t j = 0; j <= i; ++j) {
            double dot = 0;
            for (int64_t d = 0; d < Dqk; ++d)
              dot += in[0][qk(b, i, h) + d] * in[1][qk(b, j, h) + d];
            e[j] = std::exp(scale * dot);
            z += e[j];
          }
          for (int64_t j = 0; j <= i; ++j) {
            probs[((b * N + h) * S + i) * S + j] = e[j] / z;
            for (int64_t d = 0; d < Dv; ++d) {
              out[vi(b, i, h) + d] += e[j] / z * in[2][vi(b, j, h) + d];
            }
          }
        }
      }
    }
    return Vecs{out, probs};
  };
  c.backward = [=](const Vecs& in, const Vecs& dout) {
    Vec out(B * S * N * Dv), probs(B * N * S * S);
    ops::AttentionForward<double>(in[0].data(), in[1].data(), in[2].data(), out.data(),
                                  probs.data(), B, S, N, Dqk, Dv, scale);
    const double nan = std::numeric_limits<double>::quiet_NaN();  // all must be overwritten
    Vec dq(in[0].size(), nan), dk(in[1].size(), nan), dv(in[2].size(), nan);
    ops::AttentionBackward<double>(dout[0].data(), in[0].data(), in[1].data(), in[2].data(),
                                   probs.data(), dq.data(), dk.data(), dv.data(), B, S, N, Dqk, Dv,
                                   scale);
    return Vecs{dq, dk, dv};
  };
  // Causality: changing keys/values at positions >= t0 leaves outputs before t0 alone.
  c.extra = [=](const Vecs& in) {
    const int64_t t0 = S / 2;
    Vecs changed = in;
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t s = t0; s < S; ++s) {
        for (int64_t j = 0; j < N * Dqk; ++j) changed[1][(b * S + s) * N * Dqk + j] += 0.75;
        for (int64_t j = 0; j < N * Dv; ++j) changed[2][(b * S + s) * N * Dv + j] -= 1.25;
      }
    }
    const Vecs a = c.forward(in, false), b2 = c.forward(changed, false);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t row = b * S * N * Dv, past = t0 * N * Dv, all = S * N * Dv;
      Vec pa(a[0].begin() + row, a[0].begin() + row + past);
      Vec pb(b2[0].begin() + row, b2[0].begin() + row + past);
      EXPECT_LT(RelErr(pb, pa), 1e-14) << "batch " << b << ": future keys changed the past";
      Vec fa(a[0].begin() + row + past, a[0].begin() + row + all);
      Vec fb(b2[0].begin() + row + past, b2[0].begin() + row + all);
      EXPECT_GT(RelErr(fb, fa), 1e-3) << "batch " << b << ": the change had no effect at all";
    }
    // probs: rows sum to one, exact zeros above the diagonal.
    for (int64_t r = 0; r < B * N * S; ++r) {
      const int64_t i = r % S;
      double sum = 0;
      for (int64_t j = 0; j < S; ++j) {
        const double p = a[1][r * S + j];
        if (j > i) {
          ASSERT_EQ(p, 0.0) << "row " << r << " col " << j;
        }
        sum += p;
      }
      EXPECT_NEAR(sum, 1.0, 1e-13) << "row " << r;
    }
  };
  return c;
}

// ---- Embedding ------------------------------------------------------------------------

OpCase EmbeddingCase(int64_t n, int64_t V, int64_t C) {
  // ids (5i + 1) mod V with n > V: several rows are hit more than once.
  auto ids = std::make_shared<std::vector<int32_t>>(n);
  for (int64_t i = 0; i < n; ++i) (*ids)[i] = int32_t((5 * i + 1) % V);
  OpCase c;
  c.name = "embedding";
  c.inputs = {{V * C}};
  c.forward = BothPrecisions([=](auto t, const Vecs& in) {
    using T = decltype(t);
    auto table = Cast<T>(in[0]);
    std::vector<T> out(n * C);
    ops::EmbeddingForward<T>(ids->data(), table.data(), out.data(), n, C);
    return Vecs{Up(out)};
  });
  c.reference = [=](const Vecs& in) {
    Vec out(n * C);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < C; ++j) out[i * C + j] = in[0][(*ids)[i] * C + j];
    return Vecs{out};
  };
  c.backward = [=](const Vecs& in, const Vecs& dout) {
    Vec dtable(V * C, 2.0);  // += onto 2.0
    ops::EmbeddingBackward<double>(ids->data(), dout[0].data(), dtable.data(), n, C);
    for (double& g : dtable) g -= 2.0;
    return Vecs{dtable};
  };
  return c;
}

// ---- Cross-entropy --------------------------------------------------------------------

namespace {
// Rows with r % 4 == 2 are ignored (target -1).
std::vector<int32_t> CeTargets(int64_t rows, int64_t V) {
  std::vector<int32_t> t(rows);
  for (int64_t r = 0; r < rows; ++r) t[r] = r % 4 == 2 ? -1 : int32_t((7 * r + 3) % V);
  return t;
}
}  // namespace

OpCase CrossEntropyCase(int64_t rows, int64_t V) {
  auto targets = std::make_shared<std::vector<int32_t>>(CeTargets(rows, V));
  OpCase c;
  c.name = "cross_entropy";
  c.inputs = {{rows * V, 3.0}};
  c.diff_outputs = 2;  // per-row losses and their sum, both functions of the logits
  c.forward = BothPrecisions([=](auto t, const Vecs& in) {
    using T = decltype(t);
    auto x = Cast<T>(in[0]);
    std::vector<T> losses(rows, T(-7));
    const double total = ops::CrossEntropyForwardBackward<T>(x.data(), targets->data(), rows, V,
                                                             T(1), losses.data());
    return Vecs{Up(losses), Vec{total}};
  });
  c.reference = [=](const Vecs& in) {
    Vec losses(rows, 0);
    double total = 0;
    for (int64_t r = 0; r < rows; ++r) {
      if ((*targets)[r] < 0) continue;
      double z = 0;
      for (int64_t j = 0; j < V; ++j) z += std::exp(in[0][r * V + j]);
      losses[r] = std::log(z) - in[0][r * V + (*targets)[r]];
      total += losses[r];
    }
    return Vecs{losses, Vec{total}};
  };
  // With grad_scale 1 the op's in-place output is d(sum of losses)/d(logits) per row.
  c.backward = [=](const Vecs& in, const Vecs& dout) {
    Vec g = in[0];
    ops::CrossEntropyForwardBackward<double>(g.data(), targets->data(), rows, V, 1.0, nullptr);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < V; ++j) g[r * V + j] *= dout[0][r] + dout[1][0];
    return Vecs{g};
  };
  c.extra = [=](const Vecs& in) {
    Vec g1 = in[0], gs = in[0];
    const double l1 =
        ops::CrossEntropyForwardBackward<double>(g1.data(), targets->data(), rows, V, 1.0, nullptr);
    Vec losses(rows, -7);
    const double ls = ops::CrossEntropyForwardBackward<double>(gs.data(), targets->data(), rows, V,
                                                               0.25, losses.data());
    EXPECT_DOUBLE_EQ(l1, ls) << "grad_scale must not change the loss";
    for (double& v : g1) v *= 0.25;
    EXPECT_LT(RelErr(gs, g1), 1e-15) << "grad_scale 0.25";
    for (int64_t r = 0; r < rows; ++r) {
      if ((*targets)[r] >= 0) continue;
      EXPECT_EQ(losses[r], 0.0) << "ignored row " << r;
      for (int64_t j = 0; j < V; ++j) ASSERT_EQ(gs[r * V + j], 0.0) << "ignored row " << r;
    }
    // Logits around 1000 overflow a naive exp in double and float alike.
    std::vector<float> big(in[0].begin(), in[0].end());
    for (float& v : big) v += 1000.0f;
    std::vector<float> lf(rows);
    const double lbig = ops::CrossEntropyForwardBackward<float>(big.data(), targets->data(), rows,
                                                                V, 1.0f, lf.data());
    EXPECT_TRUE(std::isfinite(lbig));
    EXPECT_NEAR(lbig / l1, 1.0, 1e-3) << "softmax must be shift invariant";
    for (float v : big) ASSERT_TRUE(std::isfinite(v));
  };
  return c;
}

// ---- Elementwise ----------------------------------------------------------------------

OpCase AddCase(int64_t n) {
  OpCase c;
  c.name = "add";
  c.inputs = {{n}, {n}};
  c.forward = BothPrecisions([=](auto t, const Vecs& in) {
    using T = decltype(t);
    auto x = Cast<T>(in[0]), y = Cast<T>(in[1]);
    ops::Add<T>(x.data(), y.data(), n);
    return Vecs{Up(y)};
  });
  c.reference = [=](const Vecs& in) {
    Vec y = in[1];
    for (int64_t i = 0; i < n; ++i) y[i] += in[0][i];
    return Vecs{y};
  };
  return c;
}

OpCase AxpyCase(int64_t n, double a) {
  OpCase c;
  c.name = "axpy";
  c.inputs = {{n}, {n}};
  c.forward = BothPrecisions([=](auto t, const Vecs& in) {
    using T = decltype(t);
    auto x = Cast<T>(in[0]), y = Cast<T>(in[1]);
    ops::Axpy<T>(T(a), x.data(), y.data(), n);
    return Vecs{Up(y)};
  });
  c.reference = [=](const Vecs& in) {
    Vec y = in[1];
    for (int64_t i = 0; i < n; ++i) y[i] += a * in[0][i];
    return Vecs{y};
  };
  return c;
}

OpCase SumSquaresCase(int64_t n) {
  OpCase c;
  c.name = "sum_squares";
  c.inputs = {{n}};
  c.forward = BothPrecisions([=](auto t, const Vecs& in) {
    using T = decltype(t);
    auto x = Cast<T>(in[0]);
    return Vecs{Vec{ops::SumSquares<T>(x.data(), n)}};
  });
  c.reference = [=](const Vecs& in) {
    double s = 0;
    for (double v : in[0]) s += v * v;
    return Vecs{Vec{s}};
  };
  return c;
}

}  // namespace mt::opcheck

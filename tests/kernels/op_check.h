// tests/kernels/op_check.h: the harness behind ops_test's table of op cases.
//
// In the spirit of ggml's test-backend-ops: a case names an op, its input sizes and three
// functions (the op in float or double, a naive double reference, the analytic backward).
// The harness checks the forward against the reference, float against double, and the
// backward against central finite differences of L = sum(r * y) for random r.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace mt::opcheck {

using Vec = std::vector<double>;
using Vecs = std::vector<Vec>;

template <typename T>
std::vector<T> Cast(const Vec& v) {
  return std::vector<T>(v.begin(), v.end());
}
template <typename T>
Vec Up(const std::vector<T>& v) {
  return Vec(v.begin(), v.end());
}

// ||a - b|| / ||b|| (normwise, so single near-zero elements cannot blow it up).
inline double RelErr(const Vec& a, const Vec& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  if (den == 0) return std::sqrt(num);
  return std::sqrt(num / den);
}

// One input tensor: `size` values uniform in [shift - scale, shift + scale].
struct Input {
  int64_t size;
  double scale = 1.0;
  double shift = 0.0;
  bool differentiable = true;
};

struct OpCase {
  std::string name;  // gtest parameter name: letters, digits, underscores
  std::vector<Input> inputs;
  // The op under test; as_float runs it in float (inputs/outputs converted).
  std::function<Vecs(const Vecs& in, bool as_float)> forward;
  // Independent naive loops in double.
  std::function<Vecs(const Vecs& in)> reference;
  // Gradients of sum over the first `diff_outputs` outputs of dout * out, one per input
  // (empty for non-differentiable inputs). Null: the op has no backward to check.
  std::function<Vecs(const Vecs& in, const Vecs& dout)> backward;
  int diff_outputs = 1;
  // Op-specific properties (causality, accumulate semantics, ...), run on the same inputs.
  std::function<void(const Vecs& in)> extra;
};

// Wraps a generic lambda `(auto tag, const Vecs& in) -> Vecs`, tag being float{} or
// double{}, so one body serves both precisions.
template <typename F>
std::function<Vecs(const Vecs&, bool)> BothPrecisions(F f) {
  return [f](const Vecs& in, bool as_float) { return as_float ? f(float{}, in) : f(double{}, in); };
}

inline Vecs RandomInputs(const std::vector<Input>& spec, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  Vecs in;
  for (const Input& s : spec) {
    Vec v(s.size);
    for (double& x : v) x = s.shift + s.scale * u(rng);
    in.push_back(std::move(v));
  }
  return in;
}

// L = sum over the differentiable outputs of r * y.
inline double Functional(const OpCase& c, const Vecs& in, const Vecs& r) {
  Vecs out = c.forward(in, /*as_float=*/false);
  double l = 0;
  for (int o = 0; o < c.diff_outputs; ++o) {
    for (size_t i = 0; i < out[o].size(); ++i) l += r[o][i] * out[o][i];
  }
  return l;
}

// Per-element central differences up to this many differentiable input elements;
// above it, a few random directional derivatives (two forwards each) instead.
constexpr int64_t kMaxPerElementFd = 2500;

inline void CheckGradients(const OpCase& c, Vecs in) {
  const double h = 1e-5;
  Vecs out = c.forward(in, false);
  Vecs r;  // random weights of the linear functional, one per output element
  for (size_t o = 0; o < out.size(); ++o) {
    r.push_back(RandomInputs({Input{int64_t(out[o].size())}}, 11 + o)[0]);
  }
  Vecs grad = c.backward(in, Vecs(r.begin(), r.begin() + c.diff_outputs));
  ASSERT_EQ(grad.size(), in.size());
  int64_t n_diff = 0;
  double grad_norm = 0;
  for (size_t k = 0; k < in.size(); ++k) {
    if (!c.inputs[k].differentiable) continue;
    ASSERT_EQ(grad[k].size(), in[k].size()) << "gradient " << k;
    n_diff += in[k].size();
    for (double g : grad[k]) grad_norm += g * g;
  }
  grad_norm = std::sqrt(grad_norm);
  ASSERT_GT(grad_norm, 0) << "all-zero gradient: the check would be vacuous";

  if (n_diff <= kMaxPerElementFd) {
    for (size_t k = 0; k < in.size(); ++k) {
      if (!c.inputs[k].differentiable) continue;
      Vec fd(in[k].size());
      for (size_t i = 0; i < in[k].size(); ++i) {
        const double x0 = in[k][i];
        in[k][i] = x0 + h;
        const double lp = Functional(c, in, r);
        in[k][i] = x0 - h;
        const double lm = Functional(c, in, r);
        in[k][i] = x0;
        fd[i] = (lp - lm) / (2 * h);
      }
      EXPECT_LT(RelErr(grad[k], fd), 1e-6) << "input " << k << ": analytic vs finite differences";
    }
    return;
  }
  for (int trial = 0; trial < 3; ++trial) {
    Vecs dir = RandomInputs(c.inputs, 100 + trial);
    double analytic = 0, dir_norm = 0;
    Vecs plus = in, minus = in;
    for (size_t k = 0; k < in.size(); ++k) {
      if (!c.inputs[k].differentiable) continue;
      for (size_t i = 0; i < in[k].size(); ++i) {
        analytic += grad[k][i] * dir[k][i];
        dir_norm += dir[k][i] * dir[k][i];
        plus[k][i] += h * dir[k][i];
        minus[k][i] -= h * dir[k][i];
      }
    }
    const double fd = (Functional(c, plus, r) - Functional(c, minus, r)) / (2 * h);
    EXPECT_LT(std::abs(fd - analytic) / (grad_norm * std::sqrt(dir_norm)), 1e-7)
        << "directional derivative " << trial << ": analytic " << analytic << " fd " << fd;
  }
}

inline void CheckCase(const OpCase& c) {
  const Vecs in = RandomInputs(c.inputs, 1234);
  const Vecs out_d = c.forward(in, false);
  const Vecs ref = c.reference(in);
  ASSERT_EQ(out_d.size(), ref.size());
  for (size_t o = 0; o < ref.size(); ++o) {
    ASSERT_EQ(out_d[o].size(), ref[o].size()) << "output " << o;
    EXPECT_LT(RelErr(out_d[o], ref[o]), 1e-12) << "output " << o << ": double vs naive reference";
  }
  const Vecs out_f = c.forward(in, true);
  for (size_t o = 0; o < ref.size(); ++o) {
    EXPECT_LT(RelErr(out_f[o], out_d[o]), 1e-5) << "output " << o << ": float vs double";
  }
  if (c.backward) CheckGradients(c, in);
  if (c.extra) c.extra(in);
}

// gtest prints a failing parameter with this instead of a byte dump.
inline void PrintTo(const OpCase& c, std::ostream* os) { *os << c.name; }

// ---- Case builders: the rows of ops_test's table -----------------------------------
// dense_cases.cc
OpCase GemmCase(bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t pad, double alpha,
                double beta);
OpCase LinearCase(int64_t M, int64_t K, int64_t N, bool accumulate);
OpCase RmsNormCase(int64_t rows, int64_t C, double eps);
OpCase RopeCase(int64_t B, int64_t S, int64_t H, int64_t stride, int64_t offset, int64_t dr,
                double mscale);
OpCase SwigluCase(int64_t n);
// sequence_cases.cc
OpCase AttentionCase(int64_t B, int64_t S, int64_t N, int64_t Dqk, int64_t Dv);
OpCase EmbeddingCase(int64_t n, int64_t V, int64_t C);
OpCase CrossEntropyCase(int64_t rows, int64_t V);
OpCase AddCase(int64_t n);
OpCase AxpyCase(int64_t n, double a);
OpCase SumSquaresCase(int64_t n);

}  // namespace mt::opcheck

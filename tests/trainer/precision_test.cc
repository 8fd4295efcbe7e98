// tests/trainer/precision_test.cc: training.precision (trainer/precision.h) at the level of
// one Linear and one SwiGLU block: the fp32, bf16 and fp8 GEMM paths against their
// definitions, and what the SwiGLU keeps for backward. The whole model is in
// precision_model_test.cc.
#include "trainer/precision.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/bf16.h"
#include "kernels/ops.h"
#include "trainer/activation_memory.h"
#include "trainer/layers.h"
#include "trainer/mlp.h"
#include "trainer/rng.h"

static_assert(std::is_same_v<mt::Real, float>, "the precision emulation runs in float");

namespace mt {
namespace {

constexpr QuantizeOptions kPow2{true};

Tensor RandomMatrix(int64_t rows, int64_t cols, uint64_t seed, double scale = 1.0) {
  Tensor t({rows, cols});
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i)
    p[i] = static_cast<float>(scale * RandomNormal(seed, 1, i));
  return t;
}

bool SameBits(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// A Linear whose dimensions cross tile boundaries with padded edges: in = 200 (128 + 72),
// out = 300 (2 x 128 + 44), T = 170 tokens (128 + 42 along the Wgrad tiles).
struct LinearCase {
  static constexpr int64_t kIn = 200, kOut = 300, kT = 170;
  explicit LinearCase(Precision p) : policy(p), ps(7, 0.05) {
    ps.set_precision(&policy);
    linear = Linear(ps, "w", kIn, kOut);
  }
  const float* w() const { return linear.weight()->value.data<float>(); }
  PrecisionPolicy policy;
  ParamStore ps;
  Linear linear;
};

// FP64 product y[M,N] = a[M,K] b[N,K]^T of dequantised operands.
std::vector<double> ReferenceProduct(const std::vector<float>& a, const std::vector<float>& b,
                                     int64_t M, int64_t N, int64_t K) {
  std::vector<double> y(M * N, 0.0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += double(a[m * K + k]) * b[n * K + k];
      y[m * N + n] = s;
    }
  return y;
}

std::vector<float> Dequantized(const QuantizedActivation& q) {
  std::vector<float> x(q.rows * q.cols);
  DequantizeActivation(q, x.data());
  return x;
}

std::vector<float> Dequantized(const QuantizedWeight& q) {
  std::vector<float> x(q.rows * q.cols);
  DequantizeWeight(q, x.data());
  return x;
}

std::vector<float> Transposed(const float* x, int64_t rows, int64_t cols) {
  std::vector<float> y(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) y[c * rows + r] = x[r * cols + c];
  return y;
}

// |got - want| <= tol * (sum_k |a_k b_k|) per element: FP32 accumulation error of a K-term
// dot product with 128-term chunks is at most about (128 + K/128) u of that sum; tol = 1e-4
// is ~1e3 u, far below one E4M3 rounding (2^-4) and so still tells a wrong operand apart.
void ExpectMatchesReference(const float* got, const std::vector<float>& a,
                            const std::vector<float>& b, int64_t M, int64_t N, int64_t K) {
  const std::vector<double> want = ReferenceProduct(a, b, M, N, K);
  int bad = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double mag = 0;
      for (int64_t k = 0; k < K; ++k) mag += std::fabs(double(a[m * K + k]) * b[n * K + k]);
      if (std::fabs(got[m * N + n] - want[m * N + n]) > 1e-4 * mag + 1e-30) ++bad;
    }
  EXPECT_EQ(bad, 0);
}

TEST(Precision, ParsesTheThreeModes) {
  EXPECT_EQ(*ParsePrecision("fp32"), Precision::kFp32);
  EXPECT_EQ(*ParsePrecision("bf16"), Precision::kBf16);
  EXPECT_EQ(*ParsePrecision("fp8"), Precision::kFp8);
  const auto bad = ParsePrecision("fp16");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("fp16"), std::string::npos);
}

TEST(Precision, Fp8LinearForwardIsQuantizedLinearForward) {
  LinearCase c(Precision::kFp8);
  const Tensor x = RandomMatrix(LinearCase::kT, LinearCase::kIn, 11);
  const Tensor y = c.linear.Forward(x);
  Tensor want({LinearCase::kT, LinearCase::kOut});
  QuantizedLinearForward(x.data<float>(), c.w(), want.data<float>(), LinearCase::kT,
                         LinearCase::kIn, LinearCase::kOut, kPow2);
  EXPECT_TRUE(SameBits(y, want));
  // The stored input is the Fprop's operand: forwarding it again gives the same bits.
  const StoredActivation stored = c.linear.Store(x);
  EXPECT_EQ(stored.format(), StoredActivation::Format::kE4M3);
  EXPECT_TRUE(SameBits(c.linear.Forward(stored), want));
}

TEST(Precision, Fp8LinearBackwardInputUsesQuantizedGradientAndTransposedBlocks) {
  LinearCase c(Precision::kFp8);
  const int64_t T = LinearCase::kT, in = LinearCase::kIn, out = LinearCase::kOut;
  const Tensor dy = RandomMatrix(T, out, 12);
  const Tensor dx = c.linear.BackwardInput(dy);
  // dx = Q(dy) [T, out] . (Q(W)^T) [in, out]^T, scales along the inner dimension `out`.
  const std::vector<float> a = Dequantized(QuantizeActivation(dy.data<float>(), T, out, kPow2));
  const std::vector<float> b = Dequantized(TransposeWeight(QuantizeWeight(c.w(), out, in, kPow2)));
  ExpectMatchesReference(dx.data<float>(), a, b, T, in, out);
  // Accumulating adds the same product.
  Tensor acc = RandomMatrix(T, in, 13);
  const Tensor before = acc.Clone();
  c.linear.BackwardInput(dy.data<float>(), acc.data<float>(), T, /*accumulate=*/true);
  for (int64_t i = 0; i < acc.numel(); ++i)
    ASSERT_EQ(acc.data<float>()[i], before.data<float>()[i] + dx.data<float>()[i]);
}

TEST(Precision, Fp8LinearBackwardWeightTilesAlongTokens) {
  LinearCase c(Precision::kFp8);
  const int64_t T = LinearCase::kT, in = LinearCase::kIn, out = LinearCase::kOut;
  const Tensor x = RandomMatrix(T, in, 14), dy = RandomMatrix(T, out, 15);
  const StoredActivation stored = c.linear.Store(x);
  c.linear.weight()->grad.Zero();
  c.linear.BackwardWeight(dy, stored);
  // dW = Q(dy^T) [out, T] . RetileTransposed(Q(x)) [in, T]^T: both tiled along the T tokens,
  // x from its cached FP8 copy (1x128 along `in` re-tiled to 1x128 along T).
  const std::vector<float> dyt = Transposed(dy.data<float>(), T, out);
  const std::vector<float> a = Dequantized(QuantizeActivation(dyt.data(), out, T, kPow2));
  const std::vector<float> b = Dequantized(RetileTransposed(stored.e4m3(), kPow2));
  ExpectMatchesReference(c.linear.weight()->grad.data<float>(), a, b, out, in, T);
}

// The three FP8 GEMMs against the exact FP32 ones: E4M3 keeps 3 mantissa bits, so each
// operand element is off by at most 2^-4 relative (RMS about 2^-4 / sqrt(3) = 3.6% for a
// uniform rounding error), and a product of two such operands has a relative Frobenius error
// of about sqrt(2) x 3.6% = 5%; Wgrad quantises x twice (cached copy, then re-tiled), which
// with power-of-two scales adds nothing for normal-range values. Bound: 8%.
TEST(Precision, Fp8LinearGemmsAreCloseToFp32) {
  LinearCase f8(Precision::kFp8), f32(Precision::kFp32);
  const int64_t T = LinearCase::kT;
  const Tensor x = RandomMatrix(T, LinearCase::kIn, 16), dy = RandomMatrix(T, LinearCase::kOut, 17);
  auto rel = [](const Tensor& got, const Tensor& want) {
    double e = 0, n = 0;
    for (int64_t i = 0; i < got.numel(); ++i) {
      const double d = got.data<float>()[i] - want.data<float>()[i];
      e += d * d;
      n += double(want.data<float>()[i]) * want.data<float>()[i];
    }
    return std::sqrt(e / n);
  };
  EXPECT_LT(rel(f8.linear.Forward(x), f32.linear.Forward(x)), 0.08);
  EXPECT_LT(rel(f8.linear.BackwardInput(dy), f32.linear.BackwardInput(dy)), 0.08);
  f8.linear.weight()->grad.Zero();
  f32.linear.weight()->grad.Zero();
  f8.linear.BackwardWeight(dy, f8.linear.Store(x));
  f32.linear.BackwardWeight(dy, f32.linear.Store(x));
  const double e = rel(f8.linear.weight()->grad, f32.linear.weight()->grad);
  EXPECT_LT(e, 0.08);
  EXPECT_GT(e, 0.0);  // it is really quantised
}

TEST(Precision, Bf16LinearRoundsOperandsAndAccumulatesInFp32) {
  LinearCase c(Precision::kBf16);
  const int64_t T = LinearCase::kT, in = LinearCase::kIn, out = LinearCase::kOut;
  const Tensor x = RandomMatrix(T, in, 18), dy = RandomMatrix(T, out, 19);
  auto rounded = [](const float* p, int64_t n) {
    std::vector<float> r(n);
    for (int64_t i = 0; i < n; ++i) r[i] = Bf16ToFloat(FloatToBf16(p[i]));
    return r;
  };
  const std::vector<float> xb = rounded(x.data<float>(), T * in), wb = rounded(c.w(), out * in),
                           dyb = rounded(dy.data<float>(), T * out);
  Tensor want({T, out});
  ops::LinearForward(xb.data(), wb.data(), want.data<float>(), T, in, out);
  const StoredActivation stored = c.linear.Store(x);
  EXPECT_EQ(stored.format(), StoredActivation::Format::kBf16);
  EXPECT_EQ(stored.bytes(), T * in * 2);
  EXPECT_TRUE(SameBits(c.linear.Forward(stored), want));
  Tensor want_dx({T, in});
  ops::LinearBackwardInput(dyb.data(), wb.data(), want_dx.data<float>(), T, in, out, false);
  EXPECT_TRUE(SameBits(c.linear.BackwardInput(dy), want_dx));
  Tensor want_dw({out, in});
  ops::LinearBackwardWeight(dyb.data(), xb.data(), want_dw.data<float>(), T, in, out);
  c.linear.weight()->grad.Zero();
  c.linear.BackwardWeight(dy, stored);
  EXPECT_TRUE(SameBits(c.linear.weight()->grad, want_dw));
}

TEST(Precision, Fp32LinearIsTheReferenceOp) {
  LinearCase c(Precision::kFp32);
  const int64_t T = LinearCase::kT, in = LinearCase::kIn, out = LinearCase::kOut;
  const Tensor x = RandomMatrix(T, in, 20);
  Tensor want({T, out});
  ops::LinearForward(x.data<float>(), c.w(), want.data<float>(), T, in, out);
  const StoredActivation stored = c.linear.Store(x);
  EXPECT_EQ(stored.format(), StoredActivation::Format::kExact);
  EXPECT_EQ(stored.buffer(), x.raw());  // shared, not copied
  EXPECT_TRUE(SameBits(c.linear.Forward(x), want));
}

TEST(Precision, Fp8GemmTokenTiledMatchesDequantisedProduct) {
  const int64_t M = 37, N = 150, K = 300;
  const Tensor a = RandomMatrix(M, K, 21), b = RandomMatrix(N, K, 22, 1e-3);
  const QuantizedActivation qa = QuantizeActivation(a.data<float>(), M, K, kPow2);
  const QuantizedActivation qb = QuantizeActivation(b.data<float>(), N, K, kPow2);
  std::vector<float> y(M * N);
  Fp8GemmTokenTiled(qa, qb, y.data());
  ExpectMatchesReference(y.data(), Dequantized(qa), Dequantized(qb), M, N, K);
}

// The SwiGLU block in fp8 keeps x, gate and up as E4M3 codes plus one FP32 scale per
// 1x128 tile, and no SwiGLU output (recomputed in backward).
TEST(Precision, Fp8SwigluCachesItsInputsAndRecomputesItsOutput) {
  PrecisionPolicy policy(Precision::kFp8);
  ParamStore ps(3, 0.05);
  ps.set_precision(&policy);
  const int64_t T = 50, H = 160, F = 136;
  SwigluMlp mlp(ps, "mlp.", H, F);
  SwigluMlp::Saved s;
  const Tensor x = RandomMatrix(T, H, 23);
  mlp.Forward(x, &s);
  EXPECT_EQ(s.g.format(), StoredActivation::Format::kE4M3);
  EXPECT_FALSE(s.h.defined());
  ActivationCounter c;
  CountSaved(s, &c);
  const int64_t tiles_h = 2, tiles_f = 2;  // ceil(160/128), ceil(136/128)
  EXPECT_EQ(c.total(), (T * H + T * tiles_h * 4) + 2 * (T * F + T * tiles_f * 4));
  mlp.BackwardInput(RandomMatrix(T, H, 24), &s);
  EXPECT_TRUE(s.h.defined());  // recomputed for down_proj's Wgrad
  mlp.BackwardWeight(&s);
}

}  // namespace
}  // namespace mt

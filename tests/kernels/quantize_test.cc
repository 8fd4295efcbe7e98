// tests/kernels/quantize_test.cc: fine-grained E4M3 quantisation, re-tiling and FP8 GEMMs.
//
// Error bound for one element x of a tile (or block) with scale s, derived for the checks:
// the code is q = E4M3(y) with y = fl(x / s), and the dequantised value is d = fl(q * s).
// With u = 2^-24 and h(t) = half the gap between the E4M3 values around t = |x| / s
// (2^-10 below 2^-6, 2^(floor(log2 t) - 4) from 2^-6 to 448; saturation never adds error
// because |x| / s <= 448 up to rounding):
//   |x - d| <= |x - y s| + |y - q| s + |q s - d| <= s h(t) + 2u (|x| + |d|).
// With power-of-two scales the division and the product are exact, leaving s h(t).
// Relative to the tile's max-abs that is at most 16 / 448 (h = 16 just below 448).
#include "kernels/quantize.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <tuple>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/bf16.h"
#include "kernels/e5m6.h"
#include "kernels/fp8.h"

namespace mt {
namespace {

constexpr double kU = 0x1p-24;  // FP32 unit roundoff

double HalfGap(double t) {
  if (t < 0x1p-6) return 0x1p-10;
  if (t >= 448) return 16;
  return std::ldexp(1.0, std::ilogb(t) - 4);
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Gaussian values with magnitudes that vary by row (10^-2..10^2), a few outliers, exact
// zeros and values far below the tile max (which exercise the subnormal codes).
std::vector<float> RandomMatrix(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> mag(-2, 2);
  std::uniform_int_distribution<int> pick(0, 99);
  std::vector<float> x(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    const float row_scale = std::pow(10.0f, mag(rng));
    for (int64_t c = 0; c < cols; ++c) {
      float v = normal(rng) * row_scale;
      const int p = pick(rng);
      if (p == 0) v *= 50;     // outlier
      if (p == 1) v = 0;       // exact zero
      if (p == 2) v *= 1e-4f;  // tiny against the tile max
      x[r * cols + c] = v;
    }
  }
  return x;
}

bool IsPowerOfTwo(float s) { return s > 0 && (std::bit_cast<uint32_t>(s) & 0x7fffffu) == 0; }

// The scale rules of quantize.h, checked against an amax the test computes itself.
void ExpectScaleFor(float s, float amax, bool pow2) {
  const double a = std::max(amax, 1e-4f);
  if (pow2) {
    EXPECT_TRUE(IsPowerOfTwo(s)) << s;
    EXPECT_LE(a / 448, s);
    EXPECT_LT(s, 2 * a / 448);
  } else {
    EXPECT_EQ(s, static_cast<float>(a) / 448.0f);
  }
}

// |x - d| <= s h(|x|/s) (+ 2u(|x| + |d|) unless the scale is a power of two).
void ExpectWithinBound(float x, float d, float s, bool pow2, const char* what, int64_t i) {
  const double t = std::fabs(x) / static_cast<double>(s);
  double bound = s * HalfGap(t);
  if (!pow2) bound += 2 * kU * (std::fabs(x) + std::fabs(d));
  ASSERT_LE(std::fabs(static_cast<double>(x) - d), bound)
      << what << " element " << i << ": x=" << x << " dequantised=" << d << " scale=" << s;
}

class QuantizeTest : public ::testing::TestWithParam<bool> {};  // param: pow2 scales
INSTANTIATE_TEST_SUITE_P(Scales, QuantizeTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Pow2" : "Exact"; });

TEST_P(QuantizeTest, ActivationTilesLayoutAndErrorBound) {
  const bool pow2 = GetParam();
  for (auto [M, K] : {std::pair<int64_t, int64_t>{5, 130}, {3, 300}, {4, 64}, {2, 256}, {1, 1}}) {
    SCOPED_TRACE(testing::Message() << "M=" << M << " K=" << K);
    const std::vector<float> x = RandomMatrix(M, K, 17 + M * K);
    const QuantizedActivation q = QuantizeActivation(x.data(), M, K, {.pow2_scales = pow2});
    ASSERT_EQ(q.data.shape(), (std::vector<int64_t>{M, K}));
    ASSERT_EQ(q.scales.shape(), (std::vector<int64_t>{CeilDiv(K, 128), M}));
    std::vector<float> d(M * K);
    DequantizeActivation(q, d.data());
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t kt = 0; kt < CeilDiv(K, 128); ++kt) {
        const int64_t k0 = kt * 128, k1 = std::min(K, k0 + 128);  // real elements only
        float amax = 0;
        for (int64_t k = k0; k < k1; ++k) amax = std::max(amax, std::fabs(x[m * K + k]));
        const float s = q.scales.data<float>()[kt * M + m];  // VEC128_32F: M-major
        ASSERT_EQ(s, q.scale(m, kt));
        ExpectScaleFor(s, amax, pow2);
        float code_max = 0;
        for (int64_t k = k0; k < k1; ++k) {
          ExpectWithinBound(x[m * K + k], d[m * K + k], s, pow2, "activation", m * K + k);
          code_max = std::max(code_max, std::fabs(E4M3ToFloat(q.codes()[m * K + k])));
        }
        // The tile's max lands on the top binade (exactly 448 without pow2; with pow2,
        // amax / s is in (224, 448], which can round down onto 224).
        if (amax >= 1e-4f) {
          if (pow2) {
            EXPECT_GE(code_max, 224.0f);
            EXPECT_LE(code_max, 448.0f);
          } else {
            EXPECT_EQ(code_max, 448.0f);
          }
        }
      }
    }
  }
}

TEST_P(QuantizeTest, WeightBlocksLayoutAndErrorBound) {
  const bool pow2 = GetParam();
  for (auto [N, K] : {std::pair<int64_t, int64_t>{130, 300}, {300, 64}, {64, 130}, {1, 129}}) {
    SCOPED_TRACE(testing::Message() << "N=" << N << " K=" << K);
    const std::vector<float> w = RandomMatrix(N, K, 29 + N * K);
    const QuantizedWeight q = QuantizeWeight(w.data(), N, K, {.pow2_scales = pow2});
    const int64_t nb_count = CeilDiv(N, 128), kb_count = CeilDiv(K, 128);
    const int64_t ld = CeilDiv(kb_count, 4) * 4;  // BLK128x128_32F pads K-blocks to 4
    ASSERT_EQ(q.scales.shape(), (std::vector<int64_t>{nb_count, ld}));
    std::vector<float> d(N * K);
    DequantizeWeight(q, d.data());
    for (int64_t nb = 0; nb < nb_count; ++nb) {
      for (int64_t kb = kb_count; kb < ld; ++kb)
        EXPECT_EQ(q.scales.data<float>()[nb * ld + kb], 0.0f);
      for (int64_t kb = 0; kb < kb_count; ++kb) {
        const int64_t n1 = std::min(N, nb * 128 + 128), k1 = std::min(K, kb * 128 + 128);
        float amax = 0;
        for (int64_t n = nb * 128; n < n1; ++n)
          for (int64_t k = kb * 128; k < k1; ++k) amax = std::max(amax, std::fabs(w[n * K + k]));
        const float s = q.scales.data<float>()[nb * ld + kb];
        ASSERT_EQ(s, q.scale(nb, kb));
        ExpectScaleFor(s, amax, pow2);
        for (int64_t n = nb * 128; n < n1; ++n)
          for (int64_t k = kb * 128; k < k1; ++k)
            ExpectWithinBound(w[n * K + k], d[n * K + k], s, pow2, "weight", n * K + k);
      }
    }
  }
}

TEST_P(QuantizeTest, ZeroTilesGetAFiniteScale) {
  const bool pow2 = GetParam();
  const float zero_scale = pow2 ? 0x1p-22f : 1e-4f / 448.0f;  // 2^ceil(log2(1e-4/448)) = 2^-22
  std::vector<float> x = RandomMatrix(3, 260, 5);
  std::fill(x.begin(), x.begin() + 260, 0.0f);               // row 0: all zero
  std::fill(x.begin() + 260 + 128, x.begin() + 520, -0.0f);  // row 1: tiles 1, 2 zero
  const QuantizedActivation q = QuantizeActivation(x.data(), 3, 260, {.pow2_scales = pow2});
  for (int64_t kt = 0; kt < 3; ++kt) EXPECT_EQ(q.scale(0, kt), zero_scale);
  EXPECT_EQ(q.scale(1, 1), zero_scale);
  EXPECT_EQ(q.scale(1, 2), zero_scale);
  std::vector<float> d(3 * 260);
  DequantizeActivation(q, d.data());
  for (int64_t i = 0; i < 260; ++i) EXPECT_EQ(d[i], 0.0f);
  for (int64_t i = 260 + 128; i < 520; ++i) EXPECT_EQ(d[i], 0.0f);
  for (float v : d) EXPECT_TRUE(std::isfinite(v));

  std::vector<float> w(130 * 130, 0.0f);
  w[129 * 130 + 129] = 3.0f;  // only the corner block is non-zero
  const QuantizedWeight qw = QuantizeWeight(w.data(), 130, 130, {.pow2_scales = pow2});
  EXPECT_EQ(qw.scale(0, 0), zero_scale);
  EXPECT_EQ(qw.scale(0, 1), zero_scale);
  EXPECT_EQ(qw.scale(1, 0), zero_scale);
  ExpectScaleFor(qw.scale(1, 1), 3.0f, pow2);
}

TEST(Fp8Scale, Conventions) {
  EXPECT_EQ(Fp8Scale(0.0f, false), 1e-4f / 448.0f);
  EXPECT_EQ(Fp8Scale(448.0f, false), 1.0f);
  EXPECT_EQ(Fp8Scale(448.0f, true), 1.0f);                        // exact power stays
  EXPECT_EQ(Fp8Scale(std::nextafter(448.0f, 1e9f), true), 2.0f);  // just above rounds up
  EXPECT_EQ(Fp8Scale(300.0f, true), 1.0f);
  EXPECT_TRUE(std::isinf(Fp8Scale(INFINITY, false)));
}

// FP64 product of the dequantised operands, and the FP32 accumulation bound for it.
// Each term q_a q_w s_a s_w reaches y through at most (chunk length - 1) chunk additions,
// one rounding of s_a * s_w and one fused promotion per K chunk, so with
// n = 128 + 1 + ceil(K/128) roundings, |y - exact| <= gamma_n * sum |terms|,
// gamma_n = n u / (1 - n u) (Higham, Accuracy and Stability, eq. 3.5).
struct Exact {
  std::vector<double> y, abs_sum;
};
Exact ExactProduct(const std::vector<float>& a, const std::vector<float>& w, int64_t M, int64_t K,
                   int64_t N) {
  Exact e{std::vector<double>(M * N), std::vector<double>(M * N)};
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) {
        const double p = static_cast<double>(a[m * K + k]) * w[n * K + k];
        e.y[m * N + n] += p;
        e.abs_sum[m * N + n] += std::fabs(p);
      }
  return e;
}

TEST(Fp8GemmTest, MatchesFp64ProductOfDequantisedOperands) {
  for (auto [M, K, N] : {std::tuple<int64_t, int64_t, int64_t>{130, 300, 64},
                         {3, 64, 130},
                         {64, 130, 300},
                         {17, 512, 33}}) {
    SCOPED_TRACE(testing::Message() << "M=" << M << " K=" << K << " N=" << N);
    const std::vector<float> x = RandomMatrix(M, K, 3), w = RandomMatrix(N, K, 4);
    const QuantizedActivation qa = QuantizeActivation(x.data(), M, K);
    const QuantizedWeight qw = QuantizeWeight(w.data(), N, K);
    std::vector<float> da(M * K), dw(N * K), ref(M * N), fast(M * N);
    DequantizeActivation(qa, da.data());
    DequantizeWeight(qw, dw.data());
    const Exact e = ExactProduct(da, dw, M, K, N);
    Fp8GemmReference(qa, qw, ref.data());
    Fp8Gemm(qa, qw, fast.data());
    const double n = 128 + 1 + CeilDiv(K, 128), gamma = n * kU / (1 - n * kU);
    for (int64_t i = 0; i < M * N; ++i) {
      const double tol = gamma * e.abs_sum[i];
      ASSERT_LE(std::fabs(ref[i] - e.y[i]), tol) << "reference, element " << i;
      ASSERT_LE(std::fabs(fast[i] - e.y[i]), tol) << "fast, element " << i;
    }
  }
}

TEST(Fp8GemmTest, QuantizedLinearForwardIsQuantiseThenGemm) {
  const int64_t M = 70, K = 300, N = 130;
  const std::vector<float> x = RandomMatrix(M, K, 8), w = RandomMatrix(N, K, 9);
  std::vector<float> y(M * N), want(M * N);
  QuantizedLinearForward(x.data(), w.data(), y.data(), M, K, N);
  Fp8Gemm(QuantizeActivation(x.data(), M, K), QuantizeWeight(w.data(), N, K), want.data());
  for (int64_t i = 0; i < M * N; ++i)
    ASSERT_EQ(std::bit_cast<uint32_t>(y[i]), std::bit_cast<uint32_t>(want[i]));
  // Against the unquantised product: |x.w - dx.dw| <= sum |x| e_w + |dw| e_x, plus the
  // accumulation bound, with e the per-element quantisation errors.
  std::vector<float> dx(M * K), dw(N * K);
  DequantizeActivation(QuantizeActivation(x.data(), M, K), dx.data());
  DequantizeWeight(QuantizeWeight(w.data(), N, K), dw.data());
  const Exact e = ExactProduct(dx, dw, M, K, N);
  const double n = 128 + 1 + CeilDiv(K, 128), gamma = n * kU / (1 - n * kU);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t j = 0; j < N; ++j) {
      double exact = 0, qbound = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double xv = x[m * K + k], wv = w[j * K + k];
        exact += xv * wv;
        qbound += std::fabs(xv) * std::fabs(wv - dw[j * K + k]) +
                  std::fabs(dw[j * K + k]) * std::fabs(xv - dx[m * K + k]);
      }
      ASSERT_LE(std::fabs(y[m * N + j] - exact), qbound + gamma * e.abs_sum[m * N + j]);
    }
}

TEST_P(QuantizeTest, RetileTransposedIsRequantisedTranspose) {
  const bool pow2 = GetParam();
  for (auto [M, K] : {std::pair<int64_t, int64_t>{130, 300}, {300, 64}, {64, 130}}) {
    SCOPED_TRACE(testing::Message() << "M=" << M << " K=" << K);
    const std::vector<float> x = RandomMatrix(M, K, 11);
    const QuantizedActivation q = QuantizeActivation(x.data(), M, K, {.pow2_scales = pow2});
    const QuantizedActivation t = RetileTransposed(q, {.pow2_scales = pow2});
    ASSERT_EQ(t.rows, K);
    ASSERT_EQ(t.cols, M);
    ASSERT_EQ(t.scales.shape(), (std::vector<int64_t>{CeilDiv(M, 128), K}));
    std::vector<float> d(M * K), dt(K * M), d_transposed(K * M);
    DequantizeActivation(q, d.data());
    DequantizeActivation(t, dt.data());
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < K; ++k) d_transposed[k * M + m] = d[m * K + k];
    // Definition: quantising the transposed dequantised values gives the same bits.
    const QuantizedActivation want =
        QuantizeActivation(d_transposed.data(), K, M, {.pow2_scales = pow2});
    ASSERT_EQ(0, std::memcmp(want.codes(), t.codes(), K * M));
    ASSERT_EQ(0, std::memcmp(want.scales.raw(), t.scales.raw(), t.scales.nbytes()));
    int64_t exact = 0;
    for (int64_t k = 0; k < K; ++k) {
      for (int64_t m = 0; m < M; ++m) {
        const float v = d[m * K + k], s2 = t.scale(k, m / 128);
        // Each step's bound, evaluated where it applies, adds up against the original x.
        const float s1 = q.scale(m, k / 128), xv = x[m * K + k];
        double b1 = s1 * HalfGap(std::fabs(xv) / s1), b2 = s2 * HalfGap(std::fabs(v) / s2);
        if (!pow2) b1 += 2 * kU * (std::fabs(xv) + std::fabs(v));
        if (!pow2) b2 += 2 * kU * (std::fabs(v) + std::fabs(dt[k * M + m]));
        ASSERT_LE(std::fabs(static_cast<double>(xv) - dt[k * M + m]), b1 + b2);
        exact += dt[k * M + m] == v;
        // Power-of-two scales re-encode exactly whatever stays in E4M3's normal range.
        if (pow2 && std::fabs(v) / s2 >= 0x1p-6) {
          ASSERT_EQ(dt[k * M + m], v) << k << "," << m;
        }
      }
    }
    std::printf("[ info ] %s scales, %ldx%ld: %.2f%% of elements survive re-tiling exactly\n",
                pow2 ? "pow2" : "exact", M, K, 100.0 * exact / (M * K));
  }
}

TEST(TransposeWeightTest, IsExact) {
  const int64_t N = 130, K = 300;
  const std::vector<float> w = RandomMatrix(N, K, 21);
  const QuantizedWeight q = QuantizeWeight(w.data(), N, K);
  const QuantizedWeight t = TransposeWeight(q);
  ASSERT_EQ(t.scales.shape(), (std::vector<int64_t>{3, 4}));  // ceil(300/128) x round_up(2, 4)
  std::vector<float> d(N * K), dt(K * N);
  DequantizeWeight(q, d.data());
  DequantizeWeight(t, dt.data());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) ASSERT_EQ(dt[k * N + n], d[n * K + k]);
  const QuantizedWeight back = TransposeWeight(t);
  ASSERT_EQ(0, std::memcmp(back.codes(), q.codes(), N * K));
  ASSERT_EQ(0, std::memcmp(back.scales.raw(), q.scales.raw(), q.scales.nbytes()));
}

// ---- E5M6 (kernels/e5m6.h) ----------------------------------------------------------

// Every positive finite E5M6 value, ascending, with its 6-bit mantissa (for ties to even).
std::vector<std::pair<double, int>> E5M6Values() {
  std::vector<std::pair<double, int>> v;
  for (int e = 0; e <= 30; ++e)
    for (int m = 0; m < 64; ++m)
      v.emplace_back(e == 0 ? std::ldexp(m, -20) : std::ldexp(1.0 + m / 64.0, e - 15), m);
  return v;
}

// The nearest value by search over the whole table, ties to the even mantissa; past the
// largest value, the largest (saturation).
double NearestE5M6(double x, const std::vector<std::pair<double, int>>& table) {
  auto hi = std::lower_bound(table.begin(), table.end(), std::make_pair(x, -1));
  if (hi == table.end()) return table.back().first;
  if (hi == table.begin() || hi->first == x) return hi->first;
  const auto lo = hi - 1;
  const double dl = x - lo->first, dh = hi->first - x;
  if (dl != dh) return dl < dh ? lo->first : hi->first;
  return lo->second % 2 == 0 ? lo->first : hi->first;
}

TEST(E5M6, RoundsToTheNearestValueTiesToEven) {
  const auto table = E5M6Values();
  ASSERT_EQ(table.back().first, kE5M6Max);
  std::vector<float> xs = {0.0f, 65500.0f, 70000.0f, 1e-9f, 0x1p-21f, 0x1p-14f};
  for (size_t i = 0; i + 1 < table.size(); ++i) {  // each value, and the midpoints around it
    xs.push_back(static_cast<float>(table[i].first));
    xs.push_back(static_cast<float>((table[i].first + table[i + 1].first) / 2));
    xs.push_back(
        std::nextafter(static_cast<float>((table[i].first + table[i + 1].first) / 2), 0.f));
  }
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> log2x(-24.0, 16.0);
  for (int i = 0; i < 200000; ++i) xs.push_back(static_cast<float>(std::exp2(log2x(rng))));
  for (float x : xs) {
    const double want = NearestE5M6(x, table);
    ASSERT_EQ(RoundE5M6(x), want) << "x = " << x;
    ASSERT_EQ(RoundE5M6(-x), -want) << "x = " << -x;
  }
  EXPECT_EQ(RoundE5M6(65500.0f), kE5M6Max) << "saturates";
  EXPECT_TRUE(std::isnan(RoundE5M6(NAN)));
  EXPECT_EQ(RoundE5M6(INFINITY), INFINITY);
}

TEST(E5M6, ScaleIsTheSmallestPowerOfTwoThatFits) {
  for (float amax : {1e-30f, 1e-6f, 0.3f, 1.0f, 65024.0f, 65025.0f, 3e5f, 1e30f}) {
    const float s = E5M6Scale(amax);
    int e;
    ASSERT_EQ(std::frexp(s, &e), 0.5f) << amax;  // a power of two
    EXPECT_LE(amax / s, kE5M6Max) << amax;
    if (s > 0x1p-126f) {
      EXPECT_GT(amax / (s / 2), kE5M6Max) << amax;
    }
  }
  EXPECT_EQ(E5M6Scale(0.0f), 1.0f);
}

// The attention output's cache: each 1x128 tile rounded at its own power-of-two scale, the
// result exact in BF16 (the storage trainer/precision.cc keeps it in), within E5M6's half
// step of the input, and untouched where it was representable.
TEST(E5M6, TilesRoundWithinHalfAStepAndAreExactInBf16) {
  const int64_t M = 3, K = 300;  // tiles of 128, 128 and 44
  std::vector<float> x(M * K), y(M * K);
  std::mt19937 rng(9);
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (int64_t i = 0; i < M * K; ++i)
    x[i] = n(rng) * (i % K < 128 ? 1e-3f : i % K < 256 ? 5.0f : 9e4f);
  RoundE5M6Tiles(x.data(), y.data(), M, K);
  const auto table = E5M6Values();
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k0 = 0; k0 < K; k0 += 128) {
      const int64_t len = std::min<int64_t>(128, K - k0);
      float amax = 0;
      for (int64_t i = 0; i < len; ++i) amax = std::max(amax, std::fabs(x[m * K + k0 + i]));
      const float s = E5M6Scale(amax);
      for (int64_t i = 0; i < len; ++i) {
        const float xi = x[m * K + k0 + i], yi = y[m * K + k0 + i];
        ASSERT_EQ(yi, std::copysign(NearestE5M6(std::fabs(xi) / s, table), xi) * s);
        ASSERT_EQ(Bf16ToFloat(FloatToBf16(yi)), yi) << "not exact in BF16";
        ASSERT_LE(std::fabs(yi - xi), std::ldexp(std::fabs(xi), -7) + std::ldexp(s, -21));
      }
    }
  std::vector<float> again(M * K);
  RoundE5M6Tiles(y.data(), again.data(), M, K);
  EXPECT_EQ(again, y) << "rounding E5M6 values again must change nothing";
}

}  // namespace
}  // namespace mt

// tests/kernels/fp8_test.cc: FP8 / BF16 conversions against the formats' definitions.
//
// Nothing here uses kernels/fp8.cc's own tables or bit tricks as the expected value: the
// decoded values come from the format definitions (sign, exponent, mantissa -> ldexp), and
// the expected encodings come from a reference rounder that enumerates the representable
// values and compares the input with the exact midpoint of its two neighbours (all such
// midpoints and every float are exact doubles, so the comparison is exact arithmetic).
#include "kernels/fp8.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/bf16.h"

namespace mt {
namespace {

enum class Fmt { kE4M3, kE5M2 };

// The value code `c` denotes, straight from the format definition; NaN for NaN codes.
double DefinedValue(Fmt f, uint8_t c) {
  const bool e4m3 = f == Fmt::kE4M3;
  const int mant_bits = e4m3 ? 3 : 2, bias = e4m3 ? 7 : 15;
  const int exp_field = (c & 0x7f) >> mant_bits, mant = c & ((1 << mant_bits) - 1);
  const double sign = (c & 0x80) ? -1.0 : 1.0;
  const int exp_max = e4m3 ? 15 : 31;
  if (exp_field == exp_max) {
    if (e4m3) {
      if (mant == 7) return std::numeric_limits<double>::quiet_NaN();  // only S.1111.111
    } else {
      return mant == 0 ? sign * std::numeric_limits<double>::infinity()
                       : std::numeric_limits<double>::quiet_NaN();
    }
  }
  const double frac = static_cast<double>(mant) / (1 << mant_bits);
  if (exp_field == 0) return sign * std::ldexp(frac, 1 - bias);  // subnormal
  return sign * std::ldexp(1.0 + frac, exp_field - bias);
}

uint8_t MaxCode(Fmt f) { return f == Fmt::kE4M3 ? 0x7e : 0x7b; }

// DefinedValue of the finite non-negative codes 0..MaxCode, which ascend with the code.
const std::vector<double>& FiniteValues(Fmt f) {
  static const auto make = [](Fmt g) {
    std::vector<double> v;
    for (int c = 0; c <= MaxCode(g); ++c) v.push_back(DefinedValue(g, c));
    return v;
  };
  static const std::vector<double> e4m3 = make(Fmt::kE4M3), e5m2 = make(Fmt::kE5M2);
  return f == Fmt::kE4M3 ? e4m3 : e5m2;
}

// Round x to the format: saturate to +-max (SATFINITE, +-inf included), then the nearest of
// the finite values, ties to the even code (adjacent codes differ in the last mantissa bit).
uint8_t ReferenceEncode(Fmt f, float x) {
  if (std::isnan(x)) return 0x7f;
  const uint8_t sign = std::signbit(x) ? 0x80 : 0;
  const std::vector<double>& values = FiniteValues(f);
  const double ax = std::min<double>(std::fabs(static_cast<double>(x)), values.back());
  // lo = the largest code whose value is <= ax.
  const int lo =
      static_cast<int>(std::upper_bound(values.begin(), values.end(), ax) - values.begin()) - 1;
  if (values[lo] == ax) return static_cast<uint8_t>(lo | sign);
  const double mid = (values[lo] + values[lo + 1]) / 2;
  int code = lo;
  if (ax > mid || (ax == mid && (lo & 1))) code = lo + 1;
  return static_cast<uint8_t>(code | sign);
}

double Bf16DefinedValue(uint16_t c) {
  const int exp_field = (c >> 7) & 0xff, mant = c & 0x7f;
  const double sign = (c & 0x8000) ? -1.0 : 1.0;
  if (exp_field == 0) return sign * std::ldexp(mant / 128.0, -126);
  return sign * std::ldexp(1.0 + mant / 128.0, exp_field - 127);
}

// IEEE round-to-nearest-even to bfloat16 (overflow rounds to inf: the next step above the
// largest finite value 0x7f7f is 0x7f80 = inf, whose position is 2^128).
uint16_t ReferenceBf16(float x) {
  static const std::vector<double> values = [] {
    std::vector<double> v;
    for (uint32_t c = 0; c <= 0x7f7f; ++c) v.push_back(Bf16DefinedValue(static_cast<uint16_t>(c)));
    v.push_back(std::ldexp(1.0, 128));  // code 0x7f80
    return v;
  }();
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double ax = std::fabs(static_cast<double>(x));
  if (std::isinf(x)) return sign | 0x7f80;
  const auto it = std::upper_bound(values.begin(), values.end(), ax);
  const uint16_t lo = static_cast<uint16_t>(it - values.begin() - 1);
  if (values[lo] == ax) return lo | sign;
  const double mid = (values[lo] + values[lo + 1]) / 2;
  uint16_t code = lo;
  if (ax > mid || (ax == mid && (lo & 1))) code = lo + 1;
  return code | sign;
}

float Bits(uint32_t u) { return std::bit_cast<float>(u); }

// Every float whose top 16 bits are anything and whose low 16 bits are one of a set of
// patterns around the rounding points. Every FP8 and BF16 rounding position (with its
// halfway, just-below and just-above cases) lies in or at the edge of the top half.
std::vector<float> SweepInputs() {
  std::vector<float> v;
  for (uint32_t hi = 0; hi < 65536; ++hi)
    for (uint32_t lo : {0x0000u, 0x0001u, 0x3fffu, 0x7fffu, 0x8000u, 0x8001u, 0xc000u, 0xffffu})
      v.push_back(Bits(hi << 16 | lo));
  return v;
}

// Midpoints between adjacent codes (and each code's value), with their float neighbours,
// plus the special values. All of these are exact floats.
std::vector<float> BoundaryInputs(Fmt f) {
  std::vector<float> v;
  auto add3 = [&](float x) {
    for (float s : {1.0f, -1.0f}) {
      v.push_back(s * x);
      v.push_back(s * std::nextafter(x, 0.0f));
      v.push_back(s * std::nextafter(x, std::numeric_limits<float>::infinity()));
    }
  };
  for (int c = 0; c < MaxCode(f); ++c) {
    add3(static_cast<float>(DefinedValue(f, c)));
    add3(static_cast<float>((DefinedValue(f, c) + DefinedValue(f, c + 1)) / 2));
  }
  const double max = DefinedValue(f, MaxCode(f));
  const double half_ulp = (max - DefinedValue(f, MaxCode(f) - 1)) / 2;
  for (double x : {max, max + half_ulp, max + 2 * half_ulp, 2 * max, 1e30, 3.4028235e38,
                   DefinedValue(f, 1) / 2, DefinedValue(f, 1) / 4, 1e-30, 1.1754944e-38, 1e-45})
    add3(static_cast<float>(x));
  const float inf = std::numeric_limits<float>::infinity();
  for (float x :
       {inf, -inf, 0.0f, -0.0f, std::numeric_limits<float>::quiet_NaN(),
        -std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::signaling_NaN(),
        Bits(0x7f800001u), Bits(0xffffffffu), Bits(0x7fc00001u), Bits(0xff800001u)})
    v.push_back(x);
  return v;
}

// 10^6 floats: half raw random bit patterns, half with exponents spread over 2^-30..2^20
// (subnormal, normal and overflowing for both formats).
std::vector<float> RandomInputs(uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> v;
  for (int i = 0; i < 500000; ++i) v.push_back(Bits(static_cast<uint32_t>(rng())));
  std::uniform_int_distribution<uint32_t> exp(127 - 30, 127 + 20);
  for (int i = 0; i < 500000; ++i) {
    const uint32_t u = rng();
    v.push_back(Bits((u & 0x807fffffu) | exp(rng) << 23));
  }
  return v;
}

std::string Hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

TEST(Fp8Decode, AllCodesMatchTheDefinition) {
  for (Fmt f : {Fmt::kE4M3, Fmt::kE5M2}) {
    for (int c = 0; c < 256; ++c) {
      const float got = f == Fmt::kE4M3 ? E4M3ToFloat(c) : E5M2ToFloat(c);
      const double want = DefinedValue(f, c);
      if (std::isnan(want)) {
        EXPECT_TRUE(std::isnan(got)) << "code " << c;
      } else {
        EXPECT_EQ(static_cast<double>(got), want) << "code " << c;
        EXPECT_EQ(std::signbit(got), (c & 0x80) != 0) << "code " << c;  // -0 stays -0
      }
    }
  }
  // Landmarks quoted in the header.
  EXPECT_EQ(E4M3ToFloat(0x7e), 448.0f);
  EXPECT_EQ(E4M3ToFloat(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(E5M2ToFloat(0x7b), 57344.0f);
  EXPECT_EQ(E5M2ToFloat(0x01), std::ldexp(1.0f, -16));
  EXPECT_TRUE(std::isinf(E5M2ToFloat(0x7c)) && E5M2ToFloat(0xfc) < 0);
  int nans = 0;
  for (int c = 0; c < 256; ++c) nans += std::isnan(E4M3ToFloat(c));
  EXPECT_EQ(nans, 2);  // 0x7f and 0xff only
}

void ExpectEncodeMatchesReference(Fmt f, const std::vector<float>& xs) {
  int failures = 0;
  for (float x : xs) {
    const uint8_t got = f == Fmt::kE4M3 ? FloatToE4M3(x) : FloatToE5M2(x);
    const uint8_t want = ReferenceEncode(f, x);
    if (got != want && ++failures <= 10)
      ADD_FAILURE() << (f == Fmt::kE4M3 ? "E4M3" : "E5M2") << " x=" << x << " ("
                    << Hex(std::bit_cast<uint32_t>(x)) << "): got " << int{got} << ", want "
                    << int{want};
  }
  EXPECT_EQ(failures, 0);
}

TEST(Fp8Encode, BoundaryCases) {
  for (Fmt f : {Fmt::kE4M3, Fmt::kE5M2}) ExpectEncodeMatchesReference(f, BoundaryInputs(f));
}

TEST(Fp8Encode, BitPatternSweep) {
  const std::vector<float> xs = SweepInputs();
  for (Fmt f : {Fmt::kE4M3, Fmt::kE5M2}) ExpectEncodeMatchesReference(f, xs);
}

TEST(Fp8Encode, MillionRandomFloats) {
  const std::vector<float> xs = RandomInputs(1234);
  for (Fmt f : {Fmt::kE4M3, Fmt::kE5M2}) ExpectEncodeMatchesReference(f, xs);
}

// The CUDA behaviours fp8.h promises, spelled out (these are also reference-checked above).
TEST(Fp8Encode, CudaSatfiniteConventions) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(FloatToE4M3(inf), 0x7e);
  EXPECT_EQ(FloatToE4M3(-inf), 0xfe);
  EXPECT_EQ(FloatToE5M2(inf), 0x7b);
  EXPECT_EQ(FloatToE5M2(-inf), 0xfb);
  EXPECT_EQ(FloatToE4M3(464.0f), 0x7e);  // max + half ulp: tie to even (0x7e), not NaN
  EXPECT_EQ(FloatToE4M3(1e9f), 0x7e);
  EXPECT_EQ(FloatToE5M2(61440.0f), 0x7b);
  EXPECT_EQ(FloatToE4M3(-std::numeric_limits<float>::quiet_NaN()), 0x7f);
  EXPECT_EQ(FloatToE5M2(-std::numeric_limits<float>::quiet_NaN()), 0x7f);
  EXPECT_EQ(FloatToE4M3(-0.0f), 0x80);
  EXPECT_EQ(FloatToE4M3(std::ldexp(1.0f, -10)), 0x00);  // half the min subnormal: to even
  EXPECT_EQ(FloatToE4M3(std::nextafter(std::ldexp(1.0f, -10), 1.0f)), 0x01);
  EXPECT_EQ(FloatToE4M3(-std::ldexp(1.0f, -12)), 0x80);  // underflow keeps the sign
  EXPECT_EQ(FloatToE5M2(std::ldexp(3.0f, -17)), 0x02);   // 1.5 units: tie to even (2)
}

TEST(Bf16Encode, MatchesReference) {
  std::vector<float> xs = SweepInputs();
  for (float x : RandomInputs(99)) xs.push_back(x);
  int failures = 0;
  for (float x : xs) {
    const uint16_t got = FloatToBf16(x);
    if (std::isnan(x)) {
      // NaN: the project's FloatToBf16 keeps sign and payload, setting the quiet bit.
      EXPECT_TRUE(std::isnan(Bf16ToFloat(got)));
      continue;
    }
    const uint16_t want = ReferenceBf16(x);
    if (got != want && ++failures <= 10)
      ADD_FAILURE() << "x=" << x << " (" << Hex(std::bit_cast<uint32_t>(x)) << "): got " << got
                    << ", want " << want;
  }
  EXPECT_EQ(failures, 0);
}

// ---- Bulk converters: every path the CPU has, bit for bit against scalar -------------------
std::vector<SimdPath> RunnablePaths() {
  std::vector<SimdPath> paths;
  for (SimdPath p : {SimdPath::kScalar, SimdPath::kAvx2, SimdPath::kAvx512}) {
    if (SimdPathAvailable(p)) {
      paths.push_back(p);
    } else {
      std::printf("[ note ] this CPU has no %s: that path is compiled but not run here\n",
                  std::string(SimdPathName(p)).c_str());
    }
  }
  return paths;
}

TEST(BulkConvert, EveryPathEqualsScalar) {
  std::vector<float> xs = SweepInputs();
  for (float x : RandomInputs(7)) xs.push_back(x);
  for (float x : BoundaryInputs(Fmt::kE4M3)) xs.push_back(x);
  for (float x : BoundaryInputs(Fmt::kE5M2)) xs.push_back(x);
  const int64_t n = static_cast<int64_t>(xs.size()) - 5;  // odd length: exercise the tails
  const float* x = xs.data() + 3;                         // and unaligned pointers
  std::vector<uint8_t> codes(n + 1);
  std::vector<uint16_t> halves(n + 1);
  std::vector<float> back(n + 1);
  for (SimdPath p : RunnablePaths()) {
    SCOPED_TRACE(std::string(SimdPathName(p)));
    FloatsToE4M3(x, codes.data() + 1, n, p);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(codes[i + 1], FloatToE4M3(x[i])) << Hex(std::bit_cast<uint32_t>(x[i]));
    E4M3ToFloats(codes.data() + 1, back.data() + 1, n, p);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(std::bit_cast<uint32_t>(back[i + 1]),
                std::bit_cast<uint32_t>(E4M3ToFloat(codes[i + 1])));
    FloatsToE5M2(x, codes.data() + 1, n, p);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(codes[i + 1], FloatToE5M2(x[i])) << Hex(std::bit_cast<uint32_t>(x[i]));
    E5M2ToFloats(codes.data() + 1, back.data() + 1, n, p);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(std::bit_cast<uint32_t>(back[i + 1]),
                std::bit_cast<uint32_t>(E5M2ToFloat(codes[i + 1])));
    FloatsToBf16(x, halves.data() + 1, n, p);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(halves[i + 1], FloatToBf16(x[i])) << Hex(std::bit_cast<uint32_t>(x[i]));
    Bf16ToFloats(halves.data() + 1, back.data() + 1, n, p);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(std::bit_cast<uint32_t>(back[i + 1]),
                std::bit_cast<uint32_t>(Bf16ToFloat(halves[i + 1])));
  }
}

TEST(BulkConvert, AllDecodeCodesAndDefaultPath) {
  std::vector<uint8_t> all8(256 * 3 + 7);
  for (size_t i = 0; i < all8.size(); ++i) all8[i] = static_cast<uint8_t>(i * 37);
  std::vector<uint16_t> all16(65536 + 9);
  for (size_t i = 0; i < all16.size(); ++i) all16[i] = static_cast<uint16_t>(i);
  std::vector<float> y(all16.size());
  for (SimdPath p : RunnablePaths()) {
    SCOPED_TRACE(std::string(SimdPathName(p)));
    E4M3ToFloats(all8.data(), y.data(), all8.size(), p);
    for (size_t i = 0; i < all8.size(); ++i)
      ASSERT_EQ(std::bit_cast<uint32_t>(y[i]), std::bit_cast<uint32_t>(E4M3ToFloat(all8[i])));
    Bf16ToFloats(all16.data(), y.data(), all16.size(), p);
    for (size_t i = 0; i < all16.size(); ++i)
      ASSERT_EQ(std::bit_cast<uint32_t>(y[i]), std::bit_cast<uint32_t>(Bf16ToFloat(all16[i])));
  }
  EXPECT_TRUE(SimdPathAvailable(BestSimdPath()));
  // The overloads without a path (declared in bf16.h as well) use BestSimdPath().
  const std::vector<float> xs = RandomInputs(5);
  std::vector<uint16_t> h(xs.size());
  FloatsToBf16(xs.data(), h.data(), xs.size());
  for (size_t i = 0; i < xs.size(); ++i) ASSERT_EQ(h[i], FloatToBf16(xs[i]));
}

}  // namespace
}  // namespace mt

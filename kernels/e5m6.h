// kernels/e5m6.h: DeepSeek-V3's E5M6 format for the attention output, the one activation
// the recipe caches in neither E4M3 nor BF16 (report 3.3.3: o_proj's input, which the
// attention kernel's backward also reads). Emulated as values: an E5M6 number (1 sign,
// 5 exponent bits with bias 15, 6 mantissa bits, IEEE-style subnormals, exponent 31 kept
// for inf/NaN) times a power-of-two scale is exactly a BF16 number, so the rounded
// activation is kept in BF16 storage with no further loss.
//
// Shared by the host (kernels/quantize.h RoundE5M6Tiles) and CUDA (fp8_quant.cu), so both
// give the same bits.
#pragma once

#include <math.h>  // the global frexp, ldexpf, rintf, fabsf that device code also has

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define MT_E5M6_HD __host__ __device__
#else
#define MT_E5M6_HD
#endif

namespace mt {

constexpr float kE5M6Max = 65024.0f;  // (2 - 2^-6) x 2^15
constexpr uint32_t kE5M6MaxBits = 0x477e0000u;
constexpr uint32_t kE5M6MinNormalBits = 0x38800000u;  // 2^-14
static_assert(kE5M6Max == 65024.0f && (1 << 15) * (2.0 - 1.0 / 64) == 65024.0, "E5M6 max");

// x to the nearest E5M6 value, ties to even; beyond kE5M6Max it saturates (the tile scale
// keeps |x| <= kE5M6Max, but rounding may carry just past it). Inf and NaN pass through.
MT_E5M6_HD inline float RoundE5M6(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  const uint32_t sign = u & 0x80000000u, mag = u & 0x7fffffffu;
  if (mag >= 0x7f800000u) return x;
  float r;
  if (mag < kE5M6MinNormalBits) {
    // Subnormal: multiples of 2^-20. Scaling by 2^20 is exact, rintf rounds ties to even.
    r = rintf(fabsf(x) * 1048576.0f) * (1.0f / 1048576.0f);
  } else {
    // Normal: keep 6 of float's 23 mantissa bits, ties to even on the 17 dropped.
    uint32_t m = (mag + 0xffffu + ((mag >> 17) & 1u)) & ~0x1ffffu;
    if (m > kE5M6MaxBits) m = kE5M6MaxBits;
    std::memcpy(&r, &m, sizeof r);
  }
  uint32_t out;
  std::memcpy(&out, &r, sizeof out);
  out |= sign;
  std::memcpy(&r, &out, sizeof r);
  return r;
}

// The recipe's round scaling for E5M6: the power of two 2^ceil(log2(amax / kE5M6Max)),
// at least 2^-126 (a normal float), 1 for an all-zero tile.
MT_E5M6_HD inline float E5M6Scale(float amax) {
  if (!(amax > 0.0f)) return 1.0f;
  int e;
  const double m = frexp(static_cast<double>(amax) / kE5M6Max, &e);  // m in [0.5, 1)
  e = m == 0.5 ? e - 1 : e;
  return ldexpf(1.0f, e < -126 ? -126 : e);
}

}  // namespace mt

// kernels/bf16.h: bfloat16 <-> float32, bit-exact with CUDA's __float2bfloat16_rn.
//
// Round to nearest, ties to even; NaN stays NaN (quiet bit set). Inline because the
// checkpoint writer and the bf16 precision emulation call it per element.
#pragma once

#include <cstdint>
#include <cstring>

namespace mt {

inline uint16_t FloatToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding) >> 16);
}

inline float Bf16ToFloat(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Arrays: x [n] -> y [n], vectorised (AVX-512F / AVX2 / scalar, chosen at run time) and
// bit-identical to the functions above element by element. Defined in kernels/fp8.cc, whose
// header also has overloads pinned to one SIMD path.
void FloatsToBf16(const float* x, uint16_t* y, int64_t n);
void Bf16ToFloats(const uint16_t* x, float* y, int64_t n);

}  // namespace mt

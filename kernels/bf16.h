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

}  // namespace mt

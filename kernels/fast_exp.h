// kernels/fast_exp.h: exp() for the hot loops of softmax and cross-entropy.
//
// glibc's scalar expf is exact to 0.5 ulp but is a call per element that the compiler
// cannot vectorise; cross-entropy over a 4K vocabulary spent a fifth of a CPU step in it.
// This is Cephes' expf (Cody-Waite range reduction, degree-6 minimax polynomial, about
// 1 ulp), written branch-free so `#pragma omp simd` loops vectorise it, and it gives the
// same bits on every x86-64 machine. Double stays on std::exp: the double build exists for
// gradient checks, where speed does not matter and accuracy does.
#pragma once

#include <cmath>
#include <cstdint>
#include <algorithm>
#include <bit>

namespace mt {

// For -1e7 <= x <= 0 (softmax and cross-entropy after subtracting the row max; logits that
// far apart mean the run has already diverged): with no upper
// end to guard, the whole function is branch-free, which is what lets GCC vectorise the
// loops that call it (a clamp written as a select blocks its if-conversion at -O2).
[[gnu::always_inline]] inline float FastExp(float x) {
  // n = round(x / ln 2) by the 1.5 * 2^23 trick (no floor() call, so loops vectorise).
  constexpr float kRound = 12582912.0f;
  const float n = (x * 1.44269504088896341f + kRound) - kRound;
  float r = x - n * 0.693359375f;  // Cody-Waite: ln 2 split in two for an exact product
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  // 2^n as float bits; below 2^-126 (x < -87.3) the biased exponent goes <= 0 and the mask
  // turns it into +0, i.e. exp underflows to 0 as it should.
  int32_t e = static_cast<int32_t>(n) + 127;
  e &= ~(e >> 31);
  return y * std::bit_cast<float>(e << 23);
}

// exp(x) for x <= 0 in the element type: FastExp for float, std::exp for double.
template <typename T>
inline T ExpNonPositive(T x) {
  if constexpr (sizeof(T) == sizeof(float)) return FastExp(x);
  else return std::exp(x);
}

}  // namespace mt

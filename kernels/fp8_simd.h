// kernels/fp8_simd.h: the AVX2 / AVX-512F bodies behind kernels/fp8.h's bulk converters.
//
// Internal to fp8.cc. Each function converts the longest prefix it can do in whole vectors
// and returns its length; the caller finishes the tail with the scalar code, so a path is
// bit-identical to scalar exactly when its vector body is. Call one only where
// SimdPathAvailable() says the CPU has the instructions.
#pragma once

#include <cstdint>

namespace mt::internal {

// x [n] -> y [n] (E5M2 when e5m2, else E4M3).
int64_t FloatsToFp8Avx2(const float* x, uint8_t* y, int64_t n, bool e5m2);
int64_t FloatsToFp8Avx512(const float* x, uint8_t* y, int64_t n, bool e5m2);
// y[i] = table[x[i]], table [256].
int64_t LookupFloatsAvx2(const uint8_t* x, const float* table, float* y, int64_t n);
int64_t LookupFloatsAvx512(const uint8_t* x, const float* table, float* y, int64_t n);
int64_t FloatsToBf16Avx2(const float* x, uint16_t* y, int64_t n);
int64_t FloatsToBf16Avx512(const float* x, uint16_t* y, int64_t n);
int64_t Bf16ToFloatsAvx2(const uint16_t* x, float* y, int64_t n);
int64_t Bf16ToFloatsAvx512(const uint16_t* x, float* y, int64_t n);

}  // namespace mt::internal

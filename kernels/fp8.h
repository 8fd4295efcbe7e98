// kernels/fp8.h: FP8 (E4M3, E5M2) and bulk BF16 conversions, bit-exact with CUDA.
//
// Encoding matches `__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3 / __NV_E5M2)` from
// cuda_fp8.hpp (the host emulation and the sm_89+ `cvt.rn.satfinite.{e4m3,e5m2}x2.f32`
// instruction agree): round to nearest, ties to even; subnormals kept; every finite value
// beyond the largest finite code, and +-inf, saturates to +-max; +-0 keeps its sign.
// NaN of either sign becomes 0x7F in both formats: the host code first canonicalises any
// NaN to 0x7FFFFFFF (sign dropped), then E4M3 gives 0x7F and E5M2 gives 0x7E | 0x3 = 0x7F.
//
//   E4M3 (e4m3fn): bias 7, no infinities, only S.1111.111 is NaN, max 448, min subnormal 2^-9.
//   E5M2:          bias 15, IEEE-like (S.11111.00 = inf, S.11111.xx = NaN), max 57344,
//                  min subnormal 2^-16.
//
// Bulk converters run a vector path chosen once at run time: AVX-512F where the CPU has it,
// else AVX2, else scalar. The SIMD code is compiled with per-function target attributes, so
// one binary carries all paths whatever -march says; every path is bit-identical to the
// scalar one (tests/kernels/fp8_test.cc checks each path the machine can run).
#pragma once

#include <cstdint>
#include <string_view>

namespace mt {

inline constexpr float kE4M3Max = 448.0f;
inline constexpr float kE5M2Max = 57344.0f;
inline constexpr uint8_t kFp8NaN = 0x7F;  // what NaN inputs encode to, in both formats

// ---- Scalar ---------------------------------------------------------------------------
uint8_t FloatToE4M3(float x);
uint8_t FloatToE5M2(float x);
// Exact (every FP8 value is a float). NaN codes (E4M3 0x7f/0xff, E5M2 exponent 31 with a
// non-zero mantissa) give the float 0x7fffffff, as cuda_fp8.hpp's host decode does (sign
// dropped); E5M2 0x7c/0xfc give +-inf.
float E4M3ToFloat(uint8_t code);
float E5M2ToFloat(uint8_t code);

// ---- Bulk (arrays of n elements, any alignment, in and out must not overlap) ---------
enum class SimdPath : uint8_t { kScalar, kAvx2, kAvx512 };

std::string_view SimdPathName(SimdPath path);
// Whether this CPU can run `path` (the scalar path always can).
bool SimdPathAvailable(SimdPath path);
// The fastest available path; what the overloads without a path use.
SimdPath BestSimdPath();

void FloatsToE4M3(const float* x, uint8_t* y, int64_t n);  // x [n] -> y [n]
void FloatsToE5M2(const float* x, uint8_t* y, int64_t n);
void E4M3ToFloats(const uint8_t* x, float* y, int64_t n);
void E5M2ToFloats(const uint8_t* x, float* y, int64_t n);
// Bit-identical to FloatToBf16 / Bf16ToFloat of kernels/bf16.h, element by element.
void FloatsToBf16(const float* x, uint16_t* y, int64_t n);
void Bf16ToFloats(const uint16_t* x, float* y, int64_t n);

// The same, pinned to one path (tests compare paths; benchmarks time them). Aborts if the
// CPU cannot run `path`.
void FloatsToE4M3(const float* x, uint8_t* y, int64_t n, SimdPath path);
void FloatsToE5M2(const float* x, uint8_t* y, int64_t n, SimdPath path);
void E4M3ToFloats(const uint8_t* x, float* y, int64_t n, SimdPath path);
void E5M2ToFloats(const uint8_t* x, float* y, int64_t n, SimdPath path);
void FloatsToBf16(const float* x, uint16_t* y, int64_t n, SimdPath path);
void Bf16ToFloats(const uint16_t* x, float* y, int64_t n, SimdPath path);

}  // namespace mt

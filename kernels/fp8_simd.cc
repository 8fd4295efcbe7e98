// kernels/fp8_simd.cc: AVX2 and AVX-512F conversion loops for kernels/fp8.h.
//
// Per-function target attributes let this file hold both instruction sets whatever -march
// the build uses; fp8.cc picks one at run time. The FP8 encoder, per lane:
//   a = |x| bits, clamped (as unsigned) to the bits of the format's max: finite overflow
//       and inf saturate, NaN lanes are overwritten at the end;
//   normal:    (a - rebias + (half - 1) + lsb) >> drop   -- the round-to-nearest-even add;
//   subnormal: bits(|x| + M) - bits(M), M = 2^(23 + log2 smallest subnormal): adding M
//              makes the FPU round |x| to a multiple of the smallest subnormal (round to
//              nearest even, the default MXCSR mode) and the low bits are the count. It is
//              also right under FTZ/DAZ: a float subnormal input rounds to code 0 anyway.
// then the sign bit, and 0x7f (unsigned) for NaN lanes.
#include "kernels/fp8_simd.h"

#if defined(__x86_64__)
#include <immintrin.h>

// GCC 12's AVX-512 headers start from _mm512_undefined_*() and trip a false
// -Wmaybe-uninitialized once inlined (GCC bug 105593, fixed in 13).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace mt::internal {
namespace {

// Format constants as float bit patterns; see the comment at the top of the file.
struct Fp8Consts {
  uint32_t max_bits;         // largest finite code's value
  uint32_t min_normal_bits;  // smallest normal code's value
  uint32_t rebias;           // (127 - bias) << 23
  uint32_t half_minus_one;   // 2^(drop - 1) - 1
  uint32_t magic_bits;       // M above
};
constexpr Fp8Consts kE4M3 = {0x43e00000u, 0x3c800000u, 120u << 23, (1u << 19) - 1, 0x46800000u};
constexpr Fp8Consts kE5M2 = {0x47600000u, 0x38800000u, 112u << 23, (1u << 20) - 1, 0x43000000u};
constexpr int kE4M3Drop = 20, kE5M2Drop = 21;  // 23 - mantissa bits

// ---- AVX2 ------------------------------------------------------------------------------
template <int kDrop>
__attribute__((target("avx2"))) inline __m256i EncodeAvx2(__m256 x, const Fp8Consts& c) {
  const __m256i u = _mm256_castps_si256(x);
  const __m256i sign = _mm256_and_si256(_mm256_srli_epi32(u, 24), _mm256_set1_epi32(0x80));
  __m256i a = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
  const __m256i nan = _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x7f800000));
  a = _mm256_min_epu32(a, _mm256_set1_epi32(static_cast<int>(c.max_bits)));
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(a, kDrop), _mm256_set1_epi32(1));
  const __m256i round =
      _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(c.half_minus_one)), lsb);
  const __m256i normal = _mm256_srli_epi32(
      _mm256_add_epi32(_mm256_sub_epi32(a, _mm256_set1_epi32(static_cast<int>(c.rebias))), round),
      kDrop);
  const __m256i magic = _mm256_set1_epi32(static_cast<int>(c.magic_bits));
  const __m256i sub = _mm256_sub_epi32(
      _mm256_castps_si256(_mm256_add_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(magic))),
      magic);
  const __m256i is_sub =
      _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(c.min_normal_bits)), a);
  const __m256i r = _mm256_or_si256(_mm256_blendv_epi8(normal, sub, is_sub), sign);
  return _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7f), nan);  // one code per 32-bit lane
}

template <int kDrop>
__attribute__((target("avx2"))) int64_t EncodeLoopAvx2(const float* x, uint8_t* y, int64_t n,
                                                       const Fp8Consts& c) {
  // Dword order after the two packs, per 128-bit half: [r0 r1 r2 r3](low) [r0 r1 r2 r3](high).
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256i r0 = EncodeAvx2<kDrop>(_mm256_loadu_ps(x + i), c);
    const __m256i r1 = EncodeAvx2<kDrop>(_mm256_loadu_ps(x + i + 8), c);
    const __m256i r2 = EncodeAvx2<kDrop>(_mm256_loadu_ps(x + i + 16), c);
    const __m256i r3 = EncodeAvx2<kDrop>(_mm256_loadu_ps(x + i + 24), c);
    // Codes are <= 0xff, so the saturating packs never saturate.
    const __m256i p = _mm256_packus_epi16(_mm256_packus_epi32(r0, r1), _mm256_packus_epi32(r2, r3));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i), _mm256_permutevar8x32_epi32(p, order));
  }
  return i;
}

__attribute__((target("avx2"))) __m256i Bf16Avx2(__m256 x) {
  const __m256i u = _mm256_castps_si256(x);
  const __m256i a = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
  const __m256i nan = _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x7f800000));
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i rounded =
      _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb)), 16);
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  return _mm256_blendv_epi8(rounded, quiet, nan);
}

// ---- AVX-512F --------------------------------------------------------------------------
template <int kDrop>
__attribute__((target("avx512f"))) inline __m512i EncodeAvx512(__m512 x, const Fp8Consts& c) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i sign = _mm512_and_si512(_mm512_srli_epi32(u, 24), _mm512_set1_epi32(0x80));
  __m512i a = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(a, _mm512_set1_epi32(0x7f800000));
  a = _mm512_min_epu32(a, _mm512_set1_epi32(static_cast<int>(c.max_bits)));
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(a, kDrop), _mm512_set1_epi32(1));
  const __m512i round =
      _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(c.half_minus_one)), lsb);
  const __m512i normal = _mm512_srli_epi32(
      _mm512_add_epi32(_mm512_sub_epi32(a, _mm512_set1_epi32(static_cast<int>(c.rebias))), round),
      kDrop);
  const __m512i magic = _mm512_set1_epi32(static_cast<int>(c.magic_bits));
  const __m512i sub = _mm512_sub_epi32(
      _mm512_castps_si512(_mm512_add_ps(_mm512_castsi512_ps(a), _mm512_castsi512_ps(magic))),
      magic);
  const __mmask16 is_sub =
      _mm512_cmplt_epu32_mask(a, _mm512_set1_epi32(static_cast<int>(c.min_normal_bits)));
  const __m512i r = _mm512_or_si512(_mm512_mask_blend_epi32(is_sub, normal, sub), sign);
  return _mm512_mask_blend_epi32(nan, r, _mm512_set1_epi32(0x7f));
}

template <int kDrop>
__attribute__((target("avx512f"))) int64_t EncodeLoopAvx512(const float* x, uint8_t* y, int64_t n,
                                                            const Fp8Consts& c) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i r = EncodeAvx512<kDrop>(_mm512_loadu_ps(x + i), c);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i), _mm512_cvtepi32_epi8(r));
  }
  return i;
}

}  // namespace

int64_t FloatsToFp8Avx2(const float* x, uint8_t* y, int64_t n, bool e5m2) {
  return e5m2 ? EncodeLoopAvx2<kE5M2Drop>(x, y, n, kE5M2)
              : EncodeLoopAvx2<kE4M3Drop>(x, y, n, kE4M3);
}

int64_t FloatsToFp8Avx512(const float* x, uint8_t* y, int64_t n, bool e5m2) {
  return e5m2 ? EncodeLoopAvx512<kE5M2Drop>(x, y, n, kE5M2)
              : EncodeLoopAvx512<kE4M3Drop>(x, y, n, kE4M3);
}

__attribute__((target("avx2"))) int64_t LookupFloatsAvx2(const uint8_t* x, const float* table,
                                                         float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i idx =
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(x + i)));
    _mm256_storeu_ps(y + i, _mm256_i32gather_ps(table, idx, 4));
  }
  return i;
}

__attribute__((target("avx512f"))) int64_t LookupFloatsAvx512(const uint8_t* x, const float* table,
                                                              float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i idx =
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)));
    _mm512_storeu_ps(y + i, _mm512_i32gather_ps(idx, table, 4));
  }
  return i;
}

__attribute__((target("avx2"))) int64_t FloatsToBf16Avx2(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    // Values are <= 0xffff as non-negative int32, so packus keeps them; it interleaves the
    // 128-bit halves, which the 64-bit permute (0, 2, 1, 3) undoes.
    const __m256i p =
        _mm256_packus_epi32(Bf16Avx2(_mm256_loadu_ps(x + i)), Bf16Avx2(_mm256_loadu_ps(x + i + 8)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i), _mm256_permute4x64_epi64(p, 0xd8));
  }
  return i;
}

__attribute__((target("avx512f"))) int64_t FloatsToBf16Avx512(const float* x, uint16_t* y,
                                                              int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i u = _mm512_castps_si512(_mm512_loadu_ps(x + i));
    const __m512i a = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(a, _mm512_set1_epi32(0x7f800000));
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i rounded = _mm512_srli_epi32(
        _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)), 16);
    const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    const __m512i r = _mm512_mask_blend_epi32(nan, rounded, quiet);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i), _mm512_cvtepi32_epi16(r));
  }
  return i;
}

__attribute__((target("avx2"))) int64_t Bf16ToFloatsAvx2(const uint16_t* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i v =
        _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i), _mm256_slli_epi32(v, 16));
  }
  return i;
}

__attribute__((target("avx512f"))) int64_t Bf16ToFloatsAvx512(const uint16_t* x, float* y,
                                                              int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i v =
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)));
    _mm512_storeu_si512(y + i, _mm512_slli_epi32(v, 16));
  }
  return i;
}

}  // namespace mt::internal

#else  // not x86-64: fp8.cc never selects these paths; the prefixes they convert are empty.
namespace mt::internal {
int64_t FloatsToFp8Avx2(const float*, uint8_t*, int64_t, bool) { return 0; }
int64_t FloatsToFp8Avx512(const float*, uint8_t*, int64_t, bool) { return 0; }
int64_t LookupFloatsAvx2(const uint8_t*, const float*, float*, int64_t) { return 0; }
int64_t LookupFloatsAvx512(const uint8_t*, const float*, float*, int64_t) { return 0; }
int64_t FloatsToBf16Avx2(const float*, uint16_t*, int64_t) { return 0; }
int64_t FloatsToBf16Avx512(const float*, uint16_t*, int64_t) { return 0; }
int64_t Bf16ToFloatsAvx2(const uint16_t*, float*, int64_t) { return 0; }
int64_t Bf16ToFloatsAvx512(const uint16_t*, float*, int64_t) { return 0; }
}  // namespace mt::internal
#endif

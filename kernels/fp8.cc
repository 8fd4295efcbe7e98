// kernels/fp8.cc: scalar FP8 codecs, decode tables and the bulk-converter dispatch.
//
// The scalar encoder works on the float's bits with integer arithmetic (the structure of
// cuda_fp8.hpp's host code); the SIMD encoders in fp8_simd.cc use a different trick for
// subnormals (a float add against a magic constant), so the bit-for-bit comparison between
// paths in the tests is a comparison of two independent derivations.
#include "kernels/fp8.h"

#include <algorithm>
#include <array>
#include <bit>
#include <string>

#include "kernels/bf16.h"
#include "kernels/fp8_simd.h"
#include "kernels/status.h"

namespace mt {
namespace {

// Rounds v / 2^s to the nearest integer, ties to even (1 <= s <= 31).
uint32_t RoundShiftRightEven(uint32_t v, int s) {
  uint32_t q = v >> s;
  uint32_t rem = v & ((1u << s) - 1);
  uint32_t half = 1u << (s - 1);
  if (rem > half || (rem == half && (q & 1u))) ++q;
  return q;
}

// kMant mantissa bits, exponent bias kBias, kMaxBits = the float bits of the largest finite
// code. Saturating before rounding is the same as rounding then saturating, because the
// maximum is itself representable and SATFINITE sends every larger result to it.
template <int kMant, int kBias, uint32_t kMaxBits>
uint8_t EncodeScalar(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  const uint32_t sign = (u >> 24) & 0x80u;
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return kFp8NaN;  // CUDA drops a NaN's sign
  if (a > kMaxBits) a = kMaxBits;       // includes +-inf (SATFINITE)
  const int e = static_cast<int>(a >> 23);
  constexpr int kRebias = 127 - kBias;  // float biased exponent minus FP8 biased exponent
  uint32_t code;
  if (e > kRebias) {
    // FP8 normal: shift the exponent into place, round away 23 - kMant mantissa bits. A
    // carry out of the mantissa correctly bumps the exponent.
    code = RoundShiftRightEven(a - (static_cast<uint32_t>(kRebias) << 23), 23 - kMant);
  } else {
    // FP8 subnormal: count units of the smallest subnormal 2^(1 - kBias - kMant). The float
    // is sig * 2^(e' - 150) with e' = max(e, 1) and the implicit bit only when e > 0.
    const uint32_t sig = (a & 0x7fffffu) | (e > 0 ? 0x800000u : 0u);
    const int shift = 150 - std::max(e, 1) + (1 - kBias - kMant);
    // sig < 2^24, so a shift past 25 leaves less than half a unit: rounds to zero.
    code = shift > 25 ? 0u : RoundShiftRightEven(sig, shift);
  }
  return static_cast<uint8_t>(code | sign);
}

constexpr uint32_t kQuietNaNBits = 0x7fffffffu;  // what cuda_fp8.hpp's host decode returns

constexpr std::array<float, 256> MakeE4M3Table() {
  std::array<float, 256> t{};
  for (uint32_t c = 0; c < 256; ++c) {
    const uint32_t sign = (c & 0x80u) << 24, e = (c >> 3) & 0xfu, m = c & 7u;
    uint32_t bits;
    if (e == 15 && m == 7) {
      bits = kQuietNaNBits;
    } else if (e == 0) {  // m * 2^-9 is exact in float
      bits = sign | std::bit_cast<uint32_t>(static_cast<float>(m) * 0x1p-9f);
    } else {
      bits = sign | ((e + 120) << 23) | (m << 20);
    }
    t[c] = std::bit_cast<float>(bits);
  }
  return t;
}

constexpr std::array<float, 256> MakeE5M2Table() {
  std::array<float, 256> t{};
  for (uint32_t c = 0; c < 256; ++c) {
    const uint32_t sign = (c & 0x80u) << 24, e = (c >> 2) & 0x1fu, m = c & 3u;
    uint32_t bits;
    if (e == 31) {
      bits = m == 0 ? sign | 0x7f800000u : kQuietNaNBits;
    } else if (e == 0) {
      bits = sign | std::bit_cast<uint32_t>(static_cast<float>(m) * 0x1p-16f);
    } else {
      bits = sign | ((e + 112) << 23) | (m << 21);
    }
    t[c] = std::bit_cast<float>(bits);
  }
  return t;
}

// Constant-initialised, so usable from any static initialiser.
constexpr std::array<float, 256> kE4M3Table = MakeE4M3Table();
constexpr std::array<float, 256> kE5M2Table = MakeE5M2Table();

}  // namespace

uint8_t FloatToE4M3(float x) { return EncodeScalar<3, 7, 0x43e00000u>(x); }
uint8_t FloatToE5M2(float x) { return EncodeScalar<2, 15, 0x47600000u>(x); }
float E4M3ToFloat(uint8_t code) { return kE4M3Table[code]; }
float E5M2ToFloat(uint8_t code) { return kE5M2Table[code]; }

// ---- Dispatch --------------------------------------------------------------------------
std::string_view SimdPathName(SimdPath path) {
  switch (path) {
    case SimdPath::kScalar:
      return "scalar";
    case SimdPath::kAvx2:
      return "avx2";
    case SimdPath::kAvx512:
      return "avx512";
  }
  return "?";
}

bool SimdPathAvailable(SimdPath path) {
  switch (path) {
    case SimdPath::kScalar:
      return true;
#if defined(__x86_64__)
    // libgcc's checks include the OS's XSAVE support for the wider registers.
    case SimdPath::kAvx2:
      return __builtin_cpu_supports("avx2");
    case SimdPath::kAvx512:
      return __builtin_cpu_supports("avx512f");
#else
    default:
      return false;
#endif
  }
  return false;
}

SimdPath BestSimdPath() {
  static const SimdPath best = SimdPathAvailable(SimdPath::kAvx512) ? SimdPath::kAvx512
                               : SimdPathAvailable(SimdPath::kAvx2) ? SimdPath::kAvx2
                                                                    : SimdPath::kScalar;
  return best;
}

namespace {
void CheckPath(SimdPath path) {
  MT_CHECK(SimdPathAvailable(path), "this CPU cannot run the ", std::string(SimdPathName(path)),
           " path");
}
}  // namespace

void FloatsToE4M3(const float* x, uint8_t* y, int64_t n, SimdPath path) {
  CheckPath(path);
  int64_t i = 0;
  if (path == SimdPath::kAvx512) i = internal::FloatsToFp8Avx512(x, y, n, /*e5m2=*/false);
  if (path == SimdPath::kAvx2) i = internal::FloatsToFp8Avx2(x, y, n, /*e5m2=*/false);
  for (; i < n; ++i) y[i] = FloatToE4M3(x[i]);
}

void FloatsToE5M2(const float* x, uint8_t* y, int64_t n, SimdPath path) {
  CheckPath(path);
  int64_t i = 0;
  if (path == SimdPath::kAvx512) i = internal::FloatsToFp8Avx512(x, y, n, /*e5m2=*/true);
  if (path == SimdPath::kAvx2) i = internal::FloatsToFp8Avx2(x, y, n, /*e5m2=*/true);
  for (; i < n; ++i) y[i] = FloatToE5M2(x[i]);
}

void E4M3ToFloats(const uint8_t* x, float* y, int64_t n, SimdPath path) {
  CheckPath(path);
  const float* table = kE4M3Table.data();
  int64_t i = 0;
  if (path == SimdPath::kAvx512) i = internal::LookupFloatsAvx512(x, table, y, n);
  if (path == SimdPath::kAvx2) i = internal::LookupFloatsAvx2(x, table, y, n);
  for (; i < n; ++i) y[i] = table[x[i]];
}

void E5M2ToFloats(const uint8_t* x, float* y, int64_t n, SimdPath path) {
  CheckPath(path);
  const float* table = kE5M2Table.data();
  int64_t i = 0;
  if (path == SimdPath::kAvx512) i = internal::LookupFloatsAvx512(x, table, y, n);
  if (path == SimdPath::kAvx2) i = internal::LookupFloatsAvx2(x, table, y, n);
  for (; i < n; ++i) y[i] = table[x[i]];
}

void FloatsToBf16(const float* x, uint16_t* y, int64_t n, SimdPath path) {
  CheckPath(path);
  int64_t i = 0;
  if (path == SimdPath::kAvx512) i = internal::FloatsToBf16Avx512(x, y, n);
  if (path == SimdPath::kAvx2) i = internal::FloatsToBf16Avx2(x, y, n);
  for (; i < n; ++i) y[i] = FloatToBf16(x[i]);
}

void Bf16ToFloats(const uint16_t* x, float* y, int64_t n, SimdPath path) {
  CheckPath(path);
  int64_t i = 0;
  if (path == SimdPath::kAvx512) i = internal::Bf16ToFloatsAvx512(x, y, n);
  if (path == SimdPath::kAvx2) i = internal::Bf16ToFloatsAvx2(x, y, n);
  for (; i < n; ++i) y[i] = Bf16ToFloat(x[i]);
}

void FloatsToE4M3(const float* x, uint8_t* y, int64_t n) { FloatsToE4M3(x, y, n, BestSimdPath()); }
void FloatsToE5M2(const float* x, uint8_t* y, int64_t n) { FloatsToE5M2(x, y, n, BestSimdPath()); }
void E4M3ToFloats(const uint8_t* x, float* y, int64_t n) { E4M3ToFloats(x, y, n, BestSimdPath()); }
void E5M2ToFloats(const uint8_t* x, float* y, int64_t n) { E5M2ToFloats(x, y, n, BestSimdPath()); }
void FloatsToBf16(const float* x, uint16_t* y, int64_t n) { FloatsToBf16(x, y, n, BestSimdPath()); }
void Bf16ToFloats(const uint16_t* x, float* y, int64_t n) { Bf16ToFloats(x, y, n, BestSimdPath()); }

}  // namespace mt

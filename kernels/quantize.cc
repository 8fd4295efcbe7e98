// kernels/quantize.cc: 1x128 / 128x128 E4M3 quantisation, re-tiling and the FP8 GEMMs.
#include "kernels/quantize.h"

#include <cblas.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/e5m6.h"
#include "kernels/fp8.h"
#include "kernels/ops.h"
#include "kernels/status.h"

namespace mt {
namespace {

constexpr float kAmaxFloor = 1e-4f;  // DeepGEMM's clamp; see the header

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// y [n] = codes of x [n] / scale. The division is a correctly rounded float op, as in the
// GPU kernels; the encoder saturates the (at most half-ulp) overshoot of the tile's max.
void EncodeRun(const float* x, int64_t n, float scale, uint8_t* y) {
  float buf[kQuantTile];
  for (int64_t i = 0; i < n; ++i) buf[i] = x[i] / scale;
  FloatsToE4M3(buf, y, n);
}

// x [n] = decoded codes [n] * scale.
void DecodeRun(const uint8_t* codes, int64_t n, float scale, float* x) {
  E4M3ToFloats(codes, x, n);
  for (int64_t i = 0; i < n; ++i) x[i] *= scale;
}

float AbsMax(const float* x, int64_t n) {
  float m = 0.0f;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));  // NaN never wins
  return m;
}

// The codes of q [rows, cols] decoded without their scales.
std::vector<float> DecodeCodes(const uint8_t* q, int64_t rows, int64_t cols) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  E4M3ToFloats(q, out.data(), rows * cols);
  return out;
}

}  // namespace

float Fp8Scale(float amax, bool pow2) {
  const float a = std::max(amax, kAmaxFloor);
  if (!pow2) return a / kE4M3Max;
  // 2^ceil(log2(a / 448)), taken from the quotient in double: the float quotient can round
  // down onto a power of two and then undershoot a / 448.
  const double s = static_cast<double>(a) / kE4M3Max;
  if (std::isinf(s)) return static_cast<float>(s);
  int e;
  const double m = std::frexp(s, &e);  // s = m * 2^e, m in [0.5, 1)
  return std::ldexp(1.0f, m == 0.5 ? e - 1 : e);
}

void RoundE5M6Tiles(const float* x, float* y, int64_t M, int64_t K) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k0 = 0; k0 < K; k0 += kQuantTile) {
      const int64_t len = std::min<int64_t>(kQuantTile, K - k0);
      const float* xr = x + m * K + k0;
      float amax = 0.0f;
      for (int64_t i = 0; i < len; ++i) amax = std::max(amax, std::fabs(xr[i]));
      const float s = E5M6Scale(amax);
      // Dividing and multiplying by a power of two is exact: only RoundE5M6 rounds.
      for (int64_t i = 0; i < len; ++i) y[m * K + k0 + i] = RoundE5M6(xr[i] / s) * s;
    }
}

QuantizedActivation QuantizeActivation(const float* x, int64_t M, int64_t K,
                                       const QuantizeOptions& opts) {
  QuantizedActivation q;
  q.rows = M;
  q.cols = K;
  q.data = Tensor({M, K}, DType::kF8E4M3);
  q.scales = Tensor({CeilDiv(K, kQuantTile), M}, DType::kF32);
  float* scales = q.scales.data<float>();
  uint8_t* codes = q.codes();
  const int64_t tiles = q.col_tiles();
#pragma omp parallel for schedule(static)
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t kt = 0; kt < tiles; ++kt) {
      const int64_t k0 = kt * kQuantTile, len = std::min(kQuantTile, K - k0);
      const float s = Fp8Scale(AbsMax(x + m * K + k0, len), opts.pow2_scales);
      scales[kt * M + m] = s;
      EncodeRun(x + m * K + k0, len, s, codes + m * K + k0);
    }
  }
  return q;
}

void DequantizeActivation(const QuantizedActivation& q, float* x) {
  const int64_t M = q.rows, K = q.cols, tiles = q.col_tiles();
#pragma omp parallel for schedule(static)
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t kt = 0; kt < tiles; ++kt) {
      const int64_t k0 = kt * kQuantTile, len = std::min(kQuantTile, K - k0);
      DecodeRun(q.codes() + m * K + k0, len, q.scale(m, kt), x + m * K + k0);
    }
  }
}

int64_t PackedRowBytes(int64_t K) {
  return K + CeilDiv(K, kQuantTile) * static_cast<int64_t>(sizeof(float));
}

Tensor PackActivationRows(const QuantizedActivation& q) {
  const int64_t M = q.rows, K = q.cols, tiles = q.col_tiles(), W = PackedRowBytes(K);
  Tensor packed({M, W}, DType::kU8);
  uint8_t* out = static_cast<uint8_t*>(packed.raw());
  const float* scales = q.scales.data<float>();
  for (int64_t m = 0; m < M; ++m) {
    uint8_t* row = out + m * W;
    std::memcpy(row, q.codes() + m * K, static_cast<size_t>(K));
    for (int64_t kt = 0; kt < tiles; ++kt)
      std::memcpy(row + K + kt * sizeof(float), &scales[kt * M + m], sizeof(float));
  }
  return packed;
}

QuantizedActivation UnpackActivationRows(const Tensor& packed, int64_t begin, int64_t end,
                                         int64_t K) {
  const int64_t W = PackedRowBytes(K);
  MT_CHECK(packed.dtype() == DType::kU8 && packed.ndim() == 2 && packed.dim(1) == W,
           "UnpackActivationRows: expected U8 [M, ", W, "] for K = ", K, ", got ",
           ShapeString(packed.shape()), " ", DTypeName(packed.dtype()));
  MT_CHECK(0 <= begin && begin <= end && end <= packed.dim(0), "UnpackActivationRows: rows [",
           begin, ", ", end, ") outside [0, ", packed.dim(0), ")");
  QuantizedActivation q;
  q.rows = end - begin;
  q.cols = K;
  q.data = Tensor({q.rows, K}, DType::kF8E4M3);
  q.scales = Tensor({CeilDiv(K, kQuantTile), q.rows}, DType::kF32);
  const uint8_t* in = static_cast<const uint8_t*>(packed.raw()) + begin * W;
  float* scales = q.scales.data<float>();
  const int64_t tiles = q.col_tiles();
  for (int64_t m = 0; m < q.rows; ++m) {
    const uint8_t* row = in + m * W;
    std::memcpy(q.codes() + m * K, row, static_cast<size_t>(K));
    for (int64_t kt = 0; kt < tiles; ++kt)
      std::memcpy(&scales[kt * q.rows + m], row + K + kt * sizeof(float), sizeof(float));
  }
  return q;
}

QuantizedWeight QuantizeWeight(const float* w, int64_t N, int64_t K, const QuantizeOptions& opts) {
  QuantizedWeight q;
  q.rows = N;
  q.cols = K;
  q.data = Tensor({N, K}, DType::kF8E4M3);
  q.scales = Tensor({CeilDiv(N, kQuantTile), q.scale_ld()}, DType::kF32);  // padding stays 0
  float* scales = q.scales.data<float>();
  uint8_t* codes = q.codes();
  const int64_t nblocks = q.row_blocks(), kblocks = q.col_blocks(), ld = q.scale_ld();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t nb = 0; nb < nblocks; ++nb) {
    for (int64_t kb = 0; kb < kblocks; ++kb) {
      const int64_t n0 = nb * kQuantTile, n1 = std::min(N, n0 + kQuantTile);
      const int64_t k0 = kb * kQuantTile, len = std::min(kQuantTile, K - k0);
      float amax = 0.0f;
      for (int64_t n = n0; n < n1; ++n) amax = std::max(amax, AbsMax(w + n * K + k0, len));
      const float s = Fp8Scale(amax, opts.pow2_scales);
      scales[nb * ld + kb] = s;
      for (int64_t n = n0; n < n1; ++n) EncodeRun(w + n * K + k0, len, s, codes + n * K + k0);
    }
  }
  return q;
}

void DequantizeWeight(const QuantizedWeight& q, float* w) {
  const int64_t N = q.rows, K = q.cols, kblocks = q.col_blocks();
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t kb = 0; kb < kblocks; ++kb) {
      const int64_t k0 = kb * kQuantTile, len = std::min(kQuantTile, K - k0);
      DecodeRun(q.codes() + n * K + k0, len, q.scale(n / kQuantTile, kb), w + n * K + k0);
    }
  }
}

QuantizedActivation RetileTransposed(const QuantizedActivation& x, const QuantizeOptions& opts) {
  const int64_t M = x.rows, K = x.cols;
  std::vector<float> deq(static_cast<size_t>(M * K)), deq_t(static_cast<size_t>(M * K));
  DequantizeActivation(x, deq.data());
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) deq_t[k * M + m] = deq[m * K + k];
  return QuantizeActivation(deq_t.data(), K, M, opts);
}

QuantizedWeight TransposeWeight(const QuantizedWeight& w) {
  const int64_t N = w.rows, K = w.cols;
  QuantizedWeight t;
  t.rows = K;
  t.cols = N;
  t.data = Tensor({K, N}, DType::kF8E4M3);
  t.scales = Tensor({CeilDiv(K, kQuantTile), t.scale_ld()}, DType::kF32);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) t.codes()[k * N + n] = w.codes()[n * K + k];
  float* scales = t.scales.data<float>();
  for (int64_t nb = 0; nb < w.row_blocks(); ++nb)
    for (int64_t kb = 0; kb < w.col_blocks(); ++kb)
      scales[kb * t.scale_ld() + nb] = w.scale(nb, kb);
  return t;
}

// Both GEMMs promote a chunk with one fused multiply-add, acc = fma(sa * sw, chunk, acc): the
// FFMA that DeepGEMM's `final_accum += scale * accum` compiles to, spelled out so the result
// does not depend on the compiler's contraction flags.
void Fp8GemmReference(const QuantizedActivation& a, const QuantizedWeight& w, float* y) {
  MT_CHECK(a.cols == w.cols, "FP8 GEMM inner dimensions differ: ", a.cols, " vs ", w.cols);
  const int64_t M = a.rows, N = w.rows, K = a.cols, tiles = a.col_tiles();
  const std::vector<float> qa = DecodeCodes(a.codes(), M, K), qw = DecodeCodes(w.codes(), N, K);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      float acc = 0.0f;
      for (int64_t kt = 0; kt < tiles; ++kt) {
        const int64_t k0 = kt * kQuantTile, k1 = std::min(K, k0 + kQuantTile);
        float chunk = 0.0f;  // the products are exact, so fma is just the add
        for (int64_t k = k0; k < k1; ++k) chunk = std::fma(qa[m * K + k], qw[n * K + k], chunk);
        acc = std::fma(a.scale(m, kt) * w.scale(n / kQuantTile, kt), chunk, acc);
      }
      y[m * N + n] = acc;
    }
  }
}

void Fp8Gemm(const QuantizedActivation& a, const QuantizedWeight& w, float* y) {
  MT_CHECK(a.cols == w.cols, "FP8 GEMM inner dimensions differ: ", a.cols, " vs ", w.cols);
  const int64_t M = a.rows, N = w.rows, K = a.cols, tiles = a.col_tiles();
  std::fill(y, y + M * N, 0.0f);
  if (M == 0 || N == 0) return;
  const std::vector<float> qa = DecodeCodes(a.codes(), M, K), qw = DecodeCodes(w.codes(), N, K);
  const float* a_scales = a.scales.data<float>();  // [tiles, M]
  const float* w_scales = w.scales.data<float>();  // [ceil(N/128), ld]
  const int64_t w_ld = w.scale_ld();
  std::vector<float> chunk(static_cast<size_t>(M * N));  // [M, N] one K chunk's sums
  std::vector<float> sw(static_cast<size_t>(N));         // [N] this chunk's weight scales
  for (int64_t kt = 0; kt < tiles; ++kt) {
    const int64_t k0 = kt * kQuantTile, len = std::min(kQuantTile, K - k0);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, len, 1.0f, qa.data() + k0, K,
                qw.data() + k0, K, 0.0f, chunk.data(), N);
    for (int64_t n = 0; n < N; ++n) sw[n] = w_scales[(n / kQuantTile) * w_ld + kt];
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; ++m) {
      const float sa = a_scales[kt * M + m];
      float* yr = y + m * N;
      const float* cr = chunk.data() + m * N;
      for (int64_t n = 0; n < N; ++n) yr[n] = std::fma(sa * sw[n], cr[n], yr[n]);
    }
  }
}

void QuantizedLinearForward(const float* x, const float* w, float* y, int64_t M, int64_t K,
                            int64_t N, const QuantizeOptions& opts) {
  Fp8Gemm(QuantizeActivation(x, M, K, opts), QuantizeWeight(w, N, K, opts), y);
}

namespace {
// Below this many outputs a scaling loop runs on one thread (kernels/ops.cc's threshold).
constexpr int64_t kParallelMin = 1 << 15;
}  // namespace

void Fp8GemmTokenTiled(const QuantizedActivation& a, const QuantizedActivation& b, float* y) {
  MT_CHECK(a.cols == b.cols, "FP8 GEMM inner dimensions differ: ", a.cols, " vs ", b.cols);
  const int64_t M = a.rows, N = b.rows, K = a.cols, tiles = a.col_tiles();
  std::fill(y, y + M * N, 0.0f);
  if (M == 0 || N == 0) return;
  std::vector<float> qa(static_cast<size_t>(M * K)), qb(static_cast<size_t>(N * K));
  E4M3ToFloats(a.codes(), qa.data(), M * K);
  E4M3ToFloats(b.codes(), qb.data(), N * K);
  const float* sa = a.scales.data<float>();              // [tiles, M]
  const float* sb = b.scales.data<float>();              // [tiles, N]
  std::vector<float> chunk(static_cast<size_t>(M * N));  // [M, N] one K chunk's sums
  for (int64_t kt = 0; kt < tiles; ++kt) {
    const int64_t k0 = kt * kQuantTile, len = std::min(kQuantTile, K - k0);
    ops::Gemm<float>(false, true, M, N, len, 1.0f, qa.data() + k0, K, qb.data() + k0, K, 0.0f,
                     chunk.data(), N);
    const float* sbt = sb + kt * N;
#pragma omp parallel for schedule(static) if (M * N > kParallelMin)
    for (int64_t m = 0; m < M; ++m) {
      const float s = sa[kt * M + m];
      float* yr = y + m * N;
      const float* cr = chunk.data() + m * N;
      for (int64_t n = 0; n < N; ++n) yr[n] = std::fma(s * sbt[n], cr[n], yr[n]);
    }
  }
}

}  // namespace mt

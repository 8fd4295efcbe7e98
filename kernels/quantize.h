// kernels/quantize.h: DeepSeek-V3's fine-grained FP8 quantisation and a reference FP8 GEMM.
//
// The recipe (mission.md 1.4, DeepSeek-V3 report 3.3.2): E4M3 everywhere; activations get one
// FP32 scale per 1x128 tile along the inner dimension K (per token per 128 channels), weights
// one per 128x128 block; scales come from the current max-abs ("online", no history):
//   scale = max(amax, 1e-4) / 448   (optionally rounded up to a power of two),
//   code  = E4M3(x / scale)         (round to nearest even, saturating), x ~= code * scale.
// The 1e-4 floor is DeepGEMM's convention (its per_token_cast_to_fp8 / per_block_cast_to_fp8
// test helpers clamp amax to 1e-4): an all-zero tile gets the finite scale 1e-4 / 448 and
// all-zero codes, with no division by zero. Tiles and blocks at the edge of a dimension
// that is not a multiple of 128 are padded: the scale is over the real elements only and
// the padding is never stored. NaN inputs encode as NaN (0x7f); an inf makes its tile's
// scale inf, so the tile dequantises to NaN (a poisoned step, not a silent one).
//
// Scale storage is what cuBLASLt expects for its DeepSeek-style modes, as given in the cuBLAS
// docs, section "Scaling factors layouts"
// (https://docs.nvidia.com/cuda/cublas/#scaling-factors-layouts), and as enforced by PyTorch's
// _scaled_mm (aten/src/ATen/native/cuda/ScaledBlas.cpp, is_blockwise_1x128_scaling /
// is_blockwise_128x128_scaling, after pytorch/pytorch#166752, which quotes the docs: without the
// padding below cuBLASLt gives silently wrong results when ceil(K/128) % 4 != 0):
//   CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F, operand [M, K] row-major: a [ceil(K/128), M]
//     row-major array, i.e. scale(m, kt) at kt * M + m ("outer-dimension major").
//   CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, operand [N, K] row-major: a
//     [ceil(N/128), L4] row-major array with L4 = round_up(ceil(K/128), 4), i.e.
//     scale(nb, kb) at nb * L4 + kb; the padding columns hold 0.
//
// Backward re-tiling: Wgrad needs X^T [K, M] with tiles along M (1x128 tiles of X^T, the
// "128x1" tiles of X). The FP8 cache holds only the quantised X, so RetileTransposed
// re-quantises the dequantised values: that is what the recipe does ("converted from 1x128
// to 128x1 tiles", report 3.3.3). The precision cost is a second rounding: each element's
// error is at most the sum of the two quantisations' bounds. With power-of-two scales
// (which the recipe uses for these activations) the second step is exact for every element
// whose re-scaled value q1 * s1 / s2 lands on the E4M3 grid, which includes every one that
// stays in the normal range (>= 2^-6); only elements far below their new tile's max lose bits.
#pragma once

#include <cstdint>

#include "kernels/tensor.h"

namespace mt {

inline constexpr int64_t kQuantTile = 128;

struct QuantizeOptions {
  // Round each scale up to a power of two (the recipe's choice for activations that are
  // re-tiled for backward and for tokens dispatched to experts in FP8).
  bool pow2_scales = false;
};

// The scale for a tile or block whose max-abs is `amax` (rules above).
float Fp8Scale(float amax, bool pow2);

// An [M, K] activation quantised per 1x128 tile along K.
struct QuantizedActivation {
  int64_t rows = 0;  // M
  int64_t cols = 0;  // K
  Tensor data;       // [M, K] kF8E4M3 codes, row-major
  Tensor scales;     // [ceil(K/128), M] kF32, VEC128_32F layout

  int64_t col_tiles() const { return (cols + kQuantTile - 1) / kQuantTile; }
  const uint8_t* codes() const { return static_cast<const uint8_t*>(data.raw()); }
  uint8_t* codes() { return static_cast<uint8_t*>(data.raw()); }
  float scale(int64_t m, int64_t kt) const { return scales.data<float>()[kt * rows + m]; }
};

// An [N, K] weight quantised per 128x128 block.
struct QuantizedWeight {
  int64_t rows = 0;  // N
  int64_t cols = 0;  // K
  Tensor data;       // [N, K] kF8E4M3 codes, row-major
  Tensor scales;     // [ceil(N/128), round_up(ceil(K/128), 4)] kF32, BLK128x128_32F layout

  int64_t row_blocks() const { return (rows + kQuantTile - 1) / kQuantTile; }
  int64_t col_blocks() const { return (cols + kQuantTile - 1) / kQuantTile; }
  int64_t scale_ld() const { return (col_blocks() + 3) / 4 * 4; }
  const uint8_t* codes() const { return static_cast<const uint8_t*>(data.raw()); }
  uint8_t* codes() { return static_cast<uint8_t*>(data.raw()); }
  float scale(int64_t nb, int64_t kb) const { return scales.data<float>()[nb * scale_ld() + kb]; }
};

// E experts' weights stacked [E, N, K], each quantised on its own 128x128 grid (a block never
// straddles two experts): expert e's QuantizedWeight, codes and scales, back to back. `all`
// holds the stack; it is one QuantizedWeight of [E * N, K] only when N % 128 == 0.
struct QuantizedExperts {
  int64_t experts = 0;  // E
  QuantizedWeight all;  // rows = E * N, cols = K; scales [E * ceil(N/128), scale_ld]
  int64_t rows() const { return experts > 0 ? all.rows / experts : 0; }  // N
  // Expert e's weight: views of the stack's codes and scales.
  QuantizedWeight Expert(int64_t e) const {
    QuantizedWeight w;
    w.rows = rows();
    w.cols = all.cols;
    w.data = all.data.Slice(e * w.rows, (e + 1) * w.rows);
    w.scales = all.scales.Slice(e * w.row_blocks(), (e + 1) * w.row_blocks());
    return w;
  }
};

// y [M, K] = x rounded to E5M6 (kernels/e5m6.h) with a power-of-two scale per 1x128 tile
// along K: the recipe's cache of the attention output (in place allowed).
void RoundE5M6Tiles(const float* x, float* y, int64_t M, int64_t K);

// x [M, K] -> 1x128-tiled E4M3.
QuantizedActivation QuantizeActivation(const float* x, int64_t M, int64_t K,
                                       const QuantizeOptions& opts = {});
// x [M, K] = codes * scale.
void DequantizeActivation(const QuantizedActivation& q, float* x);
// Row packing for moving quantised activations between ranks (FP8 expert dispatch): row m of
// the packed [M, PackedRowBytes(K)] kU8 tensor holds row m's K E4M3 codes followed by its
// ceil(K/128) FP32 scales (native byte order, tile order). One row then carries everything
// needed to use it, so rows can be permuted, gathered and exchanged as opaque bytes and
// still unpack to exactly the codes and scales QuantizeActivation gave them: the quantisation
// is per row, so a row's codes and scales do not depend on which other rows it sits with.
int64_t PackedRowBytes(int64_t K);
Tensor PackActivationRows(const QuantizedActivation& q);
// Rows [begin, end) of a packed [M, PackedRowBytes(K)] kU8 tensor back as a quantised
// [end - begin, K] activation (codes and scales bit for bit).
QuantizedActivation UnpackActivationRows(const Tensor& packed, int64_t begin, int64_t end,
                                         int64_t K);
// w [N, K] -> 128x128-blocked E4M3.
QuantizedWeight QuantizeWeight(const float* w, int64_t N, int64_t K,
                               const QuantizeOptions& opts = {});
// w [N, K] = codes * scale.
void DequantizeWeight(const QuantizedWeight& q, float* w);

// From the 1x128 tiles of X [M, K], the 1x128 tiles of X^T [K, M] (tiles along M), by
// re-quantising the dequantised values (see the header comment for the precision cost).
QuantizedActivation RetileTransposed(const QuantizedActivation& x,
                                     const QuantizeOptions& opts = {});
// W [N, K] -> W^T [K, N]. Exact: a 128x128 block grid is its own transpose, so the codes
// move and the scale grid transposes, with no re-rounding. Dgrad uses W^T's K-blocks.
QuantizedWeight TransposeWeight(const QuantizedWeight& w);

// y [M, N] = a [M, K] * w [N, K]^T with DeepGEMM's promotion scheme: the products of each
// 128-wide K chunk are summed in FP32 (codes only; products of two E4M3 values are exact in
// FP32), then acc += (a_scale * w_scale) * chunk_sum into an FP32 accumulator. Plain loops,
// in order: the definition the fast paths are tested against.
void Fp8GemmReference(const QuantizedActivation& a, const QuantizedWeight& w, float* y);
// The same arithmetic with each chunk's sums done by an OpenBLAS SGEMM (different summation
// order inside a chunk, so equal to the reference only within FP32 accumulation error).
void Fp8Gemm(const QuantizedActivation& a, const QuantizedWeight& w, float* y);

// The FP8 Wgrad GEMM: y[M,N] = a[M,K] b[N,K]^T with both operands 1x128-tiled along K
// (DeepGEMM's "1D1D" scaling), with Fp8Gemm's promotion: each 128-wide chunk summed in FP32,
// then acc = fma(a_scale * b_scale, chunk, acc).
void Fp8GemmTokenTiled(const QuantizedActivation& a, const QuantizedActivation& b, float* y);
// y [M, N] = Q(x [M, K]) Q(w [N, K])^T: quantise x per 1x128 tile and w per 128x128 block,
// then Fp8Gemm. The FP8 emulation of ops::LinearForward for the trainer's fp8 mode.
void QuantizedLinearForward(const float* x, const float* w, float* y, int64_t M, int64_t K,
                            int64_t N, const QuantizeOptions& opts = {});

}  // namespace mt

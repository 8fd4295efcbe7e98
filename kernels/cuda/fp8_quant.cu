// kernels/cuda/fp8_quant.cu: 1x128 / 128x128 / per-tensor E4M3 quantisation, re-tiling,
// BF16 casts and the fused RMSNorm + quantisation (declared in fp8_quant.h).
//
// A 1x128 tile is one warp: lane l holds elements l, l+32, l+64, l+96, so each of the four
// loads is one coalesced 128-byte transaction. 128x128 blocks are one block of kBlock threads.
#include "kernels/cuda/fp8_quant.h"

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/e5m6.h"

namespace mt::cuda {
namespace {

constexpr int kPerLane = kQuantPerLane;

// ---- CUDA kernels ---------------------------------------------------------------------

// One warp per (m, kt) tile.
__global__ void QuantizeActivationKernel(const float* x, uint8_t* codes, float* scales, int64_t M,
                                         int64_t K, int64_t tiles, bool pow2) {
  const int64_t tile = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (tile >= M * tiles) return;
  const int64_t m = tile / tiles, kt = tile % tiles, k0 = kt * kQuantTile;
  const int len = int(MinI64(kQuantTile, K - k0));
  const int lane = threadIdx.x % 32;
  float v[kPerLane];
#pragma unroll
  for (int j = 0; j < kPerLane; ++j)
    v[j] = lane + 32 * j < len ? x[m * K + k0 + lane + 32 * j] : 0.0f;
  QuantizeWarpRun(v, len, pow2, codes + m * K + k0, scales + kt * M + m);
}

// One warp per (m, kt) tile: kernels/quantize.cc RoundE5M6Tiles, bit for bit.
__global__ void RoundE5M6TilesKernel(const float* x, float* y, int64_t M, int64_t K,
                                     int64_t tiles) {
  const int64_t tile = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (tile >= M * tiles) return;
  const int64_t m = tile / tiles, k0 = tile % tiles * kQuantTile;
  const int len = int(MinI64(kQuantTile, K - k0));
  const int lane = threadIdx.x % 32;
  float v[kPerLane];
  float amax = 0.0f;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    v[j] = lane + 32 * j < len ? x[m * K + k0 + lane + 32 * j] : 0.0f;
    amax = MaxNoNan(amax, fabsf(v[j]));
  }
  const float s = E5M6Scale(WarpMax(amax));
#pragma unroll
  for (int j = 0; j < kPerLane; ++j)
    if (lane + 32 * j < len) y[m * K + k0 + lane + 32 * j] = RoundE5M6(v[j] / s) * s;
}

__global__ void DequantizeActivationKernel(const uint8_t* codes, const float* scales, float* x,
                                           int64_t M, int64_t K) {
  MT_GRID_STRIDE(i, M * K) {
    const int64_t m = i / K, kt = (i % K) / kQuantTile;
    x[i] = E4M3ToFloat(codes[i]) * scales[kt * M + m];
  }
}

// One block per 128x128 block (nb = blockIdx.y, kb = blockIdx.x).
__global__ void QuantizeWeightKernel(const float* w, uint8_t* codes, float* scales, int64_t N,
                                     int64_t K, int64_t ld, bool pow2) {
  const int64_t nb = blockIdx.y, kb = blockIdx.x;
  const int64_t n0 = nb * kQuantTile, k0 = kb * kQuantTile;
  const int rows = int(MinI64(kQuantTile, N - n0)), cols = int(MinI64(kQuantTile, K - k0));
  float amax = 0.0f;
  for (int i = threadIdx.x; i < rows * cols; i += blockDim.x)
    amax = MaxNoNan(amax, fabsf(w[(n0 + i / cols) * K + k0 + i % cols]));
  const float s = Fp8Scale(BlockMax(amax), pow2);
  for (int i = threadIdx.x; i < rows * cols; i += blockDim.x) {
    const int64_t idx = (n0 + i / cols) * K + k0 + i % cols;
    codes[idx] = FloatToE4M3(w[idx] / s);
  }
  if (threadIdx.x == 0) {
    scales[nb * ld + kb] = s;
    if (kb == gridDim.x - 1)  // the last block of a row zeroes the padding columns
      for (int64_t p = kb + 1; p < ld; ++p) scales[nb * ld + p] = 0.0f;
  }
}

__global__ void DequantizeWeightKernel(const uint8_t* codes, const float* scales, float* w,
                                       int64_t N, int64_t K, int64_t ld) {
  MT_GRID_STRIDE(i, N * K) {
    const int64_t n = i / K, kb = (i % K) / kQuantTile;
    w[i] = E4M3ToFloat(codes[i]) * scales[(n / kQuantTile) * ld + kb];
  }
}

// One warp per output tile (k, mt) of X^T [K, M]: 128 dequantised values X[m0.., k].
__global__ void RetileTransposedKernel(const uint8_t* codes, const float* scales, uint8_t* codes_t,
                                       float* scales_t, int64_t M, int64_t K, int64_t mtiles,
                                       bool pow2) {
  const int64_t tile = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (tile >= K * mtiles) return;
  // Consecutive warps take consecutive k of one m-tile: their byte reads share cache lines.
  const int64_t mt = tile / K, k = tile % K, m0 = mt * kQuantTile, kt = k / kQuantTile;
  const int len = int(MinI64(kQuantTile, M - m0));
  const int lane = threadIdx.x % 32;
  float v[kPerLane];
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int64_t m = m0 + lane + 32 * j;
    v[j] = lane + 32 * j < len ? E4M3ToFloat(codes[m * K + k]) * scales[kt * M + m] : 0.0f;
  }
  QuantizeWarpRun(v, len, pow2, codes_t + k * M + m0, scales_t + mt * K + k);
}

__global__ void TransposeCodesKernel(const uint8_t* in, uint8_t* out, int64_t N, int64_t K) {
  // 32x32 tiles through shared memory: both the read and the write are coalesced.
  __shared__ uint8_t tile[32][33];
  const int64_t k0 = int64_t(blockIdx.x) * 32, n0 = int64_t(blockIdx.y) * 32;
  for (int r = threadIdx.y; r < 32; r += blockDim.y) {
    const int64_t n = n0 + r, k = k0 + threadIdx.x;
    if (n < N && k < K) tile[r][threadIdx.x] = in[n * K + k];
  }
  __syncthreads();
  for (int r = threadIdx.y; r < 32; r += blockDim.y) {
    const int64_t k = k0 + r, n = n0 + threadIdx.x;
    if (n < N && k < K) out[k * N + n] = tile[threadIdx.x][r];
  }
}

__global__ void TransposeScalesKernel(const float* in, float* out, int64_t nblocks, int64_t kblocks,
                                      int64_t ld_in, int64_t ld_out) {
  // out [kblocks, ld_out]: out[kb, nb] = in[nb, kb], padding nb >= nblocks zeroed.
  MT_GRID_STRIDE(i, kblocks * ld_out) {
    const int64_t kb = i / ld_out, nb = i % ld_out;
    out[i] = nb < nblocks ? in[nb * ld_in + kb] : 0.0f;
  }
}

__global__ void AbsMaxKernel(const float* x, int64_t n, uint32_t* amax_bits) {
  float m = 0.0f;
  MT_GRID_STRIDE(i, n) { m = MaxNoNan(m, fabsf(x[i])); }
  m = BlockMax(m);
  // Non-negative floats order like their bit patterns, so an integer max is a float max.
  if (threadIdx.x == 0) atomicMax(amax_bits, __float_as_uint(m));
}

__global__ void QuantizeTensorwiseKernel(const float* x, uint8_t* codes, float* scale,
                                         const uint32_t* amax_bits, int64_t n) {
  const float s = Fp8Scale(__uint_as_float(*amax_bits), false);
  if (blockIdx.x == 0 && threadIdx.x == 0) *scale = s;
  MT_GRID_STRIDE(i, n) { codes[i] = FloatToE4M3(x[i] / s); }
}

__global__ void FloatToBf16Kernel(const float* x, uint16_t* y, int64_t n) {
  MT_GRID_STRIDE(i, n) { y[i] = FloatToBf16(x[i]); }
}

__global__ void Bf16ToFloatKernel(const uint16_t* x, float* y, int64_t n) {
  MT_GRID_STRIDE(i, n) { y[i] = Bf16ToFloat(x[i]); }
}

// One kBlock block per row. The sum of squares, rstd and y = x * rstd * w are computed
// exactly as RmsNormForwardKernel (ops_cuda.cu) does: same loop, same BlockSum order, same
// float expression. y stays in shared memory [C]; warp w then quantises tiles w, w + 8, ...
__global__ void RmsNormQuantizeKernel(const float* x, const float* w, uint8_t* codes, float* scales,
                                      float* rstd, int64_t R, int64_t C, float eps, bool pow2) {
  extern __shared__ float y[];  // [C]
  const int64_t r = blockIdx.x;
  const float* xr = x + r * C;
  float ss = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) ss += xr[c] * xr[c];
  ss = BlockSum(ss);
  const float rs = 1.0f / sqrtf(ss / float(C) + eps);
  if (threadIdx.x == 0) rstd[r] = rs;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) y[c] = xr[c] * rs * w[c];
  __syncthreads();
  const int64_t tiles = CeilDiv(C, kQuantTile);
  const int lane = threadIdx.x % 32;
  for (int64_t kt = threadIdx.x / 32; kt < tiles; kt += kWarps) {
    const int64_t k0 = kt * kQuantTile;
    const int len = int(MinI64(kQuantTile, C - k0));
    float v[kPerLane];
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) v[j] = lane + 32 * j < len ? y[k0 + lane + 32 * j] : 0.0f;
    QuantizeWarpRun(v, len, pow2, codes + r * C + k0, scales + kt * R + r);
  }
}

void CheckMatrix(int64_t rows, int64_t cols) {
  CUDA_HOST_CHECK(rows >= 0 && cols >= 0, "negative matrix dimension");
}

unsigned WarpTileGrid(int64_t tiles) {
  const int64_t blocks = CeilDiv(tiles, kWarps);
  CUDA_HOST_CHECK(blocks <= INT32_MAX, "too many tiles for one launch");
  return unsigned(blocks);
}

}  // namespace

// ---- kernel launchers -----------------------------------------------------------------

void RoundE5M6Tiles(const float* x, float* y, int64_t M, int64_t K, cudaStream_t stream) {
  CheckMatrix(M, K);
  const int64_t tiles = CeilDiv(K, kQuantTile);
  if (M * tiles == 0) return;
  RoundE5M6TilesKernel<<<WarpTileGrid(M * tiles), kBlock, 0, stream>>>(x, y, M, K, tiles);
  CUDA_CHECK_LAUNCH();
}

void QuantizeActivation(const float* x, uint8_t* codes, float* scales, int64_t M, int64_t K,
                        bool pow2_scales, cudaStream_t stream) {
  CheckMatrix(M, K);
  const int64_t tiles = CeilDiv(K, kQuantTile);
  if (M * tiles == 0) return;
  QuantizeActivationKernel<<<WarpTileGrid(M * tiles), kBlock, 0, stream>>>(x, codes, scales, M, K,
                                                                           tiles, pow2_scales);
  CUDA_CHECK_LAUNCH();
}

void DequantizeActivation(const uint8_t* codes, const float* scales, float* x, int64_t M, int64_t K,
                          cudaStream_t stream) {
  CheckMatrix(M, K);
  if (M * K == 0) return;
  DequantizeActivationKernel<<<GridFor(M * K), kBlock, 0, stream>>>(codes, scales, x, M, K);
  CUDA_CHECK_LAUNCH();
}

void QuantizeWeight(const float* w, uint8_t* codes, float* scales, int64_t N, int64_t K,
                    bool pow2_scales, cudaStream_t stream) {
  CheckMatrix(N, K);
  if (N * K == 0) return;
  const dim3 grid(unsigned(CeilDiv(K, kQuantTile)), unsigned(CeilDiv(N, kQuantTile)));
  CUDA_HOST_CHECK(grid.y <= 65535, "N too large for the block grid");
  QuantizeWeightKernel<<<grid, kBlock, 0, stream>>>(w, codes, scales, N, K, WeightScaleLd(K),
                                                    pow2_scales);
  CUDA_CHECK_LAUNCH();
}

void DequantizeWeight(const uint8_t* codes, const float* scales, float* w, int64_t N, int64_t K,
                      cudaStream_t stream) {
  CheckMatrix(N, K);
  if (N * K == 0) return;
  DequantizeWeightKernel<<<GridFor(N * K), kBlock, 0, stream>>>(codes, scales, w, N, K,
                                                                WeightScaleLd(K));
  CUDA_CHECK_LAUNCH();
}

void RetileTransposed(const uint8_t* codes, const float* scales, uint8_t* codes_t, float* scales_t,
                      int64_t M, int64_t K, bool pow2_scales, cudaStream_t stream) {
  CheckMatrix(M, K);
  const int64_t mtiles = CeilDiv(M, kQuantTile);
  if (K * mtiles == 0) return;
  RetileTransposedKernel<<<WarpTileGrid(K * mtiles), kBlock, 0, stream>>>(
      codes, scales, codes_t, scales_t, M, K, mtiles, pow2_scales);
  CUDA_CHECK_LAUNCH();
}

void TransposeWeight(const uint8_t* codes, const float* scales, uint8_t* codes_t, float* scales_t,
                     int64_t N, int64_t K, cudaStream_t stream) {
  CheckMatrix(N, K);
  if (N * K == 0) return;
  const dim3 grid(unsigned(CeilDiv(K, 32)), unsigned(CeilDiv(N, 32)));
  CUDA_HOST_CHECK(grid.y <= 65535, "N too large for the transpose grid");
  TransposeCodesKernel<<<grid, dim3(32, 8), 0, stream>>>(codes, codes_t, N, K);
  CUDA_CHECK_LAUNCH();
  const int64_t nblocks = CeilDiv(N, kQuantTile), kblocks = CeilDiv(K, kQuantTile);
  const int64_t ld_out = WeightScaleLd(N);
  TransposeScalesKernel<<<GridFor(kblocks * ld_out), kBlock, 0, stream>>>(
      scales, scales_t, nblocks, kblocks, WeightScaleLd(K), ld_out);
  CUDA_CHECK_LAUNCH();
}

void QuantizeTensorwise(const float* x, uint8_t* codes, float* scale, uint32_t* amax_scratch,
                        int64_t n, cudaStream_t stream) {
  CUDA_HOST_CHECK(n >= 0, "negative length");
  CUDA_CHECK(cudaMemsetAsync(amax_scratch, 0, sizeof(uint32_t), stream));
  if (n > 0) {
    AbsMaxKernel<<<GridFor(n), kBlock, 0, stream>>>(x, n, amax_scratch);
    CUDA_CHECK_LAUNCH();
  }
  QuantizeTensorwiseKernel<<<std::max(1u, GridFor(n)), kBlock, 0, stream>>>(x, codes, scale,
                                                                            amax_scratch, n);
  CUDA_CHECK_LAUNCH();
}

void FloatToBf16(const float* x, uint16_t* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  FloatToBf16Kernel<<<GridFor(n), kBlock, 0, stream>>>(x, y, n);
  CUDA_CHECK_LAUNCH();
}

void Bf16ToFloat(const uint16_t* x, float* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  Bf16ToFloatKernel<<<GridFor(n), kBlock, 0, stream>>>(x, y, n);
  CUDA_CHECK_LAUNCH();
}

void RmsNormQuantize(const float* x, const float* w, uint8_t* codes, float* scales, float* rstd,
                     int64_t rows, int64_t C, double eps, bool pow2_scales, cudaStream_t stream) {
  CUDA_HOST_CHECK(rows >= 0 && C > 0 && rows <= INT32_MAX, "bad RMSNorm shape");
  if (rows == 0) return;
  const size_t smem = size_t(C) * sizeof(float);
  // 227 KB is Hopper's per-block maximum; DeepSeek-V3's hidden size 7168 needs 28 KB.
  CUDA_HOST_CHECK(smem <= 227 * 1024, "RmsNormQuantize keeps a row in shared memory: C too large");
  if (smem > 48 * 1024) {
    CUDA_CHECK(cudaFuncSetAttribute(RmsNormQuantizeKernel,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  }
  RmsNormQuantizeKernel<<<unsigned(rows), kBlock, smem, stream>>>(x, w, codes, scales, rstd, rows,
                                                                  C, float(eps), pow2_scales);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mt::cuda

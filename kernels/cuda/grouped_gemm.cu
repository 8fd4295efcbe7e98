// kernels/cuda/grouped_gemm.cu: the grouped-contiguous expert GEMMs of grouped_gemm.h.
//
// One shared-memory tiled kernel body serves all three GEMMs; what differs is how each
// operand is addressed. An operand tile is read as op(m, k) for m along the output edge and
// k along the reduction, from memory that is either "K-major" (op(m, k) = p[m * ld + k]) or
// not (op(m, k) = p[k * ld + m]):
//
//   forward      A = X_e  (m: row, k: K)  K-major     B = W_e  (n, k)            K-major
//   data grad    A = dY_e (m: row, k: N)  K-major     B = W_e  (k_out, n)        not
//   weight grad  A = dY_e (n, m: row)     not         B = X_e  (k_out, m: row)   not
#include <cub/block/block_scan.cuh>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/grouped_gemm.h"

namespace mt::cuda {
namespace {

constexpr int kTm = kGroupedTileM;
constexpr int kTn = kGroupedTileN;
constexpr int kTk = kGroupedTileK;
constexpr int kThreadEdge = 16;  // the block's threads as a 16 x 16 grid
constexpr int kPerThread = 4;    // outputs per thread along each edge
static_assert(kThreadEdge * kThreadEdge == kGroupedThreads, "16 x 16 threads");
static_assert(kThreadEdge * kPerThread == kTm && kThreadEdge * kPerThread == kTn,
              "the thread grid strides kPerThread times over each tile edge");
static_assert(kTm == kTn, "one tile loader serves both operands");

__device__ __forceinline__ float LoadF(const float* p) { return *p; }
__device__ __forceinline__ float LoadF(const uint16_t* p) { return Bf16ToFloat(*p); }
__device__ __forceinline__ void StoreF(float* p, float v) { *p = v; }
__device__ __forceinline__ void StoreF(uint16_t* p, float v) { *p = FloatToBf16(v); }

// The +1 column keeps K-major stores (consecutive threads walk kk) on distinct banks.
using Tile = float[kTk][kTm + 1];

// s[kk][mm] = op(m0 + mm, k0 + kk), zero outside [0, m_lim) x [0, k_lim); widened to FP32 once
// here so the inner product loop is pure FP32 FMAs. Consecutive threads walk the contiguous
// dimension of memory, so the global reads coalesce either way.
template <typename T, bool kKMajor>
__device__ __forceinline__ void LoadTile(const T* __restrict__ p, int64_t ld, int64_t m_lim,
                                         int64_t k_lim, int64_t m0, int64_t k0, Tile& s) {
  for (int idx = threadIdx.x; idx < kTm * kTk; idx += kGroupedThreads) {
    const int kk = kKMajor ? idx % kTk : idx / kTm;
    const int mm = kKMajor ? idx / kTk : idx % kTm;
    const int64_t m = m0 + mm, k = k0 + kk;
    float v = 0.0f;
    if (m < m_lim && k < k_lim) v = LoadF(p + (kKMajor ? m * ld + k : k * ld + m));
    s[kk][mm] = v;
  }
}

// acc[i][j] += sum_k opA(m0 + ty + 16 i, k) * opB(n0 + tx + 16 j, k) over k in [0, k_lim).
// opA: [a_lim, k_lim], opB: [b_lim, k_lim]. FP32 accumulation in the order k = 0, 1, ...
template <typename T, bool kAKMajor, bool kBKMajor>
__device__ __forceinline__ void TileProduct(const T* __restrict__ a, int64_t lda, int64_t a_lim,
                                            int64_t m0, const T* __restrict__ b, int64_t ldb,
                                            int64_t b_lim, int64_t n0, int64_t k_lim,
                                            float (&acc)[kPerThread][kPerThread]) {
  __shared__ Tile sa;  // [kTk][kTm]
  __shared__ Tile sb;  // [kTk][kTn]
  const int ty = threadIdx.x / kThreadEdge, tx = threadIdx.x % kThreadEdge;
  for (int64_t k0 = 0; k0 < k_lim; k0 += kTk) {
    LoadTile<T, kAKMajor>(a, lda, a_lim, k_lim, m0, k0, sa);
    LoadTile<T, kBKMajor>(b, ldb, b_lim, k_lim, n0, k0, sb);
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kTk; ++kk) {
      float av[kPerThread], bv[kPerThread];
#pragma unroll
      for (int i = 0; i < kPerThread; ++i) av[i] = sa[kk][ty + kThreadEdge * i];
#pragma unroll
      for (int j = 0; j < kPerThread; ++j) bv[j] = sb[kk][tx + kThreadEdge * j];
#pragma unroll
      for (int i = 0; i < kPerThread; ++i) {
#pragma unroll
        for (int j = 0; j < kPerThread; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
      }
    }
    __syncthreads();  // the next step overwrites sa / sb
  }
}

// Forward (kWKMajor) and data grad (!kWKMajor): for the rows of expert e,
//   c [rows, n_out] = a [rows, k_red] B_e,  B_e(r, c) = w_e[c * k_red + r] (forward: W_e^T,
//   w [E, N, K] with n_out = N, k_red = K) or w_e[r * n_out + c] (data grad: W_e, n_out = K,
//   k_red = N).
// blockIdx.x: a row tile over all experts (found from the device offsets); blockIdx.y: the
// column tile.
template <typename TIn, typename TOut, bool kWKMajor>
__global__ void __launch_bounds__(kGroupedThreads)
    RowGroupedKernel(const TIn* __restrict__ a, const TIn* __restrict__ w, TOut* __restrict__ c,
                     const int32_t* __restrict__ offsets, int experts, int64_t n_out,
                     int64_t k_red) {
  using Scan = cub::BlockScan<int32_t, kGroupedThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  __shared__ int32_t prefix[kGroupedMaxExperts + 1];  // [E + 1] tile prefix
  // Every block recomputes the prefix (E <= 1024 reads of offsets, one block scan): no
  // workspace, no extra launch, and nothing for the host to read.
  int32_t tiles[kGroupedScanItems];
#pragma unroll
  for (int i = 0; i < kGroupedScanItems; ++i) {
    const int e = threadIdx.x * kGroupedScanItems + i;
    tiles[i] = e < experts ? GroupedTilesForRows(int64_t(offsets[e + 1]) - offsets[e]) : 0;
  }
  int32_t total = 0;
  Scan(scan_storage).ExclusiveSum(tiles, tiles, total);
#pragma unroll
  for (int i = 0; i < kGroupedScanItems; ++i) {
    const int e = threadIdx.x * kGroupedScanItems + i;
    if (e < experts) prefix[e] = tiles[i];
  }
  if (threadIdx.x == 0) prefix[experts] = total;
  __syncthreads();

  int32_t expert = 0, tile = 0;
  // The grid is an upper bound on the tiles: the blocks past the last one have nothing to do
  // (uniform over the block, so no barrier is left waiting).
  if (!GroupedFindTile(prefix, experts, blockIdx.x, &expert, &tile)) return;
  int64_t row_begin = 0, row_end = 0;
  GroupedTileRows(offsets, expert, tile, &row_begin, &row_end);
  const int64_t rows = row_end - row_begin;  // 1..kTm
  const int64_t n0 = int64_t(blockIdx.y) * kTn;
  const TIn* a_tile = a + row_begin * k_red;             // [rows, k_red]
  const TIn* w_e = w + int64_t(expert) * n_out * k_red;  // [N, K] either way
  TOut* c_tile = c + row_begin * n_out;                  // [rows, n_out]

  float acc[kPerThread][kPerThread] = {};
  TileProduct<TIn, true, kWKMajor>(a_tile, k_red, rows, 0, w_e, kWKMajor ? k_red : n_out, n_out, n0,
                                   k_red, acc);
  const int ty = threadIdx.x / kThreadEdge, tx = threadIdx.x % kThreadEdge;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int64_t r = ty + kThreadEdge * i;
    if (r >= rows) continue;
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
      const int64_t col = n0 + tx + kThreadEdge * j;
      if (col < n_out) StoreF(c_tile + r * n_out + col, acc[i][j]);
    }
  }
}

// dw [E, N, K] += dy_e^T x_e. blockIdx.x: the K tile, blockIdx.y: the N tile, blockIdx.z: the
// expert; the reduction runs over the expert's rows, so one block owns each output tile and
// nothing needs atomics (split-K over long experts is for the tuning pass).
template <typename TIn>
__global__ void __launch_bounds__(kGroupedThreads)
    WeightGradKernel(const TIn* __restrict__ dy, const TIn* __restrict__ x, float* __restrict__ dw,
                     const int32_t* __restrict__ offsets, int64_t N, int64_t K) {
  const int expert = blockIdx.z;
  const int64_t row_begin = offsets[expert];
  const int64_t rows = int64_t(offsets[expert + 1]) - row_begin;
  if (rows <= 0) return;  // an empty expert's gradient is unchanged (uniform over the block)
  const int64_t k0 = int64_t(blockIdx.x) * kTn, n0 = int64_t(blockIdx.y) * kTm;
  float acc[kPerThread][kPerThread] = {};
  // opA(n, m) = dy[(row_begin + m) * N + n], opB(k, m) = x[(row_begin + m) * K + k].
  TileProduct<TIn, false, false>(dy + row_begin * N, N, N, n0, x + row_begin * K, K, K, k0, rows,
                                 acc);
  float* dw_e = dw + int64_t(expert) * N * K;  // [N, K]
  const int ty = threadIdx.x / kThreadEdge, tx = threadIdx.x % kThreadEdge;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int64_t n = n0 + ty + kThreadEdge * i;
    if (n >= N) continue;
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
      const int64_t k = k0 + tx + kThreadEdge * j;
      if (k < K) dw_e[n * K + k] += acc[i][j];
    }
  }
}

void CheckShape(const GroupedGemmShape& s) {
  CUDA_HOST_CHECK(s.experts >= 1 && s.experts <= kGroupedMaxExperts,
                  "grouped GEMM: 1..kGroupedMaxExperts experts");
  CUDA_HOST_CHECK(s.rows >= 0 && s.n >= 1 && s.k >= 1, "grouped GEMM: bad shape");
  CUDA_HOST_CHECK(s.rows < (int64_t(1) << 31), "grouped GEMM: offsets are int32");
}

template <typename TIn, typename TOut, bool kWKMajor>
void LaunchRowGrouped(const TIn* a, const TIn* w, TOut* c, const int32_t* offsets,
                      const GroupedGemmShape& shape, int64_t n_out, int64_t k_red,
                      cudaStream_t stream) {
  CheckShape(shape);
  if (shape.rows == 0) return;
  const int64_t col_tiles = CeilDiv(n_out, kTn);
  CUDA_HOST_CHECK(col_tiles <= 65535, "grouped GEMM: too many column tiles for grid.y");
  const dim3 grid(unsigned(GroupedGridTiles(shape.rows, shape.experts)), unsigned(col_tiles));
  RowGroupedKernel<TIn, TOut, kWKMajor>
      <<<grid, kGroupedThreads, 0, stream>>>(a, w, c, offsets, int(shape.experts), n_out, k_red);
  CUDA_CHECK_LAUNCH();
}

template <typename TIn>
void LaunchWeightGrad(const TIn* dy, const TIn* x, float* dw, const int32_t* offsets,
                      const GroupedGemmShape& shape, cudaStream_t stream) {
  CheckShape(shape);
  const int64_t n_tiles = CeilDiv(shape.n, kTm), k_tiles = CeilDiv(shape.k, kTn);
  CUDA_HOST_CHECK(n_tiles <= 65535, "grouped GEMM: too many N tiles for grid.y");
  const dim3 grid(unsigned(k_tiles), unsigned(n_tiles), unsigned(shape.experts));
  WeightGradKernel<TIn><<<grid, kGroupedThreads, 0, stream>>>(dy, x, dw, offsets, shape.n, shape.k);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void GroupedGemmForward(const float* x, const float* w, float* y, const int32_t* offsets,
                        const GroupedGemmShape& shape, cudaStream_t stream) {
  LaunchRowGrouped<float, float, true>(x, w, y, offsets, shape, shape.n, shape.k, stream);
}
void GroupedGemmForward(const uint16_t* x, const uint16_t* w, float* y, const int32_t* offsets,
                        const GroupedGemmShape& shape, cudaStream_t stream) {
  LaunchRowGrouped<uint16_t, float, true>(x, w, y, offsets, shape, shape.n, shape.k, stream);
}
void GroupedGemmForward(const uint16_t* x, const uint16_t* w, uint16_t* y, const int32_t* offsets,
                        const GroupedGemmShape& shape, cudaStream_t stream) {
  LaunchRowGrouped<uint16_t, uint16_t, true>(x, w, y, offsets, shape, shape.n, shape.k, stream);
}

void GroupedGemmDataGrad(const float* dy, const float* w, float* dx, const int32_t* offsets,
                         const GroupedGemmShape& shape, cudaStream_t stream) {
  LaunchRowGrouped<float, float, false>(dy, w, dx, offsets, shape, shape.k, shape.n, stream);
}
void GroupedGemmDataGrad(const uint16_t* dy, const uint16_t* w, float* dx, const int32_t* offsets,
                         const GroupedGemmShape& shape, cudaStream_t stream) {
  LaunchRowGrouped<uint16_t, float, false>(dy, w, dx, offsets, shape, shape.k, shape.n, stream);
}
void GroupedGemmDataGrad(const uint16_t* dy, const uint16_t* w, uint16_t* dx,
                         const int32_t* offsets, const GroupedGemmShape& shape,
                         cudaStream_t stream) {
  LaunchRowGrouped<uint16_t, uint16_t, false>(dy, w, dx, offsets, shape, shape.k, shape.n, stream);
}

void GroupedGemmWeightGrad(const float* dy, const float* x, float* dw, const int32_t* offsets,
                           const GroupedGemmShape& shape, cudaStream_t stream) {
  LaunchWeightGrad<float>(dy, x, dw, offsets, shape, stream);
}
void GroupedGemmWeightGrad(const uint16_t* dy, const uint16_t* x, float* dw, const int32_t* offsets,
                           const GroupedGemmShape& shape, cudaStream_t stream) {
  LaunchWeightGrad<uint16_t>(dy, x, dw, offsets, shape, stream);
}

}  // namespace mt::cuda

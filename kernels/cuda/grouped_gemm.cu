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

// One kernel for the three GEMMs: GroupedBlockFor (grouped_gemm.h, replayed on the CPU by
// tests/gpu/grouped_gemm_schedule_test.cc) says what this block computes; the operand layouts
// are template arguments so the tile loads compile to fixed addressing.
template <typename TIn, typename TOut, GroupedGemmKind kKind>
__global__ void __launch_bounds__(kGroupedThreads)
    GroupedGemmKernel(const TIn* __restrict__ a, const TIn* __restrict__ b, TOut* __restrict__ c,
                      const int32_t* __restrict__ offsets, GroupedGemmShape shape) {
  constexpr bool kRowGrouped = kKind != GroupedGemmKind::kWeightGrad;
  __shared__ int32_t prefix[kRowGrouped ? kGroupedMaxExperts + 1 : 1];  // [E + 1] tile prefix
  if constexpr (kRowGrouped) {
    // Every block recomputes the prefix (E <= 1024 reads of offsets, one block scan): no
    // workspace, no extra launch, and nothing for the host to read.
    using Scan = cub::BlockScan<int32_t, kGroupedThreads>;
    __shared__ typename Scan::TempStorage scan_storage;
    int32_t tiles[kGroupedScanItems];
#pragma unroll
    for (int i = 0; i < kGroupedScanItems; ++i) {
      const int e = threadIdx.x * kGroupedScanItems + i;
      tiles[i] = e < shape.experts ? GroupedTilesForRows(int64_t(offsets[e + 1]) - offsets[e]) : 0;
    }
    int32_t total = 0;
    Scan(scan_storage).ExclusiveSum(tiles, tiles, total);
#pragma unroll
    for (int i = 0; i < kGroupedScanItems; ++i) {
      const int e = threadIdx.x * kGroupedScanItems + i;
      if (e < shape.experts) prefix[e] = tiles[i];
    }
    if (threadIdx.x == 0) prefix[shape.experts] = total;
    __syncthreads();
  }
  GroupedBlockGemm g;
  // Blocks past the last row tile (the grid is an upper bound) and empty experts' weight
  // gradients have nothing to do; uniform over the block, so no barrier is left waiting.
  if (!GroupedBlockFor(kKind, shape, offsets, prefix, blockIdx.x, blockIdx.y, blockIdx.z, &g))
    return;
  float acc[kPerThread][kPerThread] = {};
  TileProduct<TIn, GroupedAKMajor(kKind), GroupedBKMajor(kKind)>(
      a + g.a_offset, g.lda, g.a_rows, g.m0, b + g.b_offset, g.ldb, g.b_rows, g.n0, g.depth, acc);
  const int ty = threadIdx.x / kThreadEdge, tx = threadIdx.x % kThreadEdge;
  TOut* c_block = c + g.c_offset;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int64_t m = g.m0 + ty + kThreadEdge * i;
    if (m >= g.a_rows) continue;
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
      const int64_t n = g.n0 + tx + kThreadEdge * j;
      if (n >= g.b_rows) continue;
      if constexpr (kRowGrouped) {
        StoreF(c_block + m * g.ldc + n, acc[i][j]);
      } else {
        c_block[m * g.ldc + n] += acc[i][j];  // one owner per element: no atomics
      }
    }
  }
}

void CheckShape(const GroupedGemmShape& s) {
  CUDA_HOST_CHECK(s.experts >= 1 && s.experts <= kGroupedMaxExperts,
                  "grouped GEMM: 1..kGroupedMaxExperts experts");
  CUDA_HOST_CHECK(s.rows >= 0 && s.n >= 1 && s.k >= 1, "grouped GEMM: bad shape");
  CUDA_HOST_CHECK(s.rows < (int64_t(1) << 31), "grouped GEMM: offsets are int32");
}

template <GroupedGemmKind kKind, typename TIn, typename TOut>
void Launch(const TIn* a, const TIn* b, TOut* c, const int32_t* offsets,
            const GroupedGemmShape& shape, cudaStream_t stream) {
  CheckShape(shape);
  if (shape.rows == 0) return;
  int64_t grid[3];
  GroupedGrid(kKind, shape, grid);
  CUDA_HOST_CHECK(grid[0] < (int64_t(1) << 31) && grid[1] <= 65535 && grid[2] <= 65535,
                  "grouped GEMM: grid too large");
  GroupedGemmKernel<TIn, TOut, kKind>
      <<<dim3(unsigned(grid[0]), unsigned(grid[1]), unsigned(grid[2])), kGroupedThreads, 0,
         stream>>>(a, b, c, offsets, shape);
  CUDA_CHECK_LAUNCH();
}

constexpr auto kFwd = GroupedGemmKind::kForward;
constexpr auto kDgrad = GroupedGemmKind::kDataGrad;
constexpr auto kWgrad = GroupedGemmKind::kWeightGrad;

}  // namespace

void GroupedGemmForward(const float* x, const float* w, float* y, const int32_t* offsets,
                        const GroupedGemmShape& shape, cudaStream_t stream) {
  Launch<kFwd>(x, w, y, offsets, shape, stream);
}
void GroupedGemmForward(const uint16_t* x, const uint16_t* w, float* y, const int32_t* offsets,
                        const GroupedGemmShape& shape, cudaStream_t stream) {
  Launch<kFwd>(x, w, y, offsets, shape, stream);
}
void GroupedGemmForward(const uint16_t* x, const uint16_t* w, uint16_t* y, const int32_t* offsets,
                        const GroupedGemmShape& shape, cudaStream_t stream) {
  Launch<kFwd>(x, w, y, offsets, shape, stream);
}

void GroupedGemmDataGrad(const float* dy, const float* w, float* dx, const int32_t* offsets,
                         const GroupedGemmShape& shape, cudaStream_t stream) {
  Launch<kDgrad>(dy, w, dx, offsets, shape, stream);
}
void GroupedGemmDataGrad(const uint16_t* dy, const uint16_t* w, float* dx, const int32_t* offsets,
                         const GroupedGemmShape& shape, cudaStream_t stream) {
  Launch<kDgrad>(dy, w, dx, offsets, shape, stream);
}
void GroupedGemmDataGrad(const uint16_t* dy, const uint16_t* w, uint16_t* dx,
                         const int32_t* offsets, const GroupedGemmShape& shape,
                         cudaStream_t stream) {
  Launch<kDgrad>(dy, w, dx, offsets, shape, stream);
}

void GroupedGemmWeightGrad(const float* dy, const float* x, float* dw, const int32_t* offsets,
                           const GroupedGemmShape& shape, cudaStream_t stream) {
  Launch<kWgrad>(dy, x, dw, offsets, shape, stream);
}
void GroupedGemmWeightGrad(const uint16_t* dy, const uint16_t* x, float* dw, const int32_t* offsets,
                           const GroupedGemmShape& shape, cudaStream_t stream) {
  Launch<kWgrad>(dy, x, dw, offsets, shape, stream);
}

}  // namespace mt::cuda

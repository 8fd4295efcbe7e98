// kernels/cuda/grouped_gemm.cu: the FP32 grouped-contiguous expert GEMMs of grouped_gemm.h,
// on CUDA cores (the BF16 ones run on tensor cores: grouped_gemm_bf16.cu).
//
// One shared-memory tiled kernel body serves all three GEMMs; what differs is how each
// operand is addressed. An operand tile is read as op(m, k) for m along the output edge and
// k along the reduction, from memory that is either "K-major" (op(m, k) = p[m * ld + k]) or
// not (op(m, k) = p[k * ld + m]):
//
//   forward      A = X_e  (m: row, k: K)  K-major     B = W_e  (n, k)            K-major
//   data grad    A = dY_e (m: row, k: N)  K-major     B = W_e  (k_out, n)        not
//   weight grad  A = dY_e (n, m: row)     not         B = X_e  (k_out, m: row)   not
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/grouped_gemm.cuh"
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

// The +1 column keeps K-major stores (consecutive threads walk kk) on distinct banks.
using Tile = float[kTk][kTm + 1];

// s[kk][mm] = op(m0 + mm, k0 + kk), zero outside [0, m_lim) x [0, k_lim). Consecutive threads
// walk the contiguous dimension of memory, so the global reads coalesce either way.
template <bool kKMajor>
__device__ __forceinline__ void LoadTile(const float* __restrict__ p, int64_t ld, int64_t m_lim,
                                         int64_t k_lim, int64_t m0, int64_t k0, Tile& s) {
  for (int idx = threadIdx.x; idx < kTm * kTk; idx += kGroupedThreads) {
    const int kk = kKMajor ? idx % kTk : idx / kTm;
    const int mm = kKMajor ? idx / kTk : idx % kTm;
    const int64_t m = m0 + mm, k = k0 + kk;
    float v = 0.0f;
    if (m < m_lim && k < k_lim) v = p[kKMajor ? m * ld + k : k * ld + m];
    s[kk][mm] = v;
  }
}

// acc[i][j] += sum_k opA(m0 + ty + 16 i, k) * opB(n0 + tx + 16 j, k) over k in [0, k_lim).
// opA: [a_lim, k_lim], opB: [b_lim, k_lim]. FP32 accumulation in the order k = 0, 1, ...
template <bool kAKMajor, bool kBKMajor>
__device__ __forceinline__ void TileProduct(const float* __restrict__ a, int64_t lda, int64_t a_lim,
                                            int64_t m0, const float* __restrict__ b, int64_t ldb,
                                            int64_t b_lim, int64_t n0, int64_t k_lim,
                                            float (&acc)[kPerThread][kPerThread]) {
  __shared__ Tile sa;  // [kTk][kTm]
  __shared__ Tile sb;  // [kTk][kTn]
  const int ty = threadIdx.x / kThreadEdge, tx = threadIdx.x % kThreadEdge;
  for (int64_t k0 = 0; k0 < k_lim; k0 += kTk) {
    LoadTile<kAKMajor>(a, lda, a_lim, k_lim, m0, k0, sa);
    LoadTile<kBKMajor>(b, ldb, b_lim, k_lim, n0, k0, sb);
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
template <GroupedGemmKind kKind>
__global__ void __launch_bounds__(kGroupedThreads)
    GroupedGemmKernel(const float* __restrict__ a, const float* __restrict__ b,
                      float* __restrict__ c, const int32_t* __restrict__ offsets,
                      GroupedGemmShape shape) {
  constexpr bool kRowGrouped = kKind != GroupedGemmKind::kWeightGrad;
  __shared__ int32_t prefix[kRowGrouped ? kGroupedMaxExperts + 1 : 1];  // [E + 1] tile prefix
  GroupedCheckOffsets(offsets, shape);
  if constexpr (kRowGrouped) GroupedBlockPrefix(offsets, shape.experts, prefix);
  GroupedBlockGemm g;
  // Blocks past the last row tile (the grid is an upper bound) and empty experts' weight
  // gradients have nothing to do; uniform over the block, so no barrier is left waiting.
  if (!GroupedBlockFor(kKind, shape, offsets, prefix, blockIdx.x, blockIdx.y, blockIdx.z, &g))
    return;
  float acc[kPerThread][kPerThread] = {};
  TileProduct<GroupedAKMajor(kKind), GroupedBKMajor(kKind)>(
      a + g.a_offset, g.lda, g.a_rows, g.m0, b + g.b_offset, g.ldb, g.b_rows, g.n0, g.depth, acc);
  const int ty = threadIdx.x / kThreadEdge, tx = threadIdx.x % kThreadEdge;
  float* c_block = c + g.c_offset;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int64_t m = g.m0 + ty + kThreadEdge * i;
    if (m >= g.a_rows) continue;
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
      const int64_t n = g.n0 + tx + kThreadEdge * j;
      if (n >= g.b_rows) continue;
      if constexpr (kRowGrouped) {
        c_block[m * g.ldc + n] = acc[i][j];
      } else {
        c_block[m * g.ldc + n] += acc[i][j];  // one owner per element: no atomics
      }
    }
  }
}

template <GroupedGemmKind kKind>
void Launch(const float* a, const float* b, float* c, const int32_t* offsets,
            const GroupedGemmShape& shape, cudaStream_t stream) {
  int64_t grid[3];
  if (!GroupedCheckedGrid(kKind, shape, grid)) return;
  GroupedGemmKernel<kKind><<<dim3(unsigned(grid[0]), unsigned(grid[1]), unsigned(grid[2])),
                             kGroupedThreads, 0, stream>>>(a, b, c, offsets, shape);
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

void GroupedGemmDataGrad(const float* dy, const float* w, float* dx, const int32_t* offsets,
                         const GroupedGemmShape& shape, cudaStream_t stream) {
  Launch<kDgrad>(dy, w, dx, offsets, shape, stream);
}

void GroupedGemmWeightGrad(const float* dy, const float* x, float* dw, const int32_t* offsets,
                           const GroupedGemmShape& shape, cudaStream_t stream) {
  Launch<kWgrad>(dy, x, dw, offsets, shape, stream);
}

}  // namespace mt::cuda

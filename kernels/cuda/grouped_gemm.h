// kernels/cuda/grouped_gemm.h: the expert GEMMs over variable token counts per expert, with
// no host synchronisation per expert (DeepGEMM's "grouped contiguous" layout).
//
// After moe_permute the rows of E local experts are contiguous: expert e owns rows
// [offsets[e], offsets[e + 1]) of X [rows, K]. offsets [E + 1] lives on the DEVICE (written by
// MoePlanBuild) and the host never reads it: the launch is sized from `rows` (the buffer's
// row capacity, known on the host) and every thread block finds its (expert, row tile) itself
// from a prefix over the per-expert tile counts it computes from the device offsets. Blocks
// past the last tile exit; the grid's upper bound GroupedGridTiles(rows, E) covers any
// distribution of the rows over the experts.
//
//   forward      Y_e  [M_e, N] = X_e [M_e, K]  W_e^T      W [E, N, K] stacked
//   data grad    dX_e [M_e, K] = dY_e [M_e, N] W_e
//   weight grad  dW_e [N, K]  += dY_e^T X_e               dW [E, N, K] FP32, accumulated
//
// FP32 in / FP32 out (checked at 1e-5): a plain shared-memory tiled kernel on CUDA cores
// (64x64 output tiles, 32-deep K steps, 4x4 outputs per thread; grouped_gemm.cu). BF16 in
// (uint16_t bits) with FP32 accumulation and FP32 or BF16 out: tensor cores (wmma
// m16n16k16, sm_80+; grouped_gemm_bf16.cu) on the same 64x64 output tiles and the same
// schedule, 64-deep K steps. E4M3 in with DeepSeek-V3's block scaling: the same tensor-core
// block on the codes widened to BF16, promoted per 128-wide chunk with the chunk's scales
// (grouped_gemm_fp8.cu; the weight gradient on operands re-tiled along the tokens). TMA,
// cp.async pipelining and split-K for the weight gradient are for the tuning pass on a GPU.
// Rows past offsets[E] (when offsets[E] < rows) are not written. Offsets must be non-decreasing
// with offsets[0] >= 0 and offsets[E] <= rows (each kernel traps on offsets[0] or offsets[E]
// outside [0, rows]).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace mt::cuda {

constexpr int kGroupedTileM = 64;  // rows of an expert per output tile
constexpr int kGroupedTileN = 64;  // output columns per tile
constexpr int kGroupedTileK = 32;  // reduction depth per shared-memory step
constexpr int kGroupedThreads = 256;
// Each block scans the per-expert tile counts with kGroupedScanItems experts per thread.
constexpr int kGroupedScanItems = 4;
constexpr int kGroupedMaxExperts = kGroupedThreads * kGroupedScanItems;
static_assert(kGroupedTileM * kGroupedTileN == kGroupedThreads * 16,
              "each thread owns a 4x4 block of the output tile");
static_assert(kGroupedTileM == 64 && kGroupedTileN == 64,
              "the 16x16 thread grid strides 4 times over each edge");
static_assert((kGroupedTileM * kGroupedTileK) % kGroupedThreads == 0,
              "tile loads split evenly over the block");

struct GroupedGemmShape {
  int64_t rows = 0;     // row capacity of X / Y / dX / dY (>= offsets[E]); known on the host
  int64_t experts = 0;  // E, 1..kGroupedMaxExperts
  int64_t n = 0;        // N: W_e's rows (Y's columns)
  int64_t k = 0;        // K: W_e's columns (X's columns)
};

// The shape of E experts' GEMMs over `rows` permuted rows, in the backend's argument order.
inline GroupedGemmShape GroupedShapeOf(int64_t rows, int64_t E, int64_t K, int64_t N) {
  GroupedGemmShape g;
  g.rows = rows;
  g.experts = E;
  g.n = N;
  g.k = K;
  return g;
}

// ---- the tile schedule (host and device share it; tests/gpu host-tests it) -----------

// Row tiles of an expert with `rows` rows (0 for an empty expert).
__host__ __device__ inline int32_t GroupedTilesForRows(int64_t rows) {
  return rows <= 0 ? 0 : int32_t((rows + kGroupedTileM - 1) / kGroupedTileM);
}

// Upper bound on the row tiles over all experts, whatever the offsets:
// sum_e ceil(M_e / T) <= sum_e (M_e + T - 1) / T <= rows / T + E.
inline int64_t GroupedGridTiles(int64_t rows, int64_t experts) {
  return (rows + kGroupedTileM - 1) / kGroupedTileM + experts;
}

// prefix [E + 1]: exclusive prefix sum of the experts' row tiles (host version of what each
// block computes in shared memory).
inline void GroupedTilePrefix(const int32_t* offsets, int64_t experts, int32_t* prefix) {
  prefix[0] = 0;
  for (int64_t e = 0; e < experts; ++e)
    prefix[e + 1] = prefix[e] + GroupedTilesForRows(int64_t(offsets[e + 1]) - offsets[e]);
}

// Block `block` -> (expert, row tile of that expert); false for blocks past the last tile.
// The largest e with prefix[e] <= block: empty experts (prefix[e] == prefix[e + 1]) are
// skipped because a later expert has the same prefix.
__host__ __device__ inline bool GroupedFindTile(const int32_t* prefix, int64_t experts,
                                                int64_t block, int32_t* expert, int32_t* tile) {
  if (block < 0 || block >= prefix[experts]) return false;
  int64_t lo = 0, hi = experts - 1;  // invariant: prefix[lo] <= block, answer in [lo, hi]
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (prefix[mid] <= block) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  *expert = int32_t(lo);
  *tile = int32_t(block - prefix[lo]);
  return true;
}

// Rows [*begin, *end) of X that the tile (expert, tile) covers.
__host__ __device__ inline void GroupedTileRows(const int32_t* offsets, int32_t expert,
                                                int32_t tile, int64_t* begin, int64_t* end) {
  const int64_t b = int64_t(offsets[expert]) + int64_t(tile) * kGroupedTileM;
  const int64_t e = b + kGroupedTileM;
  *begin = b;
  *end = e < offsets[expert + 1] ? e : int64_t(offsets[expert + 1]);
}

// ---- one block's GEMM (host and device share it; tests/gpu replays it on the CPU) -----

enum class GroupedGemmKind { kForward, kDataGrad, kWeightGrad };

// What one thread block computes: C(m, n) for m0 <= m < m0 + 64, n0 <= n < n0 + 64 (and
// m < a_rows, n < b_rows) as sum over k < depth of opA(m, k) opB(n, k), with
//   opA(m, k) = A[a_offset + (A K-major ? m * lda + k : k * lda + m)], A = x or dy,
//   opB(n, k) = B[b_offset + (B K-major ? n * ldb + k : k * ldb + n)], B = w or x,
//   C(m, n)  at c_offset + m * ldc + n (stored, or added for the weight gradient).
struct GroupedBlockGemm {
  int64_t a_offset = 0, lda = 0, a_rows = 0, m0 = 0;
  int64_t b_offset = 0, ldb = 0, b_rows = 0, n0 = 0;
  int64_t depth = 0;
  int64_t c_offset = 0, ldc = 0;
};

// Operand layouts per kind (the kernel's template arguments):
//   forward      A = X_e  [rows, K] (m: row, k: K) K-major;  B = W_e [N, K] (n, k) K-major
//   data grad    A = dY_e [rows, N] (m: row, k: N) K-major;  B = W_e [N, K] (n: K, k: N) not
//   weight grad  A = dY_e (m: N, k: row)           not;      B = X_e (n: K, k: row)   not
__host__ __device__ constexpr bool GroupedAKMajor(GroupedGemmKind kind) {
  return kind != GroupedGemmKind::kWeightGrad;
}
__host__ __device__ constexpr bool GroupedBKMajor(GroupedGemmKind kind) {
  return kind == GroupedGemmKind::kForward;
}

// The launch grid (x, y, z) of `kind`. Forward / data grad: x = row tiles over all experts
// (an upper bound), y = output column tiles. Weight grad: x = K tiles, y = N tiles, z = expert.
inline void GroupedGrid(GroupedGemmKind kind, const GroupedGemmShape& s, int64_t grid[3]) {
  const auto tiles = [](int64_t n, int64_t t) { return (n + t - 1) / t; };
  if (kind == GroupedGemmKind::kWeightGrad) {
    grid[0] = tiles(s.k, kGroupedTileN);
    grid[1] = tiles(s.n, kGroupedTileM);
    grid[2] = s.experts;
  } else {
    grid[0] = GroupedGridTiles(s.rows, s.experts);
    grid[1] = tiles(kind == GroupedGemmKind::kForward ? s.n : s.k, kGroupedTileN);
    grid[2] = 1;
  }
}

// Block (bx, by, bz)'s GEMM; false when it has nothing to do (past the last row tile, or an
// empty expert's weight gradient). prefix [E + 1] (GroupedTilePrefix) is only read for the
// row-grouped kinds.
__host__ __device__ inline bool GroupedBlockFor(GroupedGemmKind kind, const GroupedGemmShape& s,
                                                const int32_t* offsets, const int32_t* prefix,
                                                int64_t bx, int64_t by, int64_t bz,
                                                GroupedBlockGemm* g) {
  const int64_t N = s.n, K = s.k;
  if (kind == GroupedGemmKind::kWeightGrad) {
    const int64_t row_begin = offsets[bz];
    const int64_t rows = int64_t(offsets[bz + 1]) - row_begin;
    if (rows <= 0) return false;
    g->a_offset = row_begin * N;  // dY_e [rows, N]
    g->lda = N;
    g->a_rows = N;
    g->m0 = by * kGroupedTileM;
    g->b_offset = row_begin * K;  // X_e [rows, K]
    g->ldb = K;
    g->b_rows = K;
    g->n0 = bx * kGroupedTileN;
    g->depth = rows;
    g->c_offset = bz * N * K;  // dW_e [N, K]
    g->ldc = K;
    return true;
  }
  int32_t expert = 0, tile = 0;
  if (!GroupedFindTile(prefix, s.experts, bx, &expert, &tile)) return false;
  int64_t row_begin = 0, row_end = 0;
  GroupedTileRows(offsets, expert, tile, &row_begin, &row_end);
  const bool fwd = kind == GroupedGemmKind::kForward;
  const int64_t depth = fwd ? K : N, cols = fwd ? N : K;
  g->a_offset = row_begin * depth;  // X_e [rows, K] or dY_e [rows, N]
  g->lda = depth;
  g->a_rows = row_end - row_begin;  // the tile's rows, 1..kGroupedTileM
  g->m0 = 0;
  g->b_offset = int64_t(expert) * N * K;  // W_e [N, K]
  g->ldb = K;
  g->b_rows = cols;
  g->n0 = by * kGroupedTileN;
  g->depth = depth;
  g->c_offset = row_begin * cols;  // Y_e [rows, N] or dX_e [rows, K]
  g->ldc = cols;
  return true;
}

// ---- the BF16 tensor-core block (grouped_gemm_bf16.cu; tests/gpu replays it on the CPU) -
//
// The block's 8 warps share the 64x64 output tile as 4 x 4 wmma fragments of 16 x 16, two
// per warp. Each 64-deep K step loads both operand tiles into shared memory as BF16, zero
// outside the operand (rows past the tile's rows, columns past N or K, depth past K or the
// expert's rows), so partial tiles need no predication in the tensor-core loop. An operand
// tile is stored with the dimension that is contiguous in global memory contiguous in shared
// memory too (K-major: [r][k], else [k][r], rows of kGroupedTcLd), so 16-byte global loads
// become 16-byte shared stores either way; the wmma layout of each operand is chosen to match.

constexpr int kGroupedTcTileK = 64;  // reduction depth per shared-memory step
constexpr int kGroupedTcFrag = 16;   // wmma m16n16k16
constexpr int kGroupedTcWarps = kGroupedThreads / 32;
constexpr int kGroupedTcVec = 8;  // BF16 elements per 16-byte load
// Shared row length of an operand tile (BF16 elements): 8 elements of padding put the 16-byte
// rows that one wmma load reads on distinct bank groups, and keep ldm a multiple of 8.
constexpr int kGroupedTcLd = kGroupedTcTileK + 8;
constexpr int kGroupedTcTileElems = kGroupedTileM * kGroupedTcLd;
constexpr int kGroupedTcCLd = kGroupedTileN + 4;  // FP32 output tile row (multiple of 4)
// Output fragments along each edge of the tile, and per warp.
constexpr int kGroupedTcFragEdge = kGroupedTileM / kGroupedTcFrag;
constexpr int kGroupedTcFragsPerWarp = kGroupedTcFragEdge * kGroupedTcFragEdge / kGroupedTcWarps;
// Vector loads per operand tile, per row of the tile.
constexpr int kGroupedTcRowVecs = kGroupedTcTileK / kGroupedTcVec;
constexpr int kGroupedTcTileVecs = kGroupedTileM * kGroupedTcRowVecs;
static_assert(kGroupedTileM == kGroupedTileN && kGroupedTileM == kGroupedTcTileK,
              "operand tiles are square, [r][k] and [k][r] share one shape and one loader");
static_assert(kGroupedTileM % kGroupedTcFrag == 0 && kGroupedTcTileK % kGroupedTcFrag == 0,
              "whole fragments per tile");
static_assert(kGroupedTcFragEdge * kGroupedTcFragEdge == kGroupedTcWarps * kGroupedTcFragsPerWarp,
              "every output fragment owned by one warp");
static_assert(kGroupedTcFragsPerWarp == 2 && kGroupedTcWarps == 2 * kGroupedTcFragEdge,
              "warp w: fragment row w % 4, fragment columns 2 (w / 4) and 2 (w / 4) + 1");
static_assert(kGroupedTcLd % 8 == 0, "wmma: ldm a multiple of 8 for 16-bit elements");
static_assert((kGroupedTcLd * 2) % 16 == 0, "16-byte shared stores stay 16-byte aligned");
static_assert(kGroupedTcCLd % 4 == 0, "wmma: ldm a multiple of 4 for float");
static_assert(kGroupedTcTileVecs % kGroupedThreads == 0, "tile loads split evenly");
static_assert(kGroupedTcTileK % kGroupedTcVec == 0 && kGroupedTileM % kGroupedTcVec == 0,
              "16-byte groups never straddle a tile row");

// Shared index of op(r, k) (r along the output edge, k along the reduction) in an operand tile.
__host__ __device__ constexpr int GroupedTcAt(bool k_major, int r, int k) {
  return k_major ? r * kGroupedTcLd + k : k * kGroupedTcLd + r;
}
// Vector load v of a tile covers elements [inner, inner + 8) of tile row `outer` (outer = r
// for K-major operands, else k) and lands at shared index outer * kGroupedTcLd + inner.
__host__ __device__ constexpr int GroupedTcVecOuter(int v) { return v / kGroupedTcRowVecs; }
__host__ __device__ constexpr int GroupedTcVecInner(int v) {
  return (v % kGroupedTcRowVecs) * kGroupedTcVec;
}
// wmma layouts that read element (r, k) of an operand tile at GroupedTcAt from the fragment's
// pointer GroupedTcAt(k_major, r0, k0) with ldm kGroupedTcLd. matrix_a (m, k) row-major reads
// ptr[m * ldm + k]; matrix_b (k, n) row-major reads ptr[k * ldm + n]; col-major the swap.
__host__ __device__ constexpr bool GroupedTcARowMajor(bool k_major) { return k_major; }
__host__ __device__ constexpr bool GroupedTcBRowMajor(bool k_major) { return !k_major; }
// Warp w's output fragments (fragment row, fragment column), j < kGroupedTcFragsPerWarp.
__host__ __device__ constexpr int GroupedTcWarpFragRow(int warp) {
  return warp % kGroupedTcFragEdge;
}
__host__ __device__ constexpr int GroupedTcWarpFragCol(int warp, int j) {
  return (warp / kGroupedTcFragEdge) * kGroupedTcFragsPerWarp + j;
}
static_assert(GroupedTcAt(true, 16, 16) % 16 == 0 && GroupedTcAt(false, 16, 16) % 16 == 0,
              "wmma: fragment pointers 32-byte aligned (16 BF16 elements)");

// ---- the FP8 variant (grouped_gemm_fp8.cu): DeepSeek-V3's block scaling --------------
//
// Forward and data grad with E4M3 operands: the same block, the codes widened to BF16 in
// shared memory (every E4M3 value is exact in BF16), and FP32 promotion per 128-wide chunk
// of the reduction as kernels/quantize.h Fp8Gemm does it: y = fma(sa * sw, chunk, y), chunk the
// FP32 sum of the chunk's code products, sa the row's 1x128 activation scale, sw the 128x128
// weight block's. A 64-wide output tile lies inside one 128-wide weight block, so sw is one
// value per (block, chunk). After each chunk a warp stages its two fragments in shared memory
// ([kGroupedTcFragsPerWarp][16][16] row-major) and lane l promotes the staged elements
// l + 32 i, i < kGroupedTcStagePerLane, into its own FP32 registers.

constexpr int kGroupedFp8Chunk = 128;  // kernels/quantize.h kQuantTile
constexpr int kGroupedTcStage = kGroupedTcFragsPerWarp * kGroupedTcFrag * kGroupedTcFrag;
constexpr int kGroupedTcStagePerLane = kGroupedTcStage / 32;
static_assert(kGroupedTcStage % 32 == 0, "staged elements split evenly over a warp");
static_assert(kGroupedFp8Chunk % kGroupedTcTileK == 0, "a chunk is whole K steps");
static_assert(kGroupedFp8Chunk % kGroupedTileN == 0,
              "an output tile's columns lie in one 128-wide weight block");

// Tile row and column of staged element e (0 <= e < kGroupedTcStage) of warp `warp`.
__host__ __device__ constexpr int GroupedTcStageRow(int warp, int e) {
  return GroupedTcWarpFragRow(warp) * kGroupedTcFrag +
         (e % (kGroupedTcFrag * kGroupedTcFrag)) / kGroupedTcFrag;
}
__host__ __device__ constexpr int GroupedTcStageCol(int warp, int e) {
  return GroupedTcWarpFragCol(warp, e / (kGroupedTcFrag * kGroupedTcFrag)) * kGroupedTcFrag +
         e % kGroupedTcFrag;
}

// Row stride of one expert's weight scales [ceil(N/128), WeightScaleLd(K)] (fp8_quant.h's
// BLK128x128_32F layout, padded to 4 columns) and their count per expert.
__host__ __device__ inline int64_t GroupedFp8WeightScaleLd(int64_t k) {
  return ((k + kGroupedFp8Chunk - 1) / kGroupedFp8Chunk + 3) / 4 * 4;
}
__host__ __device__ inline int64_t GroupedFp8WeightScalesPerExpert(int64_t n, int64_t k) {
  return (n + kGroupedFp8Chunk - 1) / kGroupedFp8Chunk * GroupedFp8WeightScaleLd(k);
}
// Index into w_scales [E, ceil(N/128), WeightScaleLd(K)] of the block that scales output
// column `col` (N for the forward, K for the data grad) in reduction chunk t. Forward:
// W_e's block (col / 128, t). Data grad: W_e^T's block (col / 128, t), which is W_e's
// (t, col / 128): the transpose moves codes and scales exactly (fp8_quant.h TransposeWeight).
__host__ __device__ inline int64_t GroupedFp8WeightScaleIndex(GroupedGemmKind kind,
                                                              const GroupedGemmShape& s,
                                                              int32_t expert, int64_t col,
                                                              int64_t t) {
  const int64_t ld = GroupedFp8WeightScaleLd(s.k), cb = col / kGroupedFp8Chunk;
  const int64_t base = int64_t(expert) * GroupedFp8WeightScalesPerExpert(s.n, s.k);
  return base + (kind == GroupedGemmKind::kForward ? cb * ld + t : t * ld + cb);
}

// ---- the FP8 weight gradient: token chunks ---------------------------------------------
//
// dW_e += Q(dY_e^T) Q(X_e^T) reduces over the expert's tokens, and the recipe tiles both
// operands 128x1 along them, restarting at the expert's first row (kernels/backend.cc's
// per-expert Fp8LinearBackwardWeight). So the operands are re-quantised per (expert, 128-row
// chunk, column), transposed: "chunk layout" [C, ld] codes with scales [chunks, C], where
// expert e's local row r sits at column GroupedFp8ChunkBase(e) * 128 + r, and its chunk t
// has id GroupedFp8ChunkBase(e) + t. The bases need no scan:
//   base(e) = offsets[e] / 128 + e
// is strictly increasing and leaves room for ceil(M_e / 128) chunks before base(e + 1)
// (floor(a / 128) + ceil(M / 128) <= floor((a + M) / 128) + 1), and the last id is below
// rows / 128 + E: GroupedFp8Chunks. Each expert's first column is 128-aligned, so the GEMM
// takes both operands K-major with 8-code loads; unused columns are never read (the
// reduction stops at M_e, and the loader zero-fills past it).
__host__ __device__ inline int64_t GroupedFp8ChunkBase(const int32_t* offsets, int64_t e) {
  return int64_t(offsets[e]) / kGroupedFp8Chunk + e;
}
inline int64_t GroupedFp8Chunks(int64_t rows, int64_t experts) {
  return rows / kGroupedFp8Chunk + experts;
}
// Chunk id -> (expert, chunk of that expert); false for an id no expert uses.
__host__ __device__ inline bool GroupedFp8ChunkOf(const int32_t* offsets, int64_t experts,
                                                  int64_t id, int32_t* expert, int32_t* chunk) {
  if (id < 0 || experts <= 0 || id < GroupedFp8ChunkBase(offsets, 0)) return false;
  int64_t lo = 0, hi = experts - 1;  // the largest e with base(e) <= id
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (GroupedFp8ChunkBase(offsets, mid) <= id) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  const int64_t t = id - GroupedFp8ChunkBase(offsets, lo);
  if (t * kGroupedFp8Chunk >= int64_t(offsets[lo + 1]) - offsets[lo]) return false;
  *expert = int32_t(lo);
  *chunk = int32_t(t);
  return true;
}

// Block (bx, by, bz = expert) of the FP8 weight gradient over operands in chunk layout with
// row stride ld: A = dY^T chunks (m: N, k: token) and B = X^T chunks (n: K, k: token), both
// K-major; the grid is GroupedGrid's kWeightGrad grid. False for an empty expert.
__host__ __device__ inline bool GroupedFp8WgradBlockFor(const GroupedGemmShape& s,
                                                        const int32_t* offsets, int64_t ld,
                                                        int64_t bx, int64_t by, int64_t bz,
                                                        GroupedBlockGemm* g) {
  const int64_t rows = int64_t(offsets[bz + 1]) - offsets[bz];
  if (rows <= 0) return false;
  const int64_t col = GroupedFp8ChunkBase(offsets, bz) * kGroupedFp8Chunk;
  g->a_offset = col;  // dY_e^T [N, M_e] at column col of [N, ld]
  g->lda = ld;
  g->a_rows = s.n;
  g->m0 = by * kGroupedTileM;
  g->b_offset = col;  // X_e^T [K, M_e]
  g->ldb = ld;
  g->b_rows = s.k;
  g->n0 = bx * kGroupedTileN;
  g->depth = rows;
  g->c_offset = bz * s.n * s.k;  // dW_e [N, K]
  g->ldc = s.k;
  return true;
}

// ---- launchers (offsets [E + 1] on the device) ----------------------------------------

// y [rows, N] (rows of expert e) = x [rows, K] (rows of e) W_e^T, w [E, N, K]. The uint16_t
// (BF16) overloads run on tensor cores (grouped_gemm_bf16.cu), the float ones on CUDA cores.
void GroupedGemmForward(const float* x, const float* w, float* y, const int32_t* offsets,
                        const GroupedGemmShape& shape, cudaStream_t stream);
void GroupedGemmForward(const uint16_t* x, const uint16_t* w, float* y, const int32_t* offsets,
                        const GroupedGemmShape& shape, cudaStream_t stream);
void GroupedGemmForward(const uint16_t* x, const uint16_t* w, uint16_t* y, const int32_t* offsets,
                        const GroupedGemmShape& shape, cudaStream_t stream);

// dx [rows, K] (rows of e) = dy [rows, N] (rows of e) W_e, w [E, N, K].
void GroupedGemmDataGrad(const float* dy, const float* w, float* dx, const int32_t* offsets,
                         const GroupedGemmShape& shape, cudaStream_t stream);
void GroupedGemmDataGrad(const uint16_t* dy, const uint16_t* w, float* dx, const int32_t* offsets,
                         const GroupedGemmShape& shape, cudaStream_t stream);
void GroupedGemmDataGrad(const uint16_t* dy, const uint16_t* w, uint16_t* dx,
                         const int32_t* offsets, const GroupedGemmShape& shape,
                         cudaStream_t stream);

// dw [E, N, K] += dy_e^T [N, M_e] x_e [M_e, K] (FP32 gradient; an empty expert adds nothing).
// Each output element is owned by one thread: the result repeats run to run.
void GroupedGemmWeightGrad(const float* dy, const float* x, float* dw, const int32_t* offsets,
                           const GroupedGemmShape& shape, cudaStream_t stream);
void GroupedGemmWeightGrad(const uint16_t* dy, const uint16_t* x, float* dw, const int32_t* offsets,
                           const GroupedGemmShape& shape, cudaStream_t stream);

// E4M3 expert GEMMs with DeepSeek-V3's block scaling (the FP8 variant above), offsets on the
// device. a_scales [ceil(depth/128), rows] (VEC128_32F: 1x128 tiles of the rows along the
// reduction), w [E, N, K] codes with w_scales [E, ceil(N/128), WeightScaleLd(K)] (each
// expert's W_e quantised on its own 128x128 grid). Rows past offsets[E] are not written.
//   forward:   y [rows, N]  = x [rows, K] (codes) W_e^T, x_scales [ceil(K/128), rows]
//   data grad: dx [rows, K] = dy [rows, N] (codes) W_e, dy_scales [ceil(N/128), rows]
void GroupedFp8GemmForward(const uint8_t* x, const float* x_scales, const uint8_t* w,
                           const float* w_scales, float* y, const int32_t* offsets,
                           const GroupedGemmShape& shape, cudaStream_t stream);
void GroupedFp8GemmDataGrad(const uint8_t* dy, const float* dy_scales, const uint8_t* w,
                            const float* w_scales, float* dx, const int32_t* offsets,
                            const GroupedGemmShape& shape, cudaStream_t stream);

// The FP8 weight gradient's operands: src [rows, C] (rows of expert e at offsets[e]) ->
// chunk layout codes_t [C, ld] and scales_t [GroupedFp8Chunks(rows, E), C], each (expert,
// chunk, column) run quantised as kernels/quantize.h QuantizeActivation quantises a row of
// the expert's transposed rows. The source is FP32 values (src_scales null) or E4M3 codes
// with 1x128 scales along C, src_scales [ceil(C/128), rows], dequantised first as
// RetileTransposed does. ld >= rows + (E - 1) * 128 (GroupedFp8Chunks(rows, E) * 128 is).
void GroupedFp8QuantizeChunks(const float* src, const uint8_t* src_codes, const float* src_scales,
                              uint8_t* codes_t, float* scales_t, int64_t ld, const int32_t* offsets,
                              const GroupedGemmShape& shape, int64_t C, bool pow2_scales,
                              cudaStream_t stream);
// dw [E, N, K] += per expert dY_e^T X_e from the chunk layouts: dy_t [N, ld] with dy_scales
// [chunks, N], x_t [K, ld] with x_scales [chunks, K]; promoted per chunk as
// kernels/quantize.h Fp8GemmTokenTiled does, y = fma(sa * sb, chunk, y), then added to dw.
void GroupedFp8GemmWeightGrad(const uint8_t* dy_t, const float* dy_scales, const uint8_t* x_t,
                              const float* x_scales, int64_t ld, float* dw, const int32_t* offsets,
                              const GroupedGemmShape& shape, cudaStream_t stream);

namespace ref {
// CPU references (host arrays, offsets on the host), double accumulation; BF16 callers
// widen their operands to float first.
void GroupedGemmForward(const float* x, const float* w, float* y, const int32_t* offsets,
                        const GroupedGemmShape& shape);
void GroupedGemmDataGrad(const float* dy, const float* w, float* dx, const int32_t* offsets,
                         const GroupedGemmShape& shape);
void GroupedGemmWeightGrad(const float* dy, const float* x, float* dw, const int32_t* offsets,
                           const GroupedGemmShape& shape);
}  // namespace ref

}  // namespace mt::cuda

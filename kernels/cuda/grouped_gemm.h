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
// FP32 in / FP32 out (checked at 1e-5), BF16 in (uint16_t bits) with FP32 accumulation and
// FP32 or BF16 out. The kernel is a plain shared-memory tiled one (64x64 output tiles, 32-deep
// K steps, 4x4 outputs per thread); tensor cores, TMA and split-K for the weight gradient are
// for the tuning pass on a GPU. Rows past offsets[E] (when offsets[E] < rows) are not written.
// Offsets must be non-decreasing with offsets[0] >= 0 and offsets[E] <= rows.
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

// ---- launchers (offsets [E + 1] on the device) ----------------------------------------

// y [rows, N] (rows of expert e) = x [rows, K] (rows of e) W_e^T, w [E, N, K].
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

// kernels/cuda/grouped_gemm.cuh: what the grouped GEMM kernels of grouped_gemm.cu (FP32, CUDA
// cores) and grouped_gemm_bf16.cu (BF16, tensor cores) share beyond grouped_gemm.h: the
// in-block prefix over the experts' row tiles, and the host-side shape and grid checks.
#pragma once

#include <cub/block/block_scan.cuh>

#include <cstdint>
#include <cstdio>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/grouped_gemm.h"

namespace mt::cuda {

// prefix [E + 1] (shared memory) = GroupedTilePrefix of the device offsets [E + 1]. Every block
// recomputes it (E <= 1024 reads of offsets, one block scan): no workspace, no extra launch,
// and nothing for the host to read. Call from all kGroupedThreads threads; ends in a barrier.
__device__ __forceinline__ void GroupedBlockPrefix(const int32_t* __restrict__ offsets,
                                                   int64_t experts, int32_t* prefix) {
  using Scan = cub::BlockScan<int32_t, kGroupedThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
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
}

// Thread 0 of each block traps (after saying why) on offsets outside [0, rows]: the schedule
// sizes the grid and bounds every read and write by them, so bad offsets would otherwise read
// and write past the buffers silently. Two reads per block; monotonicity is not checked.
__device__ __forceinline__ void GroupedCheckOffsets(const int32_t* __restrict__ offsets,
                                                    const GroupedGemmShape& s) {
  if (threadIdx.x != 0) return;
  const int32_t first = offsets[0], last = offsets[s.experts];
  if (first < 0 || last < first || last > s.rows) {
    printf("grouped GEMM: offsets[0] = %d, offsets[E] = %d outside [0, rows = %lld]\n", first, last,
           static_cast<long long>(s.rows));
    __trap();
  }
}

// The launch grid of `kind` for `shape`, after checking both; false when there is nothing to
// launch (no rows).
inline bool GroupedCheckedGrid(GroupedGemmKind kind, const GroupedGemmShape& s, int64_t grid[3]) {
  CUDA_HOST_CHECK(s.experts >= 1 && s.experts <= kGroupedMaxExperts,
                  "grouped GEMM: 1..kGroupedMaxExperts experts");
  CUDA_HOST_CHECK(s.rows >= 0 && s.n >= 1 && s.k >= 1, "grouped GEMM: bad shape");
  CUDA_HOST_CHECK(s.rows < (int64_t(1) << 31), "grouped GEMM: offsets are int32");
  if (s.rows == 0) return false;
  GroupedGrid(kind, s, grid);
  CUDA_HOST_CHECK(grid[0] < (int64_t(1) << 31) && grid[1] <= 65535 && grid[2] <= 65535,
                  "grouped GEMM: grid too large");
  return true;
}

}  // namespace mt::cuda

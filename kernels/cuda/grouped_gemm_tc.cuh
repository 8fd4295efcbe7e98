// kernels/cuda/grouped_gemm_tc.cuh: the tensor-core K step that grouped_gemm_bf16.cu and
// grouped_gemm_fp8.cu share. Both stage BF16 operand tiles in shared memory (the FP8 kernel
// widens its E4M3 codes exactly) and run the same wmma fragments over them, so the fragment
// layouts and the warp -> fragment map (grouped_gemm.h, replayed on the CPU by
// tests/gpu/grouped_gemm_schedule_test.cc) are used in one place.
#pragma once

#include <cuda_bf16.h>
#include <mma.h>

#include <type_traits>

#include "kernels/cuda/grouped_gemm.h"

namespace mt::cuda {

// The wmma types of one kernel kind (GroupedAKMajor / GroupedBKMajor of its operands).
template <bool kAKMajor, bool kBKMajor>
struct GroupedTc {
  using ALayout = std::conditional_t<GroupedTcARowMajor(kAKMajor), nvcuda::wmma::row_major,
                                     nvcuda::wmma::col_major>;
  using BLayout = std::conditional_t<GroupedTcBRowMajor(kBKMajor), nvcuda::wmma::row_major,
                                     nvcuda::wmma::col_major>;
  using Acc = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, kGroupedTcFrag, kGroupedTcFrag,
                                     kGroupedTcFrag, float>;

  // acc[j] += this warp's fragment products over one staged K step of kGroupedTcTileK:
  // A's fragment row GroupedTcWarpFragRow(warp), B's columns GroupedTcWarpFragCol(warp, j),
  // from sa / sb [kGroupedTileM][kGroupedTcLd] (BF16).
  __device__ __forceinline__ static void MmaStep(const __nv_bfloat16* sa,
                                                 const __nv_bfloat16* sb, int warp,
                                                 Acc (&acc)[kGroupedTcFragsPerWarp]) {
    namespace wmma = nvcuda::wmma;
    constexpr int kFrag = kGroupedTcFrag;
    const int frag_row = GroupedTcWarpFragRow(warp);
#pragma unroll
    for (int kk = 0; kk < kGroupedTcTileK; kk += kFrag) {
      wmma::fragment<wmma::matrix_a, kFrag, kFrag, kFrag, __nv_bfloat16, ALayout> fa;
      wmma::load_matrix_sync(fa, sa + GroupedTcAt(kAKMajor, frag_row * kFrag, kk), kGroupedTcLd);
#pragma unroll
      for (int j = 0; j < kGroupedTcFragsPerWarp; ++j) {
        wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, __nv_bfloat16, BLayout> fb;
        wmma::load_matrix_sync(
            fb, sb + GroupedTcAt(kBKMajor, GroupedTcWarpFragCol(warp, j) * kFrag, kk),
            kGroupedTcLd);
        wmma::mma_sync(acc[j], fa, fb, acc[j]);
      }
    }
  }
};

}  // namespace mt::cuda

// kernels/cuda/grouped_gemm_bf16.cu: the BF16 grouped expert GEMMs of grouped_gemm.h on
// tensor cores (nvcuda::wmma m16n16k16, BF16 operands, FP32 accumulators; sm_80+).
//
// Same schedule and semantics as the FP32 kernel of grouped_gemm.cu: each block finds its
// (expert, row tile) from the device offsets (GroupedBlockPrefix, GroupedBlockFor), computes
// one 64x64 output tile, stores it (forward, data grad; FP32 or BF16 out) or adds it into the
// FP32 weight gradient (one owner per element: no atomics, the result repeats run to run).
// The tile geometry (shared layouts, loader slots, wmma layouts, warp -> fragment map) lives
// in grouped_gemm.h so that tests/gpu/grouped_gemm_schedule_test.cc can replay this kernel's
// data movement on the CPU.
//
// Operand layouts per kind (GroupedAKMajor / GroupedBKMajor):
//   forward      A = X_e  (r: row, k: K)  K-major     B = W_e  (r: n, k: K)      K-major
//   data grad    A = dY_e (r: row, k: N)  K-major     B = W_e  (r: k_out, k: N)  not
//   weight grad  A = dY_e (r: n, k: row)  not         B = X_e  (r: k_out, k: row) not
#include <cuda_bf16.h>
#include <mma.h>

#include <cstdint>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/grouped_gemm.cuh"
#include "kernels/cuda/grouped_gemm.h"
#include "kernels/cuda/grouped_gemm_tc.cuh"

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "grouped_gemm_bf16.cu: BF16 wmma fragments need sm_80 or newer"
#endif

namespace mt::cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kTile = kGroupedTileM;  // output tile edge and K step (grouped_gemm.h asserts)
constexpr int kFrag = kGroupedTcFrag;
constexpr int kLoadsPerThread = kGroupedTcTileVecs / kGroupedThreads;

// Shared memory of one block: the two operand tiles during the K loop, then the FP32 output
// tile, which reuses their bytes once the K loop's last barrier has released them.
constexpr int kOperandBytes = 2 * kGroupedTcTileElems * int(sizeof(uint16_t));
constexpr int kOutputBytes = kGroupedTileM * kGroupedTcCLd * int(sizeof(float));
constexpr int kSmemBytes = kOperandBytes > kOutputBytes ? kOperandBytes : kOutputBytes;
static_assert((kGroupedTcTileElems * sizeof(uint16_t)) % 32 == 0,
              "the B tile starts 32-byte aligned (wmma fragment pointers)");
static_assert((kFrag * kGroupedTcCLd * sizeof(float)) % 32 == 0 &&
                  (kFrag * sizeof(float)) % 32 == 0,
              "output fragment pointers 32-byte aligned");
static_assert(sizeof(__nv_bfloat16) == sizeof(uint16_t), "BF16 bits read as __nv_bfloat16");

__device__ __forceinline__ void StoreOut(float* p, float v) { *p = v; }
__device__ __forceinline__ void StoreOut(uint16_t* p, float v) { *p = FloatToBf16(v); }

// s [kTile][kGroupedTcLd] (BF16 bits) = the operand tile: op(r0 + r, k0 + k) at
// GroupedTcAt(kKMajor, r, k), zero outside [0, r_lim) x [0, k_lim), where
// op(r, k) = p[kKMajor ? r * ld + k : k * ld + r]. A tile row ("outer": r if K-major, else k)
// is contiguous in memory along "inner"; consecutive threads take consecutive 8-element groups
// of a row, so the global reads coalesce. `vec` (block-uniform): p is 16-byte aligned and ld
// a multiple of 8, so a group that lies wholly inside the operand is one aligned 16-byte load
// (inner0 = k0 or r0 is a multiple of 64); other groups are read element by element.
template <bool kKMajor>
__device__ __forceinline__ void LoadTcTile(const uint16_t* __restrict__ p, int64_t ld,
                                           int64_t r_lim, int64_t k_lim, int64_t r0, int64_t k0,
                                           bool vec, uint16_t* s) {
  const int64_t outer0 = kKMajor ? r0 : k0, outer_lim = kKMajor ? r_lim : k_lim;
  const int64_t inner0 = kKMajor ? k0 : r0, inner_lim = kKMajor ? k_lim : r_lim;
#pragma unroll
  for (int i = 0; i < kLoadsPerThread; ++i) {
    const int v = int(threadIdx.x) + i * kGroupedThreads;
    const int64_t outer = outer0 + GroupedTcVecOuter(v);
    const int64_t inner = inner0 + GroupedTcVecInner(v);
    uint4 bits = make_uint4(0u, 0u, 0u, 0u);
    if (outer < outer_lim) {
      const uint16_t* src = p + outer * ld + inner;
      if (vec && inner + kGroupedTcVec <= inner_lim) {
        bits = *reinterpret_cast<const uint4*>(src);
      } else {
        uint32_t w[kGroupedTcVec / 2];
#pragma unroll
        for (int j = 0; j < kGroupedTcVec / 2; ++j) {
          // Element 2j in the low half: the byte order of the 16-byte load above.
          const uint32_t lo = inner + 2 * j < inner_lim ? src[2 * j] : 0u;
          const uint32_t hi = inner + 2 * j + 1 < inner_lim ? src[2 * j + 1] : 0u;
          w[j] = lo | (hi << 16);
        }
        bits = make_uint4(w[0], w[1], w[2], w[3]);
      }
    }
    *reinterpret_cast<uint4*>(s + GroupedTcVecOuter(v) * kGroupedTcLd + GroupedTcVecInner(v)) =
        bits;
  }
}
static_assert(kGroupedTcVec == 8, "the element-wise path packs 8 elements into one uint4");

template <typename TOut, GroupedGemmKind kKind>
__global__ void __launch_bounds__(kGroupedThreads)
    GroupedGemmTcKernel(const uint16_t* __restrict__ a, const uint16_t* __restrict__ b,
                        TOut* __restrict__ c, const int32_t* __restrict__ offsets,
                        GroupedGemmShape shape) {
  constexpr bool kRowGrouped = kKind != GroupedGemmKind::kWeightGrad;
  constexpr bool kAKMajor = GroupedAKMajor(kKind), kBKMajor = GroupedBKMajor(kKind);
  static_assert(kRowGrouped || std::is_same<TOut, float>::value, "dW is FP32");
  using Tc = GroupedTc<kAKMajor, kBKMajor>;
  __shared__ int32_t prefix[kRowGrouped ? kGroupedMaxExperts + 1 : 1];  // [E + 1] tile prefix
  __shared__ __align__(128) unsigned char smem[kSmemBytes];
  GroupedCheckOffsets(offsets, shape);
  if constexpr (kRowGrouped) GroupedBlockPrefix(offsets, shape.experts, prefix);
  GroupedBlockGemm g;
  // Blocks past the last row tile and empty experts' weight gradients have nothing to do;
  // uniform over the block, so no barrier below is left waiting.
  if (!GroupedBlockFor(kKind, shape, offsets, prefix, blockIdx.x, blockIdx.y, blockIdx.z, &g))
    return;
  uint16_t* sa = reinterpret_cast<uint16_t*>(smem);  // [kTile][kGroupedTcLd] A tile
  uint16_t* sb = sa + kGroupedTcTileElems;           // [kTile][kGroupedTcLd] B tile
  const auto* fa_base = reinterpret_cast<const __nv_bfloat16*>(sa);
  const auto* fb_base = reinterpret_cast<const __nv_bfloat16*>(sb);
  const uint16_t* a_blk = a + g.a_offset;
  const uint16_t* b_blk = b + g.b_offset;
  const bool a_vec =
      g.lda % kGroupedTcVec == 0 && reinterpret_cast<uintptr_t>(a_blk) % sizeof(uint4) == 0;
  const bool b_vec =
      g.ldb % kGroupedTcVec == 0 && reinterpret_cast<uintptr_t>(b_blk) % sizeof(uint4) == 0;

  const int warp = int(threadIdx.x) / 32;
  const int frag_row = GroupedTcWarpFragRow(warp);
  typename Tc::Acc acc[kGroupedTcFragsPerWarp];
#pragma unroll
  for (int j = 0; j < kGroupedTcFragsPerWarp; ++j) wmma::fill_fragment(acc[j], 0.0f);

  for (int64_t k0 = 0; k0 < g.depth; k0 += kGroupedTcTileK) {
    LoadTcTile<kAKMajor>(a_blk, g.lda, g.a_rows, g.depth, g.m0, k0, a_vec, sa);
    LoadTcTile<kBKMajor>(b_blk, g.ldb, g.b_rows, g.depth, g.n0, k0, b_vec, sb);
    __syncthreads();
    Tc::MmaStep(fa_base, fb_base, warp, acc);
    __syncthreads();  // the next step (or the output tile) overwrites sa / sb
  }

  float* sc = reinterpret_cast<float*>(smem);  // [kTile][kGroupedTcCLd] FP32 output tile
#pragma unroll
  for (int j = 0; j < kGroupedTcFragsPerWarp; ++j) {
    wmma::store_matrix_sync(
        sc + frag_row * kFrag * kGroupedTcCLd + GroupedTcWarpFragCol(warp, j) * kFrag, acc[j],
        kGroupedTcCLd, wmma::mem_row_major);
  }
  __syncthreads();
  // Consecutive threads take consecutive columns of a row: coalesced stores.
  TOut* c_block = c + g.c_offset;
  for (int idx = int(threadIdx.x); idx < kTile * kTile; idx += kGroupedThreads) {
    const int mm = idx / kTile, nn = idx % kTile;
    const int64_t m = g.m0 + mm, n = g.n0 + nn;
    if (m >= g.a_rows || n >= g.b_rows) continue;
    const float v = sc[mm * kGroupedTcCLd + nn];
    if constexpr (kRowGrouped) {
      StoreOut(c_block + m * g.ldc + n, v);
    } else {
      c_block[m * g.ldc + n] += v;  // one owner per element: no atomics
    }
  }
}

template <GroupedGemmKind kKind, typename TOut>
void LaunchTc(const uint16_t* a, const uint16_t* b, TOut* c, const int32_t* offsets,
              const GroupedGemmShape& shape, cudaStream_t stream) {
  int64_t grid[3];
  if (!GroupedCheckedGrid(kKind, shape, grid)) return;
  GroupedGemmTcKernel<TOut, kKind><<<dim3(unsigned(grid[0]), unsigned(grid[1]), unsigned(grid[2])),
                                     kGroupedThreads, 0, stream>>>(a, b, c, offsets, shape);
  CUDA_CHECK_LAUNCH();
}

constexpr auto kFwd = GroupedGemmKind::kForward;
constexpr auto kDgrad = GroupedGemmKind::kDataGrad;
constexpr auto kWgrad = GroupedGemmKind::kWeightGrad;

}  // namespace

void GroupedGemmForward(const uint16_t* x, const uint16_t* w, float* y, const int32_t* offsets,
                        const GroupedGemmShape& shape, cudaStream_t stream) {
  LaunchTc<kFwd>(x, w, y, offsets, shape, stream);
}
void GroupedGemmForward(const uint16_t* x, const uint16_t* w, uint16_t* y, const int32_t* offsets,
                        const GroupedGemmShape& shape, cudaStream_t stream) {
  LaunchTc<kFwd>(x, w, y, offsets, shape, stream);
}

void GroupedGemmDataGrad(const uint16_t* dy, const uint16_t* w, float* dx, const int32_t* offsets,
                         const GroupedGemmShape& shape, cudaStream_t stream) {
  LaunchTc<kDgrad>(dy, w, dx, offsets, shape, stream);
}
void GroupedGemmDataGrad(const uint16_t* dy, const uint16_t* w, uint16_t* dx,
                         const int32_t* offsets, const GroupedGemmShape& shape,
                         cudaStream_t stream) {
  LaunchTc<kDgrad>(dy, w, dx, offsets, shape, stream);
}

void GroupedGemmWeightGrad(const uint16_t* dy, const uint16_t* x, float* dw, const int32_t* offsets,
                           const GroupedGemmShape& shape, cudaStream_t stream) {
  LaunchTc<kWgrad>(dy, x, dw, offsets, shape, stream);
}

}  // namespace mt::cuda

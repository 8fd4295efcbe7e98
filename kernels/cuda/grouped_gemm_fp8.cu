// kernels/cuda/grouped_gemm_fp8.cu: the E4M3 grouped expert GEMMs (forward and data grad) of
// grouped_gemm.h with DeepSeek-V3's block scaling, offsets read on the device only.
//
// The block is grouped_gemm_bf16.cu's (same schedule, tile geometry, wmma m16n16k16 with
// FP32 accumulators, zero-filled edges) with two differences: the operand tiles are E4M3 codes
// widened to BF16 while they are stored to shared memory (exact: an E4M3 value has 4
// significant bits and an exponent BF16 covers), and the accumulators are promoted per
// 128-wide chunk of the reduction with the chunk's scales, as kernels/quantize.h Fp8Gemm
// does: y = fma(sa * sw, chunk, y). So the result is the CPU's sum of the same exact
// products, in another order within each chunk. Unlike the per-expert host loop of
// kernels/backend.cc this needs no copy of the offsets to the host.
//
//   forward      A = X_e codes  (r: row, k: K)  K-major   B = W_e codes (r: n, k: K)      K-major
//   data grad    A = dY_e codes (r: row, k: N)  K-major   B = W_e codes (r: k_out, k: N)  not
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
#error "grouped_gemm_fp8.cu: BF16 wmma fragments need sm_80 or newer"
#endif

namespace mt::cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kFrag = kGroupedTcFrag;
constexpr int kLoadsPerThread = kGroupedTcTileVecs / kGroupedThreads;
constexpr int kOperandElems = 2 * kGroupedTcTileElems;  // the A and B tiles, BF16 bits
static_assert((kGroupedTcTileElems * sizeof(uint16_t)) % 32 == 0,
              "the B tile starts 32-byte aligned (wmma fragment pointers)");
static_assert((kOperandElems * sizeof(uint16_t)) % 32 == 0 &&
                  (kGroupedTcStage * sizeof(float)) % 32 == 0 &&
                  (kFrag * kFrag * sizeof(float)) % 32 == 0,
              "staging fragment pointers 32-byte aligned");
static_assert(kGroupedTcVec == 8, "8 codes per 8-byte load, packed into one uint4");
static_assert(kGroupedFp8Chunk == kQuantTile, "chunks are the quantisation tiles");

// The BF16 bits of E4M3 code `code`: the float is exact and has at most 4 significant bits,
// so its upper half is the BF16 value (NaN codes give a NaN).
__device__ __forceinline__ uint32_t CodeToBf16(uint32_t code) {
  return __float_as_uint(E4M3ToFloat(uint8_t(code))) >> 16;
}

// s [kGroupedTileM][kGroupedTcLd] (BF16 bits) = the operand tile of codes, widened:
// op(r0 + r, k0 + k) at GroupedTcAt(kKMajor, r, k), zero outside [0, r_lim) x [0, k_lim), where
// op(r, k) = p[kKMajor ? r * ld + k : k * ld + r]. grouped_gemm_bf16.cu's LoadTcTile with
// 8-byte loads of 8 codes: `vec` (block-uniform) says p is 8-byte aligned and ld a multiple
// of 8, so an in-range group is one aligned load (inner0 is a multiple of 64).
template <bool kKMajor>
__device__ __forceinline__ void LoadFp8Tile(const uint8_t* __restrict__ p, int64_t ld,
                                            int64_t r_lim, int64_t k_lim, int64_t r0, int64_t k0,
                                            bool vec, uint16_t* s) {
  const int64_t outer0 = kKMajor ? r0 : k0, outer_lim = kKMajor ? r_lim : k_lim;
  const int64_t inner0 = kKMajor ? k0 : r0, inner_lim = kKMajor ? k_lim : r_lim;
#pragma unroll
  for (int i = 0; i < kLoadsPerThread; ++i) {
    const int v = int(threadIdx.x) + i * kGroupedThreads;
    const int64_t outer = outer0 + GroupedTcVecOuter(v);
    const int64_t inner = inner0 + GroupedTcVecInner(v);
    uint32_t c[kGroupedTcVec] = {};  // the group's codes, 0 (= +0.0) outside the operand
    if (outer < outer_lim) {
      const uint8_t* src = p + outer * ld + inner;
      if (vec && inner + kGroupedTcVec <= inner_lim) {
        const uint2 raw = *reinterpret_cast<const uint2*>(src);
#pragma unroll
        for (int j = 0; j < 4; ++j) {  // byte j of each word is element j (little endian)
          c[j] = (raw.x >> (8 * j)) & 0xffu;
          c[4 + j] = (raw.y >> (8 * j)) & 0xffu;
        }
      } else {
#pragma unroll
        for (int j = 0; j < kGroupedTcVec; ++j) c[j] = inner + j < inner_lim ? src[j] : 0u;
      }
    }
    uint32_t w[kGroupedTcVec / 2];
#pragma unroll
    for (int j = 0; j < kGroupedTcVec / 2; ++j)
      w[j] = CodeToBf16(c[2 * j]) | (CodeToBf16(c[2 * j + 1]) << 16);
    *reinterpret_cast<uint4*>(s + GroupedTcVecOuter(v) * kGroupedTcLd + GroupedTcVecInner(v)) =
        make_uint4(w[0], w[1], w[2], w[3]);
  }
}

template <GroupedGemmKind kKind>
__global__ void __launch_bounds__(kGroupedThreads)
    GroupedFp8GemmKernel(const uint8_t* __restrict__ a, const float* __restrict__ a_scales,
                         const uint8_t* __restrict__ b, const float* __restrict__ w_scales,
                         float* __restrict__ c, const int32_t* __restrict__ offsets,
                         GroupedGemmShape shape) {
  static_assert(kKind != GroupedGemmKind::kWeightGrad, "Wgrad scales along the tokens");
  constexpr bool kAKMajor = GroupedAKMajor(kKind), kBKMajor = GroupedBKMajor(kKind);
  using Tc = GroupedTc<kAKMajor, kBKMajor>;
  __shared__ int32_t prefix[kGroupedMaxExperts + 1];  // [E + 1] tile prefix
  // [2][kGroupedTileM][kGroupedTcLd] BF16 operand tiles, then [warps][kGroupedTcStage] FP32
  // staging.
  __shared__ __align__(128) unsigned char
      smem[kOperandElems * sizeof(uint16_t) + kGroupedTcWarps * kGroupedTcStage * sizeof(float)];
  GroupedCheckOffsets(offsets, shape);
  GroupedBlockPrefix(offsets, shape.experts, prefix);
  GroupedBlockGemm g;
  // Blocks past the last row tile have nothing to do (uniform over the block).
  if (!GroupedBlockFor(kKind, shape, offsets, prefix, blockIdx.x, blockIdx.y, blockIdx.z, &g))
    return;
  int32_t expert = 0, tile = 0;
  GroupedFindTile(prefix, shape.experts, blockIdx.x, &expert, &tile);
  int64_t row_begin = 0, row_end = 0;  // the tile's rows of X / dY (and of the scales)
  GroupedTileRows(offsets, expert, tile, &row_begin, &row_end);

  uint16_t* sa = reinterpret_cast<uint16_t*>(smem);  // [kGroupedTileM][kGroupedTcLd] A tile
  uint16_t* sb = sa + kGroupedTcTileElems;           // [kGroupedTileM][kGroupedTcLd] B tile
  const auto* fa_base = reinterpret_cast<const __nv_bfloat16*>(sa);
  const auto* fb_base = reinterpret_cast<const __nv_bfloat16*>(sb);
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  // [kGroupedTcStage] this warp's staged fragments
  float* stage = reinterpret_cast<float*>(sa + kOperandElems) + warp * kGroupedTcStage;
  const uint8_t* a_blk = a + g.a_offset;
  const uint8_t* b_blk = b + g.b_offset;
  const bool a_vec =
      g.lda % kGroupedTcVec == 0 && reinterpret_cast<uintptr_t>(a_blk) % sizeof(uint2) == 0;
  const bool b_vec =
      g.ldb % kGroupedTcVec == 0 && reinterpret_cast<uintptr_t>(b_blk) % sizeof(uint2) == 0;

  typename Tc::Acc acc[kGroupedTcFragsPerWarp];
#pragma unroll
  for (int j = 0; j < kGroupedTcFragsPerWarp; ++j) wmma::fill_fragment(acc[j], 0.0f);
  float total[kGroupedTcStagePerLane] = {};  // the promoted sums of this lane's elements

  for (int64_t k0 = 0; k0 < g.depth; k0 += kGroupedTcTileK) {
    LoadFp8Tile<kAKMajor>(a_blk, g.lda, g.a_rows, g.depth, g.m0, k0, a_vec, sa);
    LoadFp8Tile<kBKMajor>(b_blk, g.ldb, g.b_rows, g.depth, g.n0, k0, b_vec, sb);
    __syncthreads();
    Tc::MmaStep(fa_base, fb_base, warp, acc);
    __syncthreads();  // the next step overwrites sa / sb
    const int64_t k_next = k0 + kGroupedTcTileK;
    if (k_next % kGroupedFp8Chunk != 0 && k_next < g.depth) continue;
    // The end of chunk t (or of the reduction): promote. The chunk and the block's output
    // columns share one weight block (grouped_gemm.h), so sw is one value.
    const int64_t t = k0 / kGroupedFp8Chunk;
    const float sw = w_scales[GroupedFp8WeightScaleIndex(kKind, shape, expert, g.n0, t)];
#pragma unroll
    for (int j = 0; j < kGroupedTcFragsPerWarp; ++j) {
      wmma::store_matrix_sync(stage + j * kFrag * kFrag, acc[j], kFrag, wmma::mem_row_major);
      wmma::fill_fragment(acc[j], 0.0f);
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < kGroupedTcStagePerLane; ++i) {
      const int e = lane + 32 * i;
      const int64_t m = g.m0 + GroupedTcStageRow(warp, e);
      if (m >= g.a_rows) continue;  // past the tile's rows: no scale to read, never stored
      const float s = a_scales[t * shape.rows + row_begin + m];  // [tiles, rows]
      total[i] = fmaf(s * sw, stage[e], total[i]);
    }
    __syncwarp();  // the next chunk's stores overwrite stage
  }

  float* c_block = c + g.c_offset;
#pragma unroll
  for (int i = 0; i < kGroupedTcStagePerLane; ++i) {
    const int e = lane + 32 * i;
    const int64_t m = g.m0 + GroupedTcStageRow(warp, e);
    const int64_t n = g.n0 + GroupedTcStageCol(warp, e);
    if (m < g.a_rows && n < g.b_rows) c_block[m * g.ldc + n] = total[i];
  }
}

template <GroupedGemmKind kKind>
void LaunchFp8(const uint8_t* a, const float* a_scales, const uint8_t* w, const float* w_scales,
               float* c, const int32_t* offsets, const GroupedGemmShape& shape,
               cudaStream_t stream) {
  int64_t grid[3];
  if (!GroupedCheckedGrid(kKind, shape, grid)) return;
  GroupedFp8GemmKernel<kKind>
      <<<dim3(unsigned(grid[0]), unsigned(grid[1]), unsigned(grid[2])), kGroupedThreads, 0,
         stream>>>(a, a_scales, w, w_scales, c, offsets, shape);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void GroupedFp8GemmForward(const uint8_t* x, const float* x_scales, const uint8_t* w,
                           const float* w_scales, float* y, const int32_t* offsets,
                           const GroupedGemmShape& shape, cudaStream_t stream) {
  LaunchFp8<GroupedGemmKind::kForward>(x, x_scales, w, w_scales, y, offsets, shape, stream);
}

void GroupedFp8GemmDataGrad(const uint8_t* dy, const float* dy_scales, const uint8_t* w,
                            const float* w_scales, float* dx, const int32_t* offsets,
                            const GroupedGemmShape& shape, cudaStream_t stream) {
  LaunchFp8<GroupedGemmKind::kDataGrad>(dy, dy_scales, w, w_scales, dx, offsets, shape, stream);
}

}  // namespace mt::cuda

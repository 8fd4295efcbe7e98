// kernels/cuda/grouped_gemm_fp8.cu: the E4M3 grouped expert GEMMs (forward, data grad and
// weight grad) of grouped_gemm.h with DeepSeek-V3's block scaling, offsets read on the device
// only, and the re-tiling of the weight gradient's operands along each expert's tokens.
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
//   weight grad  A = dY_e^T chunks (r: n, k: token) K-major  B = X_e^T chunks (r: k, k: token)
//                K-major; both scales per (chunk, r), so the promotion multiplies two scales
//                (grouped_gemm.h "the FP8 weight gradient: token chunks")
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

// One warp per (chunk id, column) of GroupedFp8QuantizeChunks: consecutive warps take
// consecutive columns of one chunk, so their reads of a source row share cache lines. Ids no
// expert uses exit (warp-uniform).
__global__ void QuantizeChunksKernel(const float* __restrict__ src,
                                     const uint8_t* __restrict__ src_codes,
                                     const float* __restrict__ src_scales,
                                     uint8_t* __restrict__ codes_t, float* __restrict__ scales_t,
                                     int64_t ld, const int32_t* __restrict__ offsets,
                                     GroupedGemmShape shape, int64_t C, int64_t chunks, bool pow2) {
  GroupedCheckOffsets(offsets, shape);
  const int64_t item = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (item >= chunks * C) return;
  const int64_t id = item / C, col = item % C;
  int32_t expert = 0, chunk = 0;
  if (!GroupedFp8ChunkOf(offsets, shape.experts, id, &expert, &chunk)) return;
  const int64_t r0 = int64_t(offsets[expert]) + int64_t(chunk) * kGroupedFp8Chunk;
  const int len = int(MinI64(kGroupedFp8Chunk, int64_t(offsets[expert + 1]) - r0));
  const int lane = threadIdx.x % 32;
  const int64_t scale_row = (col / kQuantTile) * shape.rows;  // src_scales [C/128, rows]
  float v[kQuantPerLane];
#pragma unroll
  for (int j = 0; j < kQuantPerLane; ++j) {
    const int64_t r = r0 + lane + 32 * j;
    v[j] = lane + 32 * j >= len ? 0.0f
           : src                ? src[r * C + col]
                                : E4M3ToFloat(src_codes[r * C + col]) * src_scales[scale_row + r];
  }
  QuantizeWarpRun(v, len, pow2, codes_t + col * ld + id * kGroupedFp8Chunk,
                  scales_t + id * C + col);
}

// b_scales: the weight's block scales (forward, data grad) or X^T's chunk scales (weight
// grad); ld: the chunk layout's row stride (weight grad only).
template <GroupedGemmKind kKind>
__global__ void __launch_bounds__(kGroupedThreads)
    GroupedFp8GemmKernel(const uint8_t* __restrict__ a, const float* __restrict__ a_scales,
                         const uint8_t* __restrict__ b, const float* __restrict__ b_scales,
                         float* __restrict__ c, const int32_t* __restrict__ offsets,
                         GroupedGemmShape shape, int64_t ld) {
  constexpr bool kWgrad = kKind == GroupedGemmKind::kWeightGrad;
  constexpr bool kAKMajor = kWgrad || GroupedAKMajor(kKind);
  constexpr bool kBKMajor = kWgrad || GroupedBKMajor(kKind);
  using Tc = GroupedTc<kAKMajor, kBKMajor>;
  // [2][kGroupedTileM][kGroupedTcLd] BF16 operand tiles, then [warps][kGroupedTcStage] FP32
  // staging.
  __shared__ __align__(128) unsigned char
      smem[kOperandElems * sizeof(uint16_t) + kGroupedTcWarps * kGroupedTcStage * sizeof(float)];
  GroupedCheckOffsets(offsets, shape);
  GroupedBlockGemm g;
  int32_t expert = 0;
  int64_t row_begin = 0;   // forward / data grad: the tile's first row of X / dY (and scales)
  int64_t chunk_base = 0;  // weight grad: the expert's first chunk id
  // Blocks with nothing to do (past the last row tile, an empty expert) exit; uniform over
  // the block.
  if constexpr (kWgrad) {
    if (!GroupedFp8WgradBlockFor(shape, offsets, ld, blockIdx.x, blockIdx.y, blockIdx.z, &g))
      return;
    expert = int32_t(blockIdx.z);
    chunk_base = GroupedFp8ChunkBase(offsets, expert);
  } else {
    __shared__ int32_t prefix[kGroupedMaxExperts + 1];  // [E + 1] tile prefix
    GroupedBlockPrefix(offsets, shape.experts, prefix);
    if (!GroupedBlockFor(kKind, shape, offsets, prefix, blockIdx.x, blockIdx.y, blockIdx.z, &g))
      return;
    int32_t tile = 0;
    GroupedFindTile(prefix, shape.experts, blockIdx.x, &expert, &tile);
    int64_t row_end = 0;
    GroupedTileRows(offsets, expert, tile, &row_begin, &row_end);
  }

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
    // The end of chunk t (or of the reduction): promote. Forward / data grad: the chunk and
    // the block's output columns share one weight block (grouped_gemm.h), so sw is one value.
    const int64_t t = k0 / kGroupedFp8Chunk;
    float sw = 0.0f;
    if constexpr (!kWgrad) sw = b_scales[GroupedFp8WeightScaleIndex(kKind, shape, expert, g.n0, t)];
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
      float s;
      if constexpr (kWgrad) {
        const int64_t n = g.n0 + GroupedTcStageCol(warp, e);
        if (n >= g.b_rows) continue;        // past K: likewise
        const int64_t id = chunk_base + t;  // scales [chunks, N] and [chunks, K]
        s = a_scales[id * shape.n + m] * b_scales[id * shape.k + n];
      } else {
        s = a_scales[t * shape.rows + row_begin + m] * sw;  // [tiles, rows]
      }
      total[i] = fmaf(s, stage[e], total[i]);
    }
    __syncwarp();  // the next chunk's stores overwrite stage
  }

  float* c_block = c + g.c_offset;
#pragma unroll
  for (int i = 0; i < kGroupedTcStagePerLane; ++i) {
    const int e = lane + 32 * i;
    const int64_t m = g.m0 + GroupedTcStageRow(warp, e);
    const int64_t n = g.n0 + GroupedTcStageCol(warp, e);
    if (m >= g.a_rows || n >= g.b_rows) continue;
    if constexpr (kWgrad)
      c_block[m * g.ldc + n] += total[i];  // one block owns each element: no race
    else
      c_block[m * g.ldc + n] = total[i];
  }
}

template <GroupedGemmKind kKind>
void LaunchFp8(const uint8_t* a, const float* a_scales, const uint8_t* b, const float* b_scales,
               float* c, const int32_t* offsets, const GroupedGemmShape& shape, int64_t ld,
               cudaStream_t stream) {
  int64_t grid[3];
  if (!GroupedCheckedGrid(kKind, shape, grid)) return;
  GroupedFp8GemmKernel<kKind>
      <<<dim3(unsigned(grid[0]), unsigned(grid[1]), unsigned(grid[2])), kGroupedThreads, 0,
         stream>>>(a, a_scales, b, b_scales, c, offsets, shape, ld);
  CUDA_CHECK_LAUNCH();
}

// Expert e's columns end at base(e) * 128 + M_e <= offsets[e + 1] + e * 128 (floor), so a
// stride of rows + (E - 1) * 128 holds every expert's; 8-code loads need it to be a multiple
// of 8, and the kernel reads byte by byte otherwise.
void CheckChunkLayout(const GroupedGemmShape& shape, int64_t ld) {
  CUDA_HOST_CHECK(ld >= shape.rows + (shape.experts - 1) * kGroupedFp8Chunk,
                  "grouped FP8 weight grad: chunk layout stride too small");
}

}  // namespace

void GroupedFp8GemmForward(const uint8_t* x, const float* x_scales, const uint8_t* w,
                           const float* w_scales, float* y, const int32_t* offsets,
                           const GroupedGemmShape& shape, cudaStream_t stream) {
  LaunchFp8<GroupedGemmKind::kForward>(x, x_scales, w, w_scales, y, offsets, shape, 0, stream);
}

void GroupedFp8GemmDataGrad(const uint8_t* dy, const float* dy_scales, const uint8_t* w,
                            const float* w_scales, float* dx, const int32_t* offsets,
                            const GroupedGemmShape& shape, cudaStream_t stream) {
  LaunchFp8<GroupedGemmKind::kDataGrad>(dy, dy_scales, w, w_scales, dx, offsets, shape, 0, stream);
}

void GroupedFp8QuantizeChunks(const float* src, const uint8_t* src_codes, const float* src_scales,
                              uint8_t* codes_t, float* scales_t, int64_t ld, const int32_t* offsets,
                              const GroupedGemmShape& shape, int64_t C, bool pow2_scales,
                              cudaStream_t stream) {
  CUDA_HOST_CHECK(shape.experts >= 1 && shape.experts <= kGroupedMaxExperts && C >= 1 &&
                      shape.rows >= 0 && shape.rows < (int64_t(1) << 31),
                  "grouped FP8 chunks: bad shape");
  CUDA_HOST_CHECK((src != nullptr) != (src_codes != nullptr && src_scales != nullptr),
                  "grouped FP8 chunks: FP32 values or codes with scales, one of the two");
  CheckChunkLayout(shape, ld);
  if (shape.rows == 0) return;
  const int64_t chunks = GroupedFp8Chunks(shape.rows, shape.experts);
  const int64_t blocks = CeilDiv(chunks * C, kWarps);
  CUDA_HOST_CHECK(blocks < (int64_t(1) << 31), "grouped FP8 chunks: grid too large");
  QuantizeChunksKernel<<<unsigned(blocks), kBlock, 0, stream>>>(
      src, src_codes, src_scales, codes_t, scales_t, ld, offsets, shape, C, chunks, pow2_scales);
  CUDA_CHECK_LAUNCH();
}

void GroupedFp8GemmWeightGrad(const uint8_t* dy_t, const float* dy_scales, const uint8_t* x_t,
                              const float* x_scales, int64_t ld, float* dw, const int32_t* offsets,
                              const GroupedGemmShape& shape, cudaStream_t stream) {
  CheckChunkLayout(shape, ld);
  LaunchFp8<GroupedGemmKind::kWeightGrad>(dy_t, dy_scales, x_t, x_scales, dw, offsets, shape, ld,
                                          stream);
}

}  // namespace mt::cuda

// kernels/cuda/moe_permute.cu: the routing plan (CUB stable radix sort of slots by expert),
// row permutation, un-permutation and the weighted combine (moe_permute.h).
#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/moe_permute.h"

namespace mt::cuda {
namespace {

constexpr int kMaxTopK = 32;

// Workspace byte layout: sorted keys [P] i32 | slot ids [P] i32 | sorted slot ids [P] i32 |
// CUB temp storage; each part starts on a 256-byte boundary.
size_t Align256(size_t b) { return (b + 255) / 256 * 256; }

int KeyBits(int64_t E) {
  int bits = 1;
  while ((int64_t(1) << bits) < E) ++bits;
  return bits;
}

size_t CubTempBytes(int64_t P, int64_t E) {
  size_t bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, bytes, static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), P, 0, KeyBits(E)));
  return bytes;
}

// ---- CUDA kernels ---------------------------------------------------------------------

__global__ void IotaKernel(int32_t* v, int64_t n) {
  MT_GRID_STRIDE(i, n) { v[i] = int32_t(i); }
}

__global__ void CountKernel(const int32_t* topk, int64_t P, int32_t* counts) {
  MT_GRID_STRIDE(s, P) { atomicAdd(counts + topk[s], 1); }
}

// E is small (<= a few thousand): one thread scans, in order.
__global__ void OffsetsKernel(const int32_t* counts, int32_t* offsets, int64_t E) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  int32_t run = 0;
  for (int64_t e = 0; e < E; ++e) {
    offsets[e] = run;
    run += counts[e];
  }
  offsets[E] = run;
}

__global__ void FillPlanKernel(const int32_t* sorted_slots, int64_t P, int64_t K,
                               int32_t* src_token, int32_t* slot_pos) {
  MT_GRID_STRIDE(p, P) {
    const int32_t s = sorted_slots[p];
    src_token[p] = int32_t(s / K);
    slot_pos[s] = int32_t(p);
  }
}

__global__ void PermuteRowsKernel(const uint32_t* x, uint32_t* xp, const int32_t* src_token,
                                  int64_t words) {
  const int64_t p = blockIdx.x;
  const uint32_t* src = x + int64_t(src_token[p]) * words;
  for (int64_t i = threadIdx.x; i < words; i += blockDim.x) xp[p * words + i] = src[i];
}

// Thread 0 sorts token t's K (row, slot) pairs by row (expert order) into shared memory.
__device__ int SortedRows(const int32_t* slot_pos, int64_t t, int64_t K, int32_t* rows,
                          int32_t* slots) {
  if (threadIdx.x == 0) {
    for (int k = 0; k < K; ++k) {
      const int32_t r = slot_pos[t * K + k];
      int j = k;
      for (; j > 0 && rows[j - 1] > r; --j) {
        rows[j] = rows[j - 1];
        slots[j] = slots[j - 1];
      }
      rows[j] = r;
      slots[j] = int32_t(t * K + k);
    }
  }
  __syncthreads();
  return int(K);
}

// kAccumulate: start from y's value (y +=, the order the CPU's per-expert axpys add in).
template <bool kAccumulate>
__global__ void CombineKernel(const float* ye, const float* weight, const int32_t* slot_pos,
                              float* y, int64_t K, int64_t H) {
  __shared__ int32_t rows[kMaxTopK], slots[kMaxTopK];
  const int64_t t = blockIdx.x;
  SortedRows(slot_pos, t, K, rows, slots);
  for (int64_t h = threadIdx.x; h < H; h += blockDim.x) {
    float acc = kAccumulate ? y[t * H + h] : 0.0f;
    for (int j = 0; j < K; ++j) acc += weight[slots[j]] * ye[int64_t(rows[j]) * H + h];
    y[t * H + h] = acc;
  }
}

template <bool kAccumulate>
__global__ void UnpermuteSumKernel(const float* dxp, const int32_t* slot_pos, float* dx, int64_t K,
                                   int64_t H) {
  __shared__ int32_t rows[kMaxTopK], slots[kMaxTopK];
  const int64_t t = blockIdx.x;
  SortedRows(slot_pos, t, K, rows, slots);
  for (int64_t h = threadIdx.x; h < H; h += blockDim.x) {
    float acc = kAccumulate ? dx[t * H + h] : 0.0f;
    for (int j = 0; j < K; ++j) acc += dxp[int64_t(rows[j]) * H + h];
    dx[t * H + h] = acc;
  }
}

// One kBlock block per segment; each thread its columns, the rows in list order.
__global__ void SegmentSumRowsKernel(const float* x, const int32_t* offsets, const int32_t* rows,
                                     float* y, int64_t H) {
  const int64_t s = blockIdx.x;
  const int32_t j0 = offsets[s], j1 = offsets[s + 1];
  for (int64_t h = threadIdx.x; h < H; h += blockDim.x) {
    float acc = 0.0f;
    for (int32_t j = j0; j < j1; ++j) acc += x[int64_t(rows[j]) * H + h];
    y[s * H + h] = acc;
  }
}

// One kBlock block per slot. W: float or double dweight (the dot is double either way).
template <typename W>
__global__ void CombineBackwardKernel(const float* dy, const float* ye, const float* weight,
                                      const int32_t* slot_pos, float* dye, W* dweight, int64_t K,
                                      int64_t H) {
  const int64_t s = blockIdx.x, t = s / K, p = slot_pos[s];
  const float w = weight[s];
  double dot = 0;
  for (int64_t h = threadIdx.x; h < H; h += blockDim.x) {
    const float g = dy[t * H + h];
    dye[p * H + h] = w * g;
    dot += double(g) * ye[p * H + h];
  }
  dot = BlockSum(dot);
  if (threadIdx.x == 0) dweight[s] = W(dot);
}

void CheckRouting(int64_t T, int64_t K) {
  CUDA_HOST_CHECK(T >= 0 && K >= 1 && K <= kMaxTopK, "MoE permutation: K must be in [1, 32]");
  CUDA_HOST_CHECK(T * K <= INT32_MAX, "MoE permutation: T * K must fit int32");
}

}  // namespace

// ---- kernel launchers -----------------------------------------------------------------

size_t MoePlanWorkspaceBytes(int64_t slots, int64_t experts) {
  return 3 * Align256(size_t(slots) * sizeof(int32_t)) + Align256(CubTempBytes(slots, experts));
}

void MoePlanBuild(const int32_t* topk, int64_t T, int64_t K, int64_t E, MoePlan plan,
                  void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  CheckRouting(T, K);
  CUDA_HOST_CHECK(E >= 1, "MoE permutation: no experts");
  const int64_t P = T * K;
  CUDA_HOST_CHECK(workspace_bytes >= MoePlanWorkspaceBytes(P, E),
                  "MoePlanBuild: workspace smaller than MoePlanWorkspaceBytes");
  CUDA_CHECK(cudaMemsetAsync(plan.counts, 0, E * sizeof(int32_t), stream));
  if (P > 0) {
    char* ws = static_cast<char*>(workspace);
    const size_t part = Align256(size_t(P) * sizeof(int32_t));
    int32_t* keys_sorted = reinterpret_cast<int32_t*>(ws);
    int32_t* slots = reinterpret_cast<int32_t*>(ws + part);
    int32_t* slots_sorted = reinterpret_cast<int32_t*>(ws + 2 * part);
    size_t temp_bytes = workspace_bytes - 3 * part;
    IotaKernel<<<GridFor(P), kBlock, 0, stream>>>(slots, P);
    CUDA_CHECK_LAUNCH();
    // Radix sort is stable: equal experts keep ascending slot order.
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(ws + 3 * part, temp_bytes, topk, keys_sorted, slots,
                                               slots_sorted, P, 0, KeyBits(E), stream));
    FillPlanKernel<<<GridFor(P), kBlock, 0, stream>>>(slots_sorted, P, K, plan.src_token,
                                                      plan.slot_pos);
    CUDA_CHECK_LAUNCH();
    CountKernel<<<GridFor(P), kBlock, 0, stream>>>(topk, P, plan.counts);
    CUDA_CHECK_LAUNCH();
  }
  OffsetsKernel<<<1, 1, 0, stream>>>(plan.counts, plan.offsets, E);
  CUDA_CHECK_LAUNCH();
}

void PermuteRows(const void* x, void* xp, const int32_t* src_token, int64_t P, int64_t row_bytes,
                 cudaStream_t stream) {
  CUDA_HOST_CHECK(row_bytes % 4 == 0, "PermuteRows: row_bytes must be a multiple of 4");
  CUDA_HOST_CHECK(P >= 0 && P <= INT32_MAX, "PermuteRows: bad row count");
  if (P == 0 || row_bytes == 0) return;
  PermuteRowsKernel<<<unsigned(P), kBlock, 0, stream>>>(
      static_cast<const uint32_t*>(x), static_cast<uint32_t*>(xp), src_token, row_bytes / 4);
  CUDA_CHECK_LAUNCH();
}

namespace {
template <bool kAccumulate>
void LaunchUnpermute(const float* dxp, const int32_t* slot_pos, float* dx, int64_t T, int64_t K,
                     int64_t H, cudaStream_t stream) {
  CheckRouting(T, K);
  if (T == 0) return;
  UnpermuteSumKernel<kAccumulate><<<unsigned(T), kBlock, 0, stream>>>(dxp, slot_pos, dx, K, H);
  CUDA_CHECK_LAUNCH();
}

template <bool kAccumulate>
void LaunchCombine(const float* ye, const float* weight, const int32_t* slot_pos, float* y,
                   int64_t T, int64_t K, int64_t H, cudaStream_t stream) {
  CheckRouting(T, K);
  if (T == 0) return;
  CombineKernel<kAccumulate><<<unsigned(T), kBlock, 0, stream>>>(ye, weight, slot_pos, y, K, H);
  CUDA_CHECK_LAUNCH();
}

template <typename W>
void LaunchCombineBackward(const float* dy, const float* ye, const float* weight,
                           const int32_t* slot_pos, float* dye, W* dweight, int64_t T, int64_t K,
                           int64_t H, cudaStream_t stream) {
  CheckRouting(T, K);
  if (T == 0) return;
  CombineBackwardKernel<W>
      <<<unsigned(T * K), kBlock, 0, stream>>>(dy, ye, weight, slot_pos, dye, dweight, K, H);
  CUDA_CHECK_LAUNCH();
}
}  // namespace

void UnpermuteSum(const float* dxp, const int32_t* slot_pos, float* dx, int64_t T, int64_t K,
                  int64_t H, cudaStream_t stream) {
  LaunchUnpermute<false>(dxp, slot_pos, dx, T, K, H, stream);
}

void UnpermuteAdd(const float* dxp, const int32_t* slot_pos, float* dx, int64_t T, int64_t K,
                  int64_t H, cudaStream_t stream) {
  LaunchUnpermute<true>(dxp, slot_pos, dx, T, K, H, stream);
}

void SegmentSumRows(const float* x, const int32_t* offsets, const int32_t* rows, float* y,
                    int64_t segments, int64_t H, cudaStream_t stream) {
  CUDA_HOST_CHECK(segments >= 0 && segments <= INT32_MAX,
                  "SegmentSumRows: the segment count must fit a grid");
  if (segments == 0 || H == 0) return;
  SegmentSumRowsKernel<<<unsigned(segments), kBlock, 0, stream>>>(x, offsets, rows, y, H);
  CUDA_CHECK_LAUNCH();
}

void Combine(const float* ye, const float* weight, const int32_t* slot_pos, float* y, int64_t T,
             int64_t K, int64_t H, cudaStream_t stream) {
  LaunchCombine<false>(ye, weight, slot_pos, y, T, K, H, stream);
}

void CombineAdd(const float* ye, const float* weight, const int32_t* slot_pos, float* y, int64_t T,
                int64_t K, int64_t H, cudaStream_t stream) {
  LaunchCombine<true>(ye, weight, slot_pos, y, T, K, H, stream);
}

void CombineBackward(const float* dy, const float* ye, const float* weight, const int32_t* slot_pos,
                     float* dye, float* dweight, int64_t T, int64_t K, int64_t H,
                     cudaStream_t stream) {
  LaunchCombineBackward(dy, ye, weight, slot_pos, dye, dweight, T, K, H, stream);
}

void CombineBackward(const float* dy, const float* ye, const float* weight, const int32_t* slot_pos,
                     float* dye, double* dweight, int64_t T, int64_t K, int64_t H,
                     cudaStream_t stream) {
  LaunchCombineBackward(dy, ye, weight, slot_pos, dye, dweight, T, K, H, stream);
}

}  // namespace mt::cuda

// kernels/cuda/moe_permute.h: token permutation by expert, its inverse, and the weighted
// combine, with CPU references.
//
// A routing topk [T, K] names T * K slots (slot = t * K + k). The plan orders the slots by
// expert and, within an expert, by slot index (a stable radix sort on the expert id), which
// is the order trainer/moe.cc fills its per-expert slot lists in. Expert e's rows of the
// permuted activations are [offsets[e], offsets[e + 1]); a grouped expert GEMM reads them
// with no per-expert host synchronisation.
//
//   src_token [P]   permuted row p comes from token src_token[p]          (P = T * K)
//   slot_pos  [P]   slot s sits at permuted row slot_pos[s]               (the inverse)
//   counts    [E]   rows per expert;  offsets [E + 1] exclusive prefix sum of counts
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace mt::cuda {

struct MoePlan {
  int32_t* src_token = nullptr;  // [P]
  int32_t* slot_pos = nullptr;   // [P]
  int32_t* counts = nullptr;     // [E]
  int32_t* offsets = nullptr;    // [E + 1]
};

// Scratch bytes MoePlanBuild needs for T * K slots over E experts (CUB's sort storage and
// its key/value buffers).
size_t MoePlanWorkspaceBytes(int64_t slots, int64_t experts);
// topk [T, K] -> plan. `workspace` holds MoePlanWorkspaceBytes(T * K, E) bytes.
void MoePlanBuild(const int32_t* topk, int64_t T, int64_t K, int64_t E, MoePlan plan,
                  void* workspace, size_t workspace_bytes, cudaStream_t stream);

// xp [P, row_bytes] row p = x [T, row_bytes] row src_token[p]: any dtype (fp32, bf16, FP8
// codes), rows copied as bytes. row_bytes must be a multiple of 4.
void PermuteRows(const void* x, void* xp, const int32_t* src_token, int64_t P, int64_t row_bytes,
                 cudaStream_t stream);
// dx [T, H] = sum over k of dxp [P, H] row slot_pos[t * K + k], added in expert order.
void UnpermuteSum(const float* dxp, const int32_t* slot_pos, float* dx, int64_t T, int64_t K,
                  int64_t H, cudaStream_t stream);
// dx [T, H] += the same sum, added to dx's value in expert order (kernels/backend.h).
void UnpermuteAdd(const float* dxp, const int32_t* slot_pos, float* dx, int64_t T, int64_t K,
                  int64_t H, cudaStream_t stream);
// y [segments, H] row s = sum over j in [offsets[s], offsets[s + 1]) ascending of x row
// rows[j], from zero (kernels/backend.h SegmentSumRows). Overwrites y.
void SegmentSumRows(const float* x, const int32_t* offsets, const int32_t* rows, float* y,
                    int64_t segments, int64_t H, cudaStream_t stream);
// y [T, H] = sum over k of weight[t, k] * ye [P, H] row slot_pos[t * K + k], in expert order
// (the CPU's order of accumulation). Overwrites y.
void Combine(const float* ye, const float* weight, const int32_t* slot_pos, float* y, int64_t T,
             int64_t K, int64_t H, cudaStream_t stream);
// y [T, H] += the same sum, added to y's value in expert order (kernels/backend.h).
void CombineAdd(const float* ye, const float* weight, const int32_t* slot_pos, float* y, int64_t T,
                int64_t K, int64_t H, cudaStream_t stream);
// The combine's backward, for each slot s of token t = s / K: dye [P, H] row slot_pos[s] =
// weight[s] * dy [T, H] row t, and dweight [T * K] at s = <dy row t, ye row slot_pos[s]>
// (summed in double; stored as float, or as double for the router's backward).
void CombineBackward(const float* dy, const float* ye, const float* weight, const int32_t* slot_pos,
                     float* dye, float* dweight, int64_t T, int64_t K, int64_t H,
                     cudaStream_t stream);
void CombineBackward(const float* dy, const float* ye, const float* weight, const int32_t* slot_pos,
                     float* dye, double* dweight, int64_t T, int64_t K, int64_t H,
                     cudaStream_t stream);

namespace ref {
// Host arrays, same contracts (src_token, slot_pos [T * K], counts [E], offsets [E + 1]).
void MoePlanBuild(const int32_t* topk, int64_t T, int64_t K, int64_t E, int32_t* src_token,
                  int32_t* slot_pos, int32_t* counts, int32_t* offsets);
void Combine(const float* ye, const float* weight, const int32_t* slot_pos, float* y, int64_t T,
             int64_t K, int64_t H);
void CombineBackward(const float* dy, const float* ye, const float* weight, const int32_t* slot_pos,
                     float* dye, float* dweight, int64_t T, int64_t K, int64_t H);
void UnpermuteSum(const float* dxp, const int32_t* slot_pos, float* dx, int64_t T, int64_t K,
                  int64_t H);
}  // namespace ref

}  // namespace mt::cuda

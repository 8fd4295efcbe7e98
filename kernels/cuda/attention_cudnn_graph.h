// kernels/cuda/attention_cudnn_graph.h: the backend-API operation graphs of causal BF16
// scaled-dot-product attention, forward and backward, in the form cuDNN's flash-attention
// runtime fusion engines recognise (the pattern cudnn-frontend lowers its SDPA nodes to
// before the single SDPA_FWD/BWD operations, which in cuDNN 9.19 have no causal mask):
//
// Forward:  S = scale * Q K^T; S = row >= col ? S : lowest (gen-index, cmp-ge,
//           binary-select); m = rowmax S; e = exp(S - m); z = rowsum e;
//           Stats = m + log z (FP32, saved); P = e / z (BF16); O = P V.
// Backward: sum = rowsum(dO * O) (FP32 scratch); P = exp(mask(scale Q K^T - Stats));
//           dV = P^T dO; dS = scale * P * (dO V^T - sum); dK = dS^T Q;
//           dQaccum = dS K (FP32 scratch); dQ = identity(dQaccum).
//
// Tensors keep moetrain's layouts (attention.h): Q, K [B, S, N, Dqk] and V, O [B, S, N, Dv]
// are described to cuDNN as [B, N, S, D] with strides (S*N*D, D, N*D, 1); K^T and V^T are
// the same memory with the last two dims and strides swapped. Stats is [B, N, S, 1] FP32.
#pragma once

#include <cudnn.h>

#include <cstdint>

#include "absl/status/statusor.h"
#include "kernels/cuda/attention_cudnn_backend.h"
#include "kernels/cuda/attention_unfused.h"

namespace mt::cuda {

// Unique ids of the graphs' non-virtual tensors (the variant pack's keys).
enum SdpaUid : int64_t {
  kSdpaQ = 1,
  kSdpaK,
  kSdpaV,
  kSdpaO,
  kSdpaStats,   // [B, N, S, 1] FP32: log-sum-exp of the scaled, masked scores
  kSdpaScale,   // by value, FP32: the softmax scale
  kSdpaNegInf,  // by value, FP32: what masked scores become
  kSdpaOne,     // by value, FP32: 1 (backward's dropout-free scale of the row sums)
  kSdpaDO,
  kSdpaDQ,
  kSdpaDK,
  kSdpaDV,
  kSdpaRowSum,   // backward scratch [B, N, S, 1] FP32: rowsum(dO * O)
  kSdpaDQAccum,  // backward scratch [B, N, S, Dqk] FP32, zeroed before each run
};

// Bytes of the Stats tensor forward writes and backward reads.
inline int64_t SdpaStatsBytes(const AttentionShape& sh) { return sh.B * sh.N * sh.S * 4; }

// Backward's FP32 scratch outside cuDNN's own workspace: the row sums, then dQaccum
// (256-byte aligned offsets from the start of the caller's workspace).
inline int64_t SdpaRowSumBytes(const AttentionShape& sh) {
  return (sh.B * sh.N * sh.S * 4 + 255) / 256 * 256;
}
inline int64_t SdpaDQAccumBytes(const AttentionShape& sh) {
  return (sh.B * sh.N * sh.S * sh.Dqk * 4 + 255) / 256 * 256;
}

// Adds the forward / backward graph's tensors and operations to `g` (host-only: no handle
// is needed until GraphBuilder::Finalize).
void AddSdpaForwardGraph(GraphBuilder* g, const AttentionShape& sh);
void AddSdpaBackwardGraph(GraphBuilder* g, const AttentionShape& sh);

// Builds and finalizes the plans (heuristics mode A, first config that finalizes); a
// Status when cuDNN refuses the graph or no engine takes it.
absl::StatusOr<CudnnPlan> BuildSdpaForwardPlan(cudnnHandle_t handle, const AttentionShape& sh);
absl::StatusOr<CudnnPlan> BuildSdpaBackwardPlan(cudnnHandle_t handle, const AttentionShape& sh);

}  // namespace mt::cuda

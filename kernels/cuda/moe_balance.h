// kernels/cuda/moe_balance.h: DeepSeek-V3's sequence-wise balance loss (eqs. 17-20) and the
// router's backward on the GPU: the device side of kernels/backend.h BalanceForward and
// RouterBackward, with the math of trainer/moe.cc (Moe::Forward's balance block and
// Moe::BackwardInput).
//
// Everything the CPU sums in double is summed in double here, and every reduction combines
// in a fixed order (no floating-point atomics), so results repeat run to run. The CPU sums
// a token's E scores in expert order; the kernels use a warp/block tree instead, so the
// doubles agree to rounding (~1e-16 relative), not bit for bit.
//
// Shapes: T = B * S tokens in B sequences of length S, E experts, top-K; positions
// s < valid of each sequence count. scores [T, E] are the router's sigmoids, topk [T, K].
//
// This header is included by .cu files (C++17): no absl, no C++20.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace mt::cuda {

struct BalanceShape {
  int64_t sequences = 0;  // B
  int64_t seq_len = 0;    // S
  int64_t experts = 0;    // E
  int64_t top_k = 0;      // K
  int64_t valid = 0;      // positions s < valid of each sequence count
};

// Device scratch BalanceForward needs: the per-token score sums [T] and the per-sequence
// losses [B], in double.
size_t BalanceWorkspaceBytes(const BalanceShape& shape);

// f [B, E] (overwritten) = E / (K valid) x the expert's choices among the sequence's valid
// positions; *loss (one device double) += (1/B) sum_b sum_e f_be P_be with
// P_be = (1/valid) sum over valid t of score_te / sum_e' score_te'.
// With valid == 0 nothing counts: f = 0 and the loss is unchanged (the CPU would divide 0/0).
void BalanceForward(const float* scores, const int32_t* topk, double* f, double* loss,
                    const BalanceShape& shape, void* workspace, size_t workspace_bytes,
                    cudaStream_t stream);

struct RouterBackwardShape {
  int64_t sequences = 0;  // B
  int64_t seq_len = 0;    // S
  int64_t experts = 0;    // E
  int64_t top_k = 0;      // K (at most 32)
  int64_t valid = 0;
  bool norm_topk = true;
  double scaling = 1.0;        // routed_scaling_factor
  double balance_scale = 0.0;  // the balance loss's coefficient (0: no balance gradient)
};

// d_logits [T, E] (overwritten) = ds * s * (1 - s) with s = scores, where ds (double) is
// d loss / d score: from dweight [T, K] (double) through the top-k normalisation and the
// scaling, plus (valid positions, balance_scale != 0) balance_scale / (B valid) x
// (f_e / sigma - sum_e' f_e' s_e' / sigma^2), sigma = the token's score sum, f [B, E] from
// BalanceForward.
void RouterBackward(const float* scores, const int32_t* topk, const double* dweight,
                    const double* f, float* d_logits, const RouterBackwardShape& shape,
                    cudaStream_t stream);

}  // namespace mt::cuda

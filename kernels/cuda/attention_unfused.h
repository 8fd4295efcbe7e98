// kernels/cuda/attention_unfused.h: causal attention as cuBLAS strided-batched GEMMs plus a
// softmax kernel: the path for every shape and dtype that cuDNN's fused SDPA refuses
// (attention.h chooses), and the FP32 path that can match the CPU reference at 1e-5.
//
// The layouts are kernels/ops.h AttentionForward/Backward's, so MLA (trainer/mla.cc) hands
// over the same buffers: q, k [B, S, N, Dqk], v, out [B, S, N, Dv]; one (batch, head) is a
// [S, D] matrix with row stride N * D. Per batch b, the N heads are one strided-batched GEMM
// (batch stride D): no transposes to [B, N, S, D] are materialised.
//
// Forward:  S = scale Q K^T (FP32 accumulate and output), P = causal softmax(S) in FP32,
//           stored in the element type (it is the next GEMM's operand), O = P V.
// Backward: dV = P^T dO, dP = dO V^T (FP32), dS = P (dP - rowsum(dP P)) stored in the element
//           type, dQ = scale dS K, dK = scale dS^T Q.
// The full S x S square is multiplied and the upper triangle masked: twice the causal FLOPs,
// which is the price of a plain GEMM; the fused path is the fast one.
//
// Element types: float (FP32 GEMMs, CUBLAS_COMPUTE_32F: no TF32) and uint16_t holding BF16
// bit patterns (BF16 GEMMs, FP32 accumulation). Shapes are checked on the host
// (CUDA_HOST_CHECK); a failing cuBLAS call aborts (cuda_check.h).
//
// This header is included by .cu files (C++17): no absl, no C++20.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace mt::cuda {

// One attention call's shape (also the key of attention.h's once-per-shape log).
struct AttentionShape {
  int64_t B = 0;     // batch (sequences)
  int64_t S = 0;     // sequence length (queries = keys: causal self-attention)
  int64_t N = 0;     // heads
  int64_t Dqk = 0;   // Q/K head dim (DeepSeek-V3: 128 nope + 64 rope = 192)
  int64_t Dv = 0;    // V/O head dim (DeepSeek-V3: 128)
  double scale = 0;  // softmax scale (MLA: includes YaRN's mscale^2 / sqrt(Dqk))
};

enum class AttentionDtype { kF32, kBF16 };

inline const char* AttentionDtypeName(AttentionDtype d) {
  return d == AttentionDtype::kF32 ? "fp32" : "bf16";
}

inline size_t AttentionElementBytes(AttentionDtype d) { return d == AttentionDtype::kF32 ? 4 : 2; }

// Device scratch for one call (forward or backward): FP32 scores or dP for one batch's
// N heads [N, S, S], plus (backward) dS [N, S, S] in the element type.
size_t UnfusedAttentionWorkspaceBytes(const AttentionShape& sh, AttentionDtype dtype);

// Elements of the saved probabilities P [B, N, S, S] (element type) that backward reads.
inline int64_t UnfusedAttentionProbsCount(const AttentionShape& sh) {
  return sh.B * sh.N * sh.S * sh.S;
}

// One step of the unfused path, with the exact arguments its launch gets. The launchers
// below build these lists on the host and execute them; tests/gpu/attention_plan_test.cc
// replays the same lists on the CPU (a column-major GEMM, the kernels' softmax), which
// checks every pointer offset, leading dimension, stride and transpose without a GPU.
struct UnfusedAttentionStep {
  enum class Kind { kGemm, kSoftmax, kSoftmaxBackward };
  Kind kind = Kind::kGemm;
  // kGemm: cublasGemmStridedBatchedEx(op_a, op_b, m, n, k, alpha, a, ab_type, lda, stride_a,
  // b, ab_type, ldb, stride_b, beta = 0, c, c_type, ldc, stride_c, batch), column-major,
  // CUBLAS_COMPUTE_32F.
  cublasOperation_t op_a = CUBLAS_OP_N, op_b = CUBLAS_OP_N;
  int m = 0, n = 0, k = 0;
  float alpha = 1.0f;
  const void* a = nullptr;
  const void* b = nullptr;
  void* c = nullptr;
  cudaDataType ab_type = CUDA_R_32F, c_type = CUDA_R_32F;
  int lda = 0, ldb = 0, ldc = 0;
  long long stride_a = 0, stride_b = 0, stride_c = 0;
  int batch = 0;
  // kSoftmax: probs [rows, S] = causal softmax(f32 [rows, S]). kSoftmaxBackward:
  // out [rows, S] = dS from probs and f32 = dP. Row r is query r % S of head r / S.
  const float* f32 = nullptr;
  const void* probs = nullptr;
  void* out = nullptr;
  int64_t rows = 0, S = 0;
};

// The steps of UnfusedAttentionForward / Backward (arguments as there; nothing runs).
template <typename T>
std::vector<UnfusedAttentionStep> UnfusedAttentionForwardPlan(const AttentionShape& sh, const T* q,
                                                              const T* k, const T* v, T* out,
                                                              T* probs, void* workspace,
                                                              size_t workspace_bytes);
template <typename T>
std::vector<UnfusedAttentionStep> UnfusedAttentionBackwardPlan(
    const AttentionShape& sh, const T* dout, const T* q, const T* k, const T* v, const T* probs,
    T* dq, T* dk, T* dv, void* workspace, size_t workspace_bytes);

// T = float or uint16_t (BF16 bits). q, k [B, S, N, Dqk], v [B, S, N, Dv] ->
// out [B, S, N, Dv], probs [B, N, S, S] (zero above the diagonal).
template <typename T>
void UnfusedAttentionForward(cublasHandle_t handle, const AttentionShape& sh, const T* q,
                             const T* k, const T* v, T* out, T* probs, void* workspace,
                             size_t workspace_bytes, cudaStream_t stream);

// dout [B, S, N, Dv], probs from the forward -> dq, dk [B, S, N, Dqk], dv [B, S, N, Dv]
// (overwritten).
template <typename T>
void UnfusedAttentionBackward(cublasHandle_t handle, const AttentionShape& sh, const T* dout,
                              const T* q, const T* k, const T* v, const T* probs, T* dq, T* dk,
                              T* dv, void* workspace, size_t workspace_bytes, cudaStream_t stream);

}  // namespace mt::cuda

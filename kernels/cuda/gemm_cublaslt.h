// kernels/cuda/gemm_cublaslt.h: GEMMs through cuBLASLt: BF16 with FP32 accumulation, and
// FP8 E4M3 with DeepSeek-V3's fine-grained scaling.
//
// Row-major throughout, as the CPU's ops::Gemm: C[M, N] = alpha op(A) op(B) (+ beta C).
// cuBLASLt is column-major, so each call computes C^T = op(B)^T op(A)^T: our B becomes its
// A and our A its B, with the transposes flipped into the layouts (see the .cc).
//
// FP8 (Fp8Linear): Y[M, N] = X[M, K] W[N, K]^T, the only layout Hopper's FP8 kernels take
// (TN in cuBLAS terms). On sm_90 (only: cuBLASLt has these modes on Hopper alone, Blackwell's
// block scaling being MXFP8's), X carries one FP32 scale per 1x128 tile
// (CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F, [ceil(K/128), M]) and W one per 128x128 block
// (..._BLK128x128_32F, [ceil(N/128), round_up(ceil(K/128), 4)]): exactly what
// kernels/quantize.h and fp8_quant.h produce. On sm_89, where cuBLASLt has no block
// scaling, each operand has one scale (QuantizeTensorwise). Accumulation is FP32 with
// cuBLASLt's promotion (CUBLASLT_MATMUL_DESC_FAST_ACCUM off).
//
// Plans (descriptors + the heuristic's algorithm) are cached per GemmKey. A shape cuBLASLt
// has no algorithm for, or a call cuBLASLt refuses, is a Status, not an abort.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "kernels/cuda/gemm_plan_cache.h"

namespace mt::cuda {

struct GemmPlan;  // cuBLASLt descriptors and algorithm (gemm_cublaslt.cc)

class CublasLtGemm {
 public:
  // `workspace` [workspace_bytes] device memory, owned by the caller (32 MiB is what
  // cuBLASLt recommends on Hopper); `sm` = 10 * major + minor of the current device.
  static absl::StatusOr<std::unique_ptr<CublasLtGemm>> Create(int sm, void* workspace,
                                                              size_t workspace_bytes);
  ~CublasLtGemm();
  CublasLtGemm(const CublasLtGemm&) = delete;
  CublasLtGemm& operator=(const CublasLtGemm&) = delete;

  // C[M, N] (f32 or bf16) = alpha op(A) op(B) + beta C, A and B bf16 bit patterns.
  // A is [M, K] (or [K, M] when trans_a), B is [K, N] (or [N, K] when trans_b).
  absl::Status Bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const uint16_t* A,
                    int64_t lda, const uint16_t* B, int64_t ldb, void* C, GemmDtype c_dtype,
                    int64_t ldc, float alpha, float beta, cudaStream_t stream);

  // Y[M, N] (f32 or bf16) = X[M, K] W[N, K]^T in FP8. Block scaling (sm_90):
  // x_scales [ceil(K/128), M], w_scales [ceil(N/128), round_up(ceil(K/128), 4)]. Tensor
  // scaling (sm_89 and as a fallback): x_scales, w_scales each one device float. A problem
  // cuBLASLt cannot take (CheckFp8Linear: device, K % 16, Y's rows, M % 8 and N % 4 for
  // block scales, alignment) is refused with a Status before any plan is made.
  absl::Status Fp8Linear(const uint8_t* x, const float* x_scales, GemmScale x_scale_mode,
                         const uint8_t* w, const float* w_scales, GemmScale w_scale_mode, void* y,
                         GemmDtype y_dtype, int64_t M, int64_t N, int64_t K, cudaStream_t stream);

  // Whether this device takes the block-scaled FP8 path (sm_90 only: gemm_plan_cache.h).
  bool has_block_scaling() const { return CublasLtHasBlockScaledFp8(sm_); }
  const GemmPlanCache<GemmPlan>& cache() const { return *cache_; }

 private:
  CublasLtGemm(int sm, cublasLtHandle_t handle, void* workspace, size_t workspace_bytes);
  absl::StatusOr<std::unique_ptr<GemmPlan>> MakePlan(const GemmKey& key);
  absl::Status Run(const GemmKey& key, const void* A, const void* B, void* C, const float* scale_a,
                   const float* scale_b, float alpha, float beta, cudaStream_t stream);

  int sm_;
  cublasLtHandle_t handle_;
  void* workspace_;
  size_t workspace_bytes_;
  std::unique_ptr<GemmPlanCache<GemmPlan>> cache_;
};

}  // namespace mt::cuda

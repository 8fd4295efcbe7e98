// kernels/cuda/gemm_cublaslt.cc: plans and calls for gemm_cublaslt.h.
//
// Our row-major problem C[M, N] = op(A) op(B) is cuBLASLt's column-major C^T[N, M] =
// op(B)^T op(A)^T. A row-major matrix with leading dimension ld is the column-major
// transpose with the same ld, so:
//   cuBLASLt A := our B: op N with layout [N x K] when !trans_b (B is [K, N] row-major),
//                        op T with layout [K x N] when trans_b (B is [N, K]).
//   cuBLASLt B := our A: op N with layout [K x M] when !trans_a (A is [M, K] row-major),
//                        op T with layout [M x K] when trans_a (A is [K, M]).
//   cuBLASLt D := our C: layout [N x M], ld = ldc.
// For FP8 (our A = X [M, K], our B = W [N, K] with trans_b) this is cuBLASLt's "TN" case, and
// our A's scales (1x128 tiles of X) become cuBLASLt's B scales, W's blocks its A scales.
#include "kernels/cuda/gemm_cublaslt.h"

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/status.h"

namespace mt::cuda {

struct GemmPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo;
  ~GemmPlan() {
    if (desc) cublasLtMatmulDescDestroy(desc);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
  }
};

namespace {

cudaDataType_t CudaType(GemmDtype d) {
  switch (d) {
    case GemmDtype::kF32:
      return CUDA_R_32F;
    case GemmDtype::kBF16:
      return CUDA_R_16BF;
    case GemmDtype::kE4M3:
      return CUDA_R_8F_E4M3;
  }
  return CUDA_R_32F;
}

int32_t ScaleMode(GemmScale s) {
  switch (s) {
    case GemmScale::kNone:
    case GemmScale::kTensor:
      return CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F;
    case GemmScale::kVec128:
      return CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    case GemmScale::kBlock128:
      return CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
  }
  return CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F;
}

template <typename T>
void SetDesc(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const T& value) {
  CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(desc, attr, &value, sizeof(value)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<CublasLtGemm>> CublasLtGemm::Create(int sm, void* workspace,
                                                                   size_t workspace_bytes) {
  cublasLtHandle_t handle = nullptr;
  const cublasStatus_t st = cublasLtCreate(&handle);
  if (st != CUBLAS_STATUS_SUCCESS) {
    return absl::FailedPreconditionError(
        absl::StrCat("cublasLtCreate: ", cublasLtGetStatusString(st)));
  }
  return std::unique_ptr<CublasLtGemm>(new CublasLtGemm(sm, handle, workspace, workspace_bytes));
}

CublasLtGemm::CublasLtGemm(int sm, cublasLtHandle_t handle, void* workspace, size_t workspace_bytes)
    : sm_(sm), handle_(handle), workspace_(workspace), workspace_bytes_(workspace_bytes) {
  cache_ = std::make_unique<GemmPlanCache<GemmPlan>>(
      [this](const GemmKey& key) { return MakePlan(key); });
}

CublasLtGemm::~CublasLtGemm() {
  cache_.reset();  // plans before the handle
  if (handle_) cublasLtDestroy(handle_);
}

absl::StatusOr<std::unique_ptr<GemmPlan>> CublasLtGemm::MakePlan(const GemmKey& key) {
  auto plan = std::make_unique<GemmPlan>();
  CUBLASLT_CHECK(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_a = key.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt A = our B
  const cublasOperation_t op_b = key.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt B = our A
  SetDesc(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, op_a);
  SetDesc(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, op_b);
  const bool fp8 = key.a == GemmDtype::kE4M3;
  if (fp8) {
    SetDesc(plan->desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, ScaleMode(key.scale_b));
    SetDesc(plan->desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, ScaleMode(key.scale_a));
    const int8_t fast_accum = 0;  // promote partial sums to FP32 (DeepSeek-V3 3.3.2)
    SetDesc(plan->desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, fast_accum);
  }
  const int64_t M = key.m, N = key.n, K = key.k;
  CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&plan->a, CudaType(key.b), key.trans_b ? K : N,
                                            key.trans_b ? N : K, key.ldb));
  CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&plan->b, CudaType(key.a), key.trans_a ? M : K,
                                            key.trans_a ? K : M, key.lda));
  CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&plan->c, CudaType(key.c), N, M, key.ldc));

  cublasLtMatmulPreference_t pref = nullptr;
  CUBLASLT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = workspace_bytes_;
  CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  cublasLtMatmulHeuristicResult_t result;
  int returned = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(
      handle_, plan->desc, plan->a, plan->b, plan->c, plan->c, pref, 1, &result, &returned);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || returned == 0) {
    return absl::UnimplementedError(absl::StrCat("cuBLASLt has no algorithm for this problem (",
                                                 cublasLtGetStatusString(st), ")"));
  }
  plan->algo = result.algo;
  return plan;
}

absl::Status CublasLtGemm::Run(const GemmKey& key, const void* A, const void* B, void* C,
                               const float* scale_a, const float* scale_b, float alpha, float beta,
                               cudaStream_t stream) {
  ASSIGN_OR_RETURN(GemmPlan * plan, cache_->Get(key));
  if (key.a == GemmDtype::kE4M3) {
    // Set per call: the plan is shared by every call of this shape.
    SetDesc(plan->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, static_cast<const void*>(scale_b));
    SetDesc(plan->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, static_cast<const void*>(scale_a));
  }
  // A refusal here is checked before anything is launched (e.g. a scale combination the
  // heuristic accepted but the kernel does not take): a Status, so the caller falls back to
  // its own kernel as for a shape without an algorithm, rather than an abort.
  const cublasStatus_t st =
      cublasLtMatmul(handle_, plan->desc, &alpha, B, plan->a, A, plan->b, &beta, C, plan->c, C,
                     plan->c, &plan->algo, workspace_, workspace_bytes_, stream);
  if (st != CUBLAS_STATUS_SUCCESS)
    return absl::InternalError(
        absl::StrCat("cublasLtMatmul refused the call (", cublasLtGetStatusString(st), ")"));
  return absl::OkStatus();
}

absl::Status CublasLtGemm::Bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                                const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb,
                                void* C, GemmDtype c_dtype, int64_t ldc, float alpha, float beta,
                                cudaStream_t stream) {
  if (M <= 0 || N <= 0 || K <= 0) return absl::InvalidArgumentError("GEMM with an empty dimension");
  if (c_dtype == GemmDtype::kE4M3) return absl::InvalidArgumentError("BF16 GEMM cannot write FP8");
  GemmKey key;
  key.m = M;
  key.n = N;
  key.k = K;
  key.lda = lda;
  key.ldb = ldb;
  key.ldc = ldc;
  key.trans_a = trans_a;
  key.trans_b = trans_b;
  key.accumulate = beta != 0.0f;
  key.a = key.b = GemmDtype::kBF16;
  key.c = c_dtype;
  key.sm = sm_;
  return Run(key, A, B, C, nullptr, nullptr, alpha, beta, stream);
}

absl::Status CublasLtGemm::Fp8Linear(const uint8_t* x, const float* x_scales,
                                     GemmScale x_scale_mode, const uint8_t* w,
                                     const float* w_scales, GemmScale w_scale_mode, void* y,
                                     GemmDtype y_dtype, int64_t M, int64_t N, int64_t K,
                                     cudaStream_t stream) {
  RETURN_IF_ERROR(CheckFp8Linear(
      sm_, x_scale_mode, w_scale_mode, y_dtype, M, N, K, reinterpret_cast<uintptr_t>(x),
      reinterpret_cast<uintptr_t>(x_scales), reinterpret_cast<uintptr_t>(w),
      reinterpret_cast<uintptr_t>(w_scales), reinterpret_cast<uintptr_t>(y)));
  GemmKey key;
  key.m = M;
  key.n = N;
  key.k = K;
  key.lda = K;
  key.ldb = K;
  key.ldc = N;
  key.trans_a = false;
  key.trans_b = true;
  key.a = key.b = GemmDtype::kE4M3;
  key.c = y_dtype;
  key.scale_a = x_scale_mode;
  key.scale_b = w_scale_mode;
  key.sm = sm_;
  return Run(key, x, w, y, x_scales, w_scales, 1.0f, 0.0f, stream);
}

}  // namespace mt::cuda

// kernels/cuda/backend_cuda_bf16.cc: CudaBackend's BF16 GEMMs (backend_cuda.h): the
// operands cast to BF16 bits (fp8_quant.h FloatToBf16, round to nearest even, the same
// rounding as RoundBf16 and the CPU's kernels/bf16.h), then cuBLASLt's BF16 GEMM with FP32
// accumulation (gemm_cublaslt.h) or the grouped expert GEMMs' BF16 launchers
// (grouped_gemm.h). The results equal the interface's defaults (kernels/backend.cc: rounded
// FP32 copies through the FP32 GEMMs) up to the order of the FP32 sums, which
// tests/gpu/backend_table_test.cc checks against CpuBackend.
#include <cstdint>
#include <cstdio>
#include <string>

#include "kernels/cuda/backend_cuda.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/fp8_quant.h"
#include "kernels/cuda/gemm_cublaslt.h"
#include "kernels/cuda/grouped_gemm.h"

namespace mt::cuda {
namespace {

// cuBLASLt's heuristic assumes 256-byte aligned matrices unless told otherwise
// (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*_BYTES, which gemm_cublaslt.cc leaves at the
// default), and a plan it picks may fail at launch on a less aligned pointer. The BF16
// copies of A and B are fresh pool blocks (cudaMalloc'd: 256-aligned); C is the caller's.
constexpr uintptr_t kLtAlignment = 256;

// Elements a row-major [rows, cols] operand with leading dimension ld spans: the last row
// ends at its cols-th element, so no byte past what the GEMM reads is touched (an operand
// may be a column slice that ends where its buffer does).
int64_t Span(int64_t rows, int64_t cols, int64_t ld) { return (rows - 1) * ld + cols; }

const uint16_t* Bits(const void* p) { return static_cast<const uint16_t*>(p); }

}  // namespace

CudaBackend::Block CudaBackend::Bf16Copy(const float* x, int64_t n) {
  Block codes = Scratch(static_cast<size_t>(n) * sizeof(uint16_t));  // [n] BF16 bits
  if (n > 0) cuda::FloatToBf16(x, static_cast<uint16_t*>(codes.get()), n, stream());
  return codes;
}

void CudaBackend::RoundBf16(const float* x, float* y, int64_t n) {
  if (n <= 0) return;
  const Block codes = Bf16Copy(x, n);
  cuda::Bf16ToFloat(Bits(codes.get()), y, n, stream());
}

void CudaBackend::ToBf16Bits(const float* x, uint16_t* y, int64_t n) {
  if (n > 0) cuda::FloatToBf16(x, y, n, stream());
}

void CudaBackend::FromBf16Bits(const uint16_t* x, float* y, int64_t n) {
  if (n > 0) cuda::Bf16ToFloat(x, y, n, stream());
}

void CudaBackend::GemmBf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                           const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                           float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    // C = beta C, nothing read: cuBLASLt refuses an empty K, the FP32 GEMM does exactly this.
    Gemm(trans_a, trans_b, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  // As stored: A is [M, K] or, transposed, [K, M]; B is [K, N] or [N, K].
  const Block a = Bf16Copy(A, trans_a ? Span(K, M, lda) : Span(M, K, lda));
  const Block b = Bf16Copy(B, trans_b ? Span(N, K, ldb) : Span(K, N, ldb));
  GemmBf16Bits(trans_a, trans_b, M, N, K, Bits(a.get()), lda, Bits(b.get()), ldb, beta, C, ldc,
               [&] { Backend::GemmBf16(trans_a, trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc); });
}

Tensor CudaBackend::Bf16Weight(const float* w, int64_t n) {
  Tensor t = Uninitialized({n}, DType::kBF16);  // [n] BF16 bits
  if (n > 0) cuda::FloatToBf16(w, static_cast<uint16_t*>(t.raw()), n, stream());
  return t;
}

namespace {
// A kept weight's bits, checked: of this backend's Bf16Weight, with B's extent inside it.
const uint16_t* KeptBits(const Tensor& wb, int64_t span) {
  CUDA_HOST_CHECK(wb.dtype() == DType::kBF16 && wb.numel() >= span,
                  "a kept BF16 weight is BF16 bits covering the GEMM's operand");
  return static_cast<const uint16_t*>(wb.raw());
}
}  // namespace

void CudaBackend::GemmBf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                           const float* A, int64_t lda, const Tensor& wb, int64_t ldb, float beta,
                           float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  const int64_t span = K == 0 ? 0 : trans_b ? Span(N, K, ldb) : Span(K, N, ldb);
  const uint16_t* b = KeptBits(wb, span);
  // The interface's default on the widened copy: the same numbers (exact widening), for an
  // empty K, an unaligned copy, or a shape cuBLASLt has no algorithm for.
  auto widened = [&] {
    Tensor bf = Uninitialized({span}, DType::kF32);
    if (span > 0) cuda::Bf16ToFloat(b, bf.data<float>(), span, stream());
    Backend::GemmBf16(trans_a, trans_b, M, N, K, A, lda, bf.data<float>(), ldb, beta, C, ldc);
  };
  if (K == 0 || reinterpret_cast<uintptr_t>(b) % kLtAlignment != 0) return widened();
  const Block a = Bf16Copy(A, trans_a ? Span(K, M, lda) : Span(M, K, lda));
  GemmBf16Bits(trans_a, trans_b, M, N, K, Bits(a.get()), lda, b, ldb, beta, C, ldc, widened);
}

void CudaBackend::GemmBf16Bits(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                               const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb,
                               float beta, float* C, int64_t ldc,
                               absl::FunctionRef<void()> fallback) {
  // A C that cuBLASLt's plans may not take (kLtAlignment) is computed in an aligned
  // [M, N] temporary, C copied in first when beta reads it: one extra pass over C.
  const bool aligned = reinterpret_cast<uintptr_t>(C) % kLtAlignment == 0;
  Block tmp;
  float* c = C;
  int64_t c_ld = ldc;
  if (!aligned) {
    tmp = Scratch(static_cast<size_t>(M * N) * sizeof(float));
    c = static_cast<float*>(tmp.get());
    c_ld = N;
    if (beta != 0.0f) Copy2D(C, ldc, c, c_ld, M, N);
  }
  const absl::Status s = lt_->Bf16(trans_a, trans_b, M, N, K, a, lda, b, ldb, c, GemmDtype::kF32,
                                   c_ld, 1.0f, beta, stream());
  if (!s.ok()) {
    // No cuBLASLt algorithm for this shape: the default's rounded FP32 GEMM is the same
    // numbers, only slower, so training goes on. Failed plans are not cached, so the
    // heuristic is asked again next time; that costs microseconds beside the FP32 GEMM.
    if (bf16_gemm_fallbacks_++ == 0) {
      const std::string message(s.message());
      std::fprintf(stderr,
                   "[moetrain] CUDA backend: %s; BF16 GEMMs without a cuBLASLt algorithm run as "
                   "FP32 GEMMs on rounded operands (said once)\n",
                   message.c_str());
    }
    fallback();
    return;
  }
  if (!aligned) Copy2D(c, c_ld, C, ldc, M, N);
}

// The grouped launchers multiply the BF16 copies on tensor cores with FP32 accumulation
// (grouped_gemm_bf16.cu), offsets read on the device only. The expert weights [E, N, K] are
// cast on every call of the float overloads; the device model keeps BF16 copies instead
// (Bf16Weight, once per optimizer step) and calls the kept-weight overloads.

void CudaBackend::GroupedLinearForwardBf16(const float* x, const float* w, float* y,
                                           const int32_t* offsets, int64_t rows, int64_t E,
                                           int64_t K, int64_t N) {
  const Block xb = Bf16Copy(x, rows * K), wb = Bf16Copy(w, E * N * K);
  GroupedGemmForward(Bits(xb.get()), Bits(wb.get()), y, offsets, GroupedShapeOf(rows, E, K, N),
                     stream());
}

void CudaBackend::GroupedLinearBackwardInputBf16(const float* dy, const float* w, float* dx,
                                                 const int32_t* offsets, int64_t rows, int64_t E,
                                                 int64_t K, int64_t N, bool accumulate) {
  const GroupedGemmShape shape = GroupedShapeOf(rows, E, K, N);
  const Block dyb = Bf16Copy(dy, rows * N), wb = Bf16Copy(w, E * N * K);
  GroupedDataGradInto(dx, rows, K, accumulate, [&](float* out) {
    GroupedGemmDataGrad(Bits(dyb.get()), Bits(wb.get()), out, offsets, shape, stream());
  });
}

void CudaBackend::GroupedLinearForwardBf16(const float* x, const Tensor& wb, float* y,
                                           const int32_t* offsets, int64_t rows, int64_t E,
                                           int64_t K, int64_t N) {
  const Block xb = Bf16Copy(x, rows * K);
  GroupedGemmForward(Bits(xb.get()), KeptBits(wb, E * N * K), y, offsets,
                     GroupedShapeOf(rows, E, K, N), stream());
}

void CudaBackend::GroupedLinearBackwardInputBf16(const float* dy, const Tensor& wb, float* dx,
                                                 const int32_t* offsets, int64_t rows, int64_t E,
                                                 int64_t K, int64_t N, bool accumulate) {
  const GroupedGemmShape shape = GroupedShapeOf(rows, E, K, N);
  const Block dyb = Bf16Copy(dy, rows * N);
  const uint16_t* w = KeptBits(wb, E * N * K);
  GroupedDataGradInto(dx, rows, K, accumulate, [&](float* out) {
    GroupedGemmDataGrad(Bits(dyb.get()), w, out, offsets, shape, stream());
  });
}

void CudaBackend::GroupedLinearBackwardWeightBf16(const float* dy, const float* x, float* dw,
                                                  const int32_t* offsets, int64_t rows, int64_t E,
                                                  int64_t K, int64_t N) {
  const Block dyb = Bf16Copy(dy, rows * N), xb = Bf16Copy(x, rows * K);
  GroupedGemmWeightGrad(Bits(dyb.get()), Bits(xb.get()), dw, offsets, GroupedShapeOf(rows, E, K, N),
                        stream());
}

}  // namespace mt::cuda

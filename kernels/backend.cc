// kernels/backend.cc: the default BF16 GEMMs of kernels/backend.h: round copies of the
// operands to BF16 on the backend's device, then the FP32 GEMMs. This is the CPU's BF16
// emulation (trainer/precision.h rounds the same way), and a correct, if slow, fallback for
// a device that has no faster path.
#include "kernels/backend.h"

namespace mt {
namespace {
// A BF16-rounded copy of x [n] on `be`'s device.
Tensor Rounded(Backend& be, const float* x, int64_t n) {
  Tensor t = be.Empty({n});
  be.RoundBf16(x, t.data<float>(), n);
  return t;
}
}  // namespace

void Backend::GemmBf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                       const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                       float* C, int64_t ldc) {
  // Each operand as stored: A is [M, K] or, transposed, [K, M]; B [K, N] or [N, K]. The
  // rounded copy spans the elements the GEMM reads ((rows - 1) * ld + cols), not rows * ld,
  // which could run past the end of a column slice.
  auto span = [](int64_t rows, int64_t cols, int64_t ld) {
    return rows == 0 || cols == 0 ? 0 : (rows - 1) * ld + cols;
  };
  const Tensor a = Rounded(*this, A, trans_a ? span(K, M, lda) : span(M, K, lda));
  const Tensor b = Rounded(*this, B, trans_b ? span(N, K, ldb) : span(K, N, ldb));
  Gemm(trans_a, trans_b, M, N, K, 1.0f, a.data<float>(), lda, b.data<float>(), ldb, beta, C, ldc);
}

void Backend::GroupedLinearForwardBf16(const float* x, const float* w, float* y,
                                       const int32_t* offsets, int64_t rows, int64_t E, int64_t K,
                                       int64_t N) {
  const Tensor xr = Rounded(*this, x, rows * K), wr = Rounded(*this, w, E * N * K);
  GroupedLinearForward(xr.data<float>(), wr.data<float>(), y, offsets, rows, E, K, N);
}

void Backend::GroupedLinearBackwardInputBf16(const float* dy, const float* w, float* dx,
                                             const int32_t* offsets, int64_t rows, int64_t E,
                                             int64_t K, int64_t N, bool accumulate) {
  const Tensor dyr = Rounded(*this, dy, rows * N), wr = Rounded(*this, w, E * N * K);
  GroupedLinearBackwardInput(dyr.data<float>(), wr.data<float>(), dx, offsets, rows, E, K, N,
                             accumulate);
}

void Backend::GroupedLinearBackwardWeightBf16(const float* dy, const float* x, float* dw,
                                              const int32_t* offsets, int64_t rows, int64_t E,
                                              int64_t K, int64_t N) {
  const Tensor dyr = Rounded(*this, dy, rows * N), xr = Rounded(*this, x, rows * K);
  GroupedLinearBackwardWeight(dyr.data<float>(), xr.data<float>(), dw, offsets, rows, E, K, N);
}

}  // namespace mt

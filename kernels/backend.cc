// kernels/backend.cc: what kernels/backend.h composes from a backend's own ops.
//
// BF16: the default GEMMs round copies of the operands to BF16 on the backend's device,
// then run the FP32 GEMMs. This is the CPU's BF16 emulation (trainer/precision.h rounds the
// same way), and a correct, if slow, fallback for a device that has no faster path.
// FP8: the Linear GEMMs of the recipe, from the quantisation and FP8 GEMM primitives.
#include "kernels/backend.h"

#include <vector>

#include "kernels/status.h"

namespace mt {
namespace {
// A BF16-rounded copy of x [n] on `be`'s device.
Tensor Rounded(Backend& be, const float* x, int64_t n) {
  Tensor t = be.Empty({n});
  be.RoundBf16(x, t.data<float>(), n);
  return t;
}
}  // namespace

void Backend::Broadcast2D(const float* src, int64_t src_ld, float* dst, int64_t dst_ld,
                          int64_t stride, int64_t repeats, int64_t rows, int64_t cols) {
  for (int64_t h = 0; h < repeats; ++h) Copy2D(src, src_ld, dst + h * stride, dst_ld, rows, cols);
}

void Backend::SumRepeats2D(const float* src, int64_t src_ld, int64_t stride, int64_t repeats,
                           float* dst, int64_t dst_ld, int64_t rows, int64_t cols) {
  for (int64_t h = 0; h < repeats; ++h) Add2D(src + h * stride, src_ld, dst, dst_ld, rows, cols);
}

void Backend::SumSquaresRanges(const float* g,
                               const std::vector<std::pair<int64_t, int64_t>>& ranges,
                               double* sum_sq) {
  for (const auto& [offset, n] : ranges) SumSquares(g + offset, n, sum_sq);
}

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

// The default copies are the rounded FP32 values, which the GEMMs above round again
// (rounding is idempotent): the same products as from w itself.
Tensor Backend::Bf16Weight(const float* w, int64_t n) { return Rounded(*this, w, n); }

namespace {
const float* KeptValues(const Tensor& wb) {
  MT_CHECK(wb.dtype() == DType::kF32, "a BF16 weight of another backend (", DTypeName(wb.dtype()),
           ")");
  return wb.data<float>();
}
}  // namespace

void Backend::GemmBf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
                       int64_t lda, const Tensor& b, int64_t ldb, float beta, float* C,
                       int64_t ldc) {
  GemmBf16(trans_a, trans_b, M, N, K, A, lda, KeptValues(b), ldb, beta, C, ldc);
}

void Backend::GroupedLinearForwardBf16(const float* x, const Tensor& wb, float* y,
                                       const int32_t* offsets, int64_t rows, int64_t E, int64_t K,
                                       int64_t N) {
  GroupedLinearForwardBf16(x, KeptValues(wb), y, offsets, rows, E, K, N);
}

void Backend::GroupedLinearBackwardInputBf16(const float* dy, const Tensor& wb, float* dx,
                                             const int32_t* offsets, int64_t rows, int64_t E,
                                             int64_t K, int64_t N, bool accumulate) {
  GroupedLinearBackwardInputBf16(dy, KeptValues(wb), dx, offsets, rows, E, K, N, accumulate);
}

void Backend::GroupedLinearBackwardWeightBf16(const float* dy, const float* x, float* dw,
                                              const int32_t* offsets, int64_t rows, int64_t E,
                                              int64_t K, int64_t N) {
  const Tensor dyr = Rounded(*this, dy, rows * N), xr = Rounded(*this, x, rows * K);
  GroupedLinearBackwardWeight(dyr.data<float>(), xr.data<float>(), dw, offsets, rows, E, K, N);
}

void Backend::AttentionForwardBf16(const float* q, const float* k, const float* v, float* out,
                                   Tensor* saved, int64_t B, int64_t S, int64_t N, int64_t Dqk,
                                   int64_t Dv, double scale) {
  AttentionForward(q, k, v, out, saved, B, S, N, Dqk, Dv, scale);
}

void Backend::AttentionBackwardBf16(const float* dout, const float* q, const float* k,
                                    const float* v, const float* out, const Tensor& saved,
                                    float* dq, float* dk, float* dv, int64_t B, int64_t S,
                                    int64_t N, int64_t Dqk, int64_t Dv, double scale) {
  AttentionBackward(dout, q, k, v, out, saved, dq, dk, dv, B, S, N, Dqk, Dv, scale);
}

// ---- FP8: trainer/precision.cc's Fp8Forward / Fp8BackwardInput / Fp8BackwardWeight, step
// for step, on the backend's primitives.

void Backend::Fp8LinearForward(const QuantizedActivation& x, const float* w, float* y, int64_t N) {
  Fp8Gemm(x, QuantizeWeightFp8(w, N, x.cols), y);
}

void Backend::Fp8LinearBackwardInput(const float* dy, const float* w, float* dx, int64_t M,
                                     int64_t K, int64_t N, bool accumulate) {
  Fp8LinearBackwardInput(dy, TransposeWeightFp8(QuantizeWeightFp8(w, N, K)), dx, M, accumulate);
}

void Backend::Fp8LinearBackwardInput(const float* dy, const QuantizedWeight& wt, float* dx,
                                     int64_t M, bool accumulate) {
  const int64_t K = wt.rows, N = wt.cols;                 // wt [K, N]
  const QuantizedActivation qdy = QuantizeFp8(dy, M, N);  // [M, N]
  if (!accumulate) return Fp8Gemm(qdy, wt, dx);
  Tensor t = Empty({M, K});
  Fp8Gemm(qdy, wt, t.data<float>());
  Add(t.data<float>(), dx, M * K);
}

void Backend::Fp8LinearBackwardWeight(const float* dy, const QuantizedActivation* xq,
                                      const float* x, float* dw, int64_t M, int64_t K, int64_t N) {
  Tensor dyt = Empty({N, M});
  Transpose(dy, dyt.data<float>(), M, N);
  const QuantizedActivation qa = QuantizeFp8(dyt.data<float>(), N, M);  // dy^T, tiles along M
  QuantizedActivation qb;                                                // x^T [K, M]
  if (xq) {
    qb = RetileTransposedFp8(*xq);  // the cached FP8 copy, 1x128 -> 128x1
  } else {
    Tensor xt = Empty({K, M});
    Transpose(x, xt.data<float>(), M, K);
    qb = QuantizeFp8(xt.data<float>(), K, M);
  }
  Tensor t = Empty({N, K});
  Fp8GemmTokenTiled(qa, qb, t.data<float>());
  Add(t.data<float>(), dw, N * K);
}

namespace {

std::vector<int32_t> HostOffsets(Backend& be, const int32_t* offsets, int64_t E) {
  std::vector<int32_t> h(E + 1);
  be.CopyToHost(offsets, h.data(), h.size() * sizeof(int32_t));
  return h;
}

// Rows [r0, r1) of q: the codes are a slice; the scales [tiles, M] are strided by row, so
// they are copied.
QuantizedActivation SliceRows(Backend& be, const QuantizedActivation& q, int64_t r0, int64_t r1) {
  QuantizedActivation s;
  s.rows = r1 - r0;
  s.cols = q.cols;
  s.data = q.data.Slice(r0, r1);
  s.scales = be.Empty({q.col_tiles(), s.rows});
  be.Copy2D(q.scales.data<float>() + r0, q.rows, s.scales.data<float>(), s.rows, q.col_tiles(),
            s.rows);
  return s;
}

}  // namespace

QuantizedActivation Backend::RmsNormQuantizeFp8(const float* x, const float* w, float* rstd,
                                                int64_t rows, int64_t C, double eps) {
  Tensor y = Empty({rows, C});  // [rows, C]
  RmsNormForward(x, w, y.data<float>(), rstd, rows, C, eps);
  return QuantizeFp8(y.data<float>(), rows, C);
}

QuantizedExperts Backend::QuantizeExpertsFp8(const float* w, int64_t E, int64_t N, int64_t K) {
  QuantizedExperts q;
  q.experts = E;
  q.all.rows = E * N;
  q.all.cols = K;
  const int64_t blocks = (N + kQuantTile - 1) / kQuantTile;  // per expert
  q.all.data = Empty({E * N, K}, DType::kF8E4M3);
  q.all.scales = Empty({E * blocks, q.all.scale_ld()});
  for (int64_t e = 0; e < E; ++e) {
    const QuantizedWeight we = QuantizeWeightFp8(w + e * N * K, N, K);
    QuantizedWeight dst = q.Expert(e);
    Copy(we.data.raw(), dst.data.raw(), we.data.nbytes());
    Copy(we.scales.raw(), dst.scales.raw(), we.scales.nbytes());
  }
  return q;
}

void Backend::GroupedFp8Forward(const QuantizedActivation& x, const QuantizedExperts& w, float* y,
                                const int32_t* offsets) {
  const int64_t E = w.experts, N = w.rows();
  const std::vector<int32_t> off = HostOffsets(*this, offsets, E);
  for (int64_t e = 0; e < E; ++e)
    if (off[e + 1] > off[e])
      Fp8LinearForward(SliceRows(*this, x, off[e], off[e + 1]), w.Expert(e), y + off[e] * N);
}

void Backend::GroupedFp8BackwardInput(const float* dy, const QuantizedExperts& w, float* dx,
                                      const int32_t* offsets, int64_t /*rows*/, bool accumulate) {
  const int64_t E = w.experts, N = w.rows(), K = w.all.cols;
  const std::vector<int32_t> off = HostOffsets(*this, offsets, E);
  for (int64_t e = 0; e < E; ++e)
    if (off[e + 1] > off[e])
      Fp8LinearBackwardInput(dy + off[e] * N, TransposeWeightFp8(w.Expert(e)), dx + off[e] * K,
                             off[e + 1] - off[e], accumulate);
}

void Backend::GroupedFp8BackwardWeight(const float* dy, const QuantizedActivation* xq,
                                       const float* x, float* dw, const int32_t* offsets,
                                       int64_t /*rows*/, int64_t E, int64_t K, int64_t N) {
  const std::vector<int32_t> off = HostOffsets(*this, offsets, E);
  for (int64_t e = 0; e < E; ++e) {
    if (off[e + 1] == off[e]) continue;
    const QuantizedActivation xe = xq ? SliceRows(*this, *xq, off[e], off[e + 1])
                                      : QuantizedActivation();
    Fp8LinearBackwardWeight(dy + off[e] * N, xq ? &xe : nullptr, x ? x + off[e] * K : nullptr,
                            dw + e * N * K, off[e + 1] - off[e], K, N);
  }
}

}  // namespace mt

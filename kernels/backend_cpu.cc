// kernels/backend_cpu.cc: CpuBackend (backend_cpu.h).
#include "kernels/backend_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "kernels/bf16.h"
#include "kernels/moe_route.h"
#include "kernels/ops.h"
#include "kernels/status.h"

namespace mt {
namespace {

// Token t's K slots as (permuted row, slot), ascending row = ascending expert: the order in
// which trainer/moe.cc adds a token's expert outputs.
std::vector<std::pair<int32_t, int64_t>> RowsOf(const int32_t* slot_pos, int64_t t, int64_t K) {
  std::vector<std::pair<int32_t, int64_t>> rows;
  rows.reserve(K);
  for (int64_t k = 0; k < K; ++k) rows.push_back({slot_pos[t * K + k], t * K + k});
  std::sort(rows.begin(), rows.end());
  return rows;
}

}  // namespace

// ---- memory ---------------------------------------------------------------------------

Tensor CpuBackend::Empty(std::vector<int64_t> shape, DType dtype) {
  return Tensor(std::move(shape), dtype);
}
Tensor CpuBackend::ToDevice(const Tensor& host) { return host.Clone(); }
Tensor CpuBackend::ToHost(const Tensor& t) { return t.Clone(); }
void CpuBackend::CopyToHost(const void* src, void* dst, size_t bytes) {
  if (bytes > 0) std::memcpy(dst, src, bytes);
}
void CpuBackend::CopyFromHost(const void* src, void* dst, size_t bytes) {
  if (bytes > 0) std::memcpy(dst, src, bytes);
}
void CpuBackend::Zero(Tensor* t) { t->Zero(); }
void CpuBackend::Copy(const void* src, void* dst, size_t bytes) {
  if (bytes > 0) std::memmove(dst, src, bytes);
}
void CpuBackend::Copy2D(const float* src, int64_t src_ld, float* dst, int64_t dst_ld,
                        int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(dst + r * dst_ld, src + r * src_ld, cols * sizeof(float));
}
void CpuBackend::CopyBytes2D(const void* src, int64_t src_pitch, void* dst, int64_t dst_pitch,
                             int64_t rows, int64_t width) {
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(static_cast<std::byte*>(dst) + r * dst_pitch,
                static_cast<const std::byte*>(src) + r * src_pitch, width);
}
void CpuBackend::Add2D(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t rows,
                       int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[r * dst_ld + c] += src[r * src_ld + c];
}

// ---- dense ops ------------------------------------------------------------------------

void CpuBackend::Gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                      const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                      float* C, int64_t ldc) {
  ops::Gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
void CpuBackend::RmsNormForward(const float* x, const float* w, float* y, float* rstd,
                                int64_t rows, int64_t C, double eps) {
  ops::RmsNormForward(x, w, y, rstd, rows, C, eps);
}
void CpuBackend::RmsNormBackward(const float* dy, const float* x, const float* w,
                                 const float* rstd, float* dx, float* dw, int64_t rows,
                                 int64_t C) {
  ops::RmsNormBackward(dy, x, w, rstd, dx, dw, rows, C);
}
void CpuBackend::RopeForward(float* x, int64_t B, int64_t S, int64_t H, int64_t stride,
                             int64_t offset, int64_t dr, const double* cos, const double* sin) {
  ops::RopeForward(x, B, S, H, stride, offset, dr, cos, sin);
}
void CpuBackend::RopeBackward(float* dx, int64_t B, int64_t S, int64_t H, int64_t stride,
                              int64_t offset, int64_t dr, const double* cos, const double* sin) {
  ops::RopeBackward(dx, B, S, H, stride, offset, dr, cos, sin);
}
void CpuBackend::SwigluForward(const float* gate, const float* up, float* h, int64_t n) {
  ops::SwigluForward(gate, up, h, n);
}
void CpuBackend::SwigluBackward(const float* dh, const float* gate, const float* up, float* dgate,
                                float* dup, int64_t n) {
  ops::SwigluBackward(dh, gate, up, dgate, dup, n);
}
void CpuBackend::AttentionForward(const float* q, const float* k, const float* v, float* out,
                                  Tensor* saved, int64_t B, int64_t S, int64_t N, int64_t Dqk,
                                  int64_t Dv, double scale) {
  *saved = Tensor({B, N, S, S}, DType::kF32);  // the probabilities
  ops::AttentionForward(q, k, v, out, saved->data<float>(), B, S, N, Dqk, Dv, scale);
}
void CpuBackend::AttentionBackward(const float* dout, const float* q, const float* k,
                                   const float* v, const float* /*out*/, const Tensor& saved,
                                   float* dq, float* dk, float* dv, int64_t B, int64_t S,
                                   int64_t N, int64_t Dqk, int64_t Dv, double scale) {
  ops::AttentionBackward(dout, q, k, v, saved.data<float>(), dq, dk, dv, B, S, N, Dqk, Dv, scale);
}
void CpuBackend::EmbeddingForward(const int32_t* ids, const float* table, float* out, int64_t n,
                                  int64_t C) {
  ops::EmbeddingForward(ids, table, out, n, C);
}
void CpuBackend::EmbeddingBackward(const int32_t* ids, const float* dout, float* dtable, int64_t n,
                                   int64_t C) {
  ops::EmbeddingBackward(ids, dout, dtable, n, C);
}
void CpuBackend::CrossEntropy(float* logits, const int32_t* targets, int64_t rows, int64_t V,
                              float grad_scale, double* loss_sum) {
  *loss_sum += ops::CrossEntropyForwardBackward(logits, targets, rows, V, grad_scale,
                                                static_cast<float*>(nullptr));
}
void CpuBackend::RoundBf16(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = Bf16ToFloat(FloatToBf16(x[i]));
}
void CpuBackend::ToBf16Bits(const float* x, uint16_t* y, int64_t n) { FloatsToBf16(x, y, n); }
void CpuBackend::FromBf16Bits(const uint16_t* x, float* y, int64_t n) { Bf16ToFloats(x, y, n); }
void CpuBackend::Add(const float* x, float* y, int64_t n) { ops::Add(x, y, n); }

// ---- FP8 (kernels/quantize.h with the recipe's power-of-two scales) ---------------------

namespace {
constexpr QuantizeOptions kRoundScales{/*pow2_scales=*/true};
}  // namespace

QuantizedActivation CpuBackend::QuantizeFp8(const float* x, int64_t M, int64_t K) {
  return QuantizeActivation(x, M, K, kRoundScales);
}
void CpuBackend::DequantizeFp8(const QuantizedActivation& q, float* x) {
  DequantizeActivation(q, x);
}
QuantizedActivation CpuBackend::RetileTransposedFp8(const QuantizedActivation& q) {
  return RetileTransposed(q, kRoundScales);
}
QuantizedWeight CpuBackend::QuantizeWeightFp8(const float* w, int64_t N, int64_t K) {
  return QuantizeWeight(w, N, K, kRoundScales);
}
QuantizedWeight CpuBackend::TransposeWeightFp8(const QuantizedWeight& w) {
  return TransposeWeight(w);
}
void CpuBackend::Fp8Gemm(const QuantizedActivation& a, const QuantizedWeight& w, float* y) {
  mt::Fp8Gemm(a, w, y);
}
void CpuBackend::Fp8GemmTokenTiled(const QuantizedActivation& a, const QuantizedActivation& b,
                                   float* y) {
  mt::Fp8GemmTokenTiled(a, b, y);
}
// trainer/precision.cc's Transpose, same loop.
void CpuBackend::Transpose(const float* x, float* y, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) y[c * rows + r] = x[r * cols + c];
}
void CpuBackend::RoundE5M6(const float* x, float* y, int64_t M, int64_t K) {
  RoundE5M6Tiles(x, y, M, K);
}
void CpuBackend::Axpy(float a, const float* x, float* y, int64_t n) { ops::Axpy(a, x, y, n); }

// ---- MoE (trainer/moe.cc's loops) -----------------------------------------------------

void CpuBackend::RouterForward(const float* logits, const float* bias, float* scores,
                               int32_t* topk, float* weight, int64_t* load,
                               const RouteShape& sh) {
  MT_CHECK(sh.seq_len > 0, "RouterForward: seq_len must be positive");
  const int64_t T = sh.tokens, E = sh.experts, K = sh.top_k;
  for (int64_t i = 0; i < T * E; ++i) scores[i] = 1.0f / (1.0f + std::exp(-logits[i]));
  for (int64_t t = 0; t < T; ++t) {
    int32_t* idx = topk + t * K;
    const float* sc = scores + t * E;
    GroupLimitedTopK(sc, bias, E, K, sh.n_group, sh.topk_group, idx);
    GateWeights(sc, idx, K, sh.norm_topk, sh.scaling, weight + t * K);
    if (t % sh.seq_len < sh.valid)
      for (int64_t k = 0; k < K; ++k) load[idx[k]] += 1;
  }
}

void CpuBackend::BalanceForward(const float* scores, const int32_t* topk, double* f,
                                double* loss, const RouteShape& sh) {
  *loss += BalanceStats(scores, topk, sh.tokens / sh.seq_len, sh.seq_len, sh.valid, sh.experts,
                        sh.top_k, f, /*load=*/nullptr);
}

void CpuBackend::RouterBackward(const float* scores, const int32_t* topk, const double* dw,
                                const double* f, double balance_scale, float* d_logits,
                                const RouteShape& sh) {
  RouterLogitGrad(scores, topk, dw, f, sh.tokens / sh.seq_len, sh.seq_len, sh.valid, sh.experts,
                  sh.top_k, sh.norm_topk, sh.scaling, balance_scale, d_logits);
}

void CpuBackend::MoePlanBuild(const int32_t* topk, int64_t T, int64_t K, int64_t E,
                              const MoeRoutingPlan& plan) {
  std::vector<std::vector<int64_t>> slots(E);
  for (int64_t s = 0; s < T * K; ++s) slots[topk[s]].push_back(s);
  int64_t p = 0;
  for (int64_t e = 0; e < E; ++e) {
    plan.offsets[e] = static_cast<int32_t>(p);
    for (int64_t s : slots[e]) {
      plan.src_token[p] = static_cast<int32_t>(s / K);
      plan.slot_pos[s] = static_cast<int32_t>(p);
      ++p;
    }
  }
  plan.offsets[E] = static_cast<int32_t>(p);
}

void CpuBackend::PermuteRows(const float* x, float* xp, const int32_t* src_token, int64_t P,
                             int64_t H) {
  for (int64_t p = 0; p < P; ++p)
    std::memcpy(xp + p * H, x + int64_t(src_token[p]) * H, H * sizeof(float));
}

void CpuBackend::Combine(const float* ye, const float* weight, const int32_t* slot_pos, float* y,
                         int64_t T, int64_t K, int64_t H) {
  for (int64_t t = 0; t < T; ++t)
    for (const auto& [row, slot] : RowsOf(slot_pos, t, K))
      ops::Axpy(weight[slot], ye + int64_t(row) * H, y + t * H, H);
}

void CpuBackend::CombineBackward(const float* dy, const float* ye, const float* weight,
                                 const int32_t* slot_pos, float* dye, double* dweight, int64_t T,
                                 int64_t K, int64_t H) {
  for (int64_t s = 0; s < T * K; ++s) {
    const float* g = dy + (s / K) * H;
    const int64_t p = slot_pos[s];
    double dot = 0;
    for (int64_t c = 0; c < H; ++c) dot += static_cast<double>(g[c]) * ye[p * H + c];
    dweight[s] = dot;
    const float w = weight[s];
    for (int64_t c = 0; c < H; ++c) dye[p * H + c] = w * g[c];
  }
}

void CpuBackend::UnpermuteAdd(const float* dxp, const int32_t* slot_pos, float* dx, int64_t T,
                              int64_t K, int64_t H) {
  for (int64_t t = 0; t < T; ++t)
    for (const auto& [row, slot] : RowsOf(slot_pos, t, K))
      ops::Add(dxp + int64_t(row) * H, dx + t * H, H);
}

void CpuBackend::SegmentSumRows(const float* x, const int32_t* offsets, const int32_t* rows,
                                float* y, int64_t segments, int64_t H) {
  for (int64_t s = 0; s < segments; ++s) {
    float* out = y + s * H;
    std::fill(out, out + H, 0.0f);
    for (int32_t j = offsets[s]; j < offsets[s + 1]; ++j)
      ops::Add(x + int64_t(rows[j]) * H, out, H);
  }
}

void CpuBackend::GatherRows(const void* x, void* y, const int32_t* src, int64_t n,
                            int64_t row_bytes) {
  const auto* in = static_cast<const std::byte*>(x);
  auto* out = static_cast<std::byte*>(y);
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(out + i * row_bytes, in + int64_t(src[i]) * row_bytes, row_bytes);
}

// One GEMM per non-empty expert over its rows, as trainer/moe.cc runs each expert.
void CpuBackend::GroupedLinearForward(const float* x, const float* w, float* y,
                                      const int32_t* offsets, int64_t /*rows*/, int64_t E,
                                      int64_t K, int64_t N) {
  for (int64_t e = 0; e < E; ++e) {
    const int64_t r0 = offsets[e], m = offsets[e + 1] - r0;
    if (m > 0) ops::LinearForward(x + r0 * K, w + e * N * K, y + r0 * N, m, K, N);
  }
}
void CpuBackend::GroupedLinearBackwardInput(const float* dy, const float* w, float* dx,
                                            const int32_t* offsets, int64_t /*rows*/, int64_t E,
                                            int64_t K, int64_t N, bool accumulate) {
  for (int64_t e = 0; e < E; ++e) {
    const int64_t r0 = offsets[e], m = offsets[e + 1] - r0;
    if (m > 0)
      ops::LinearBackwardInput(dy + r0 * N, w + e * N * K, dx + r0 * K, m, K, N, accumulate);
  }
}
void CpuBackend::GroupedLinearBackwardWeight(const float* dy, const float* x, float* dw,
                                             const int32_t* offsets, int64_t /*rows*/, int64_t E,
                                             int64_t K, int64_t N) {
  for (int64_t e = 0; e < E; ++e) {
    const int64_t r0 = offsets[e], m = offsets[e + 1] - r0;
    if (m > 0) ops::LinearBackwardWeight(dy + r0 * N, x + r0 * K, dw + e * N * K, m, K, N);
  }
}

// ---- optimizer ------------------------------------------------------------------------

void CpuBackend::SumSquares(const float* g, int64_t n, double* sum_sq) {
  *sum_sq += ops::SumSquares(g, n);
}
void CpuBackend::Scale(float* g, int64_t n, float scale) {
  for (int64_t i = 0; i < n; ++i) g[i] *= scale;
}
namespace {
// Moment storage, read and written as trainer/optimizer.cc's AdamUpdate does.
double LoadMoment(const float* p, int64_t i) { return p[i]; }
double LoadMoment(const uint16_t* p, int64_t i) { return Bf16ToFloat(p[i]); }
void StoreMoment(float* p, int64_t i, double x) { p[i] = static_cast<float>(x); }
void StoreMoment(uint16_t* p, int64_t i, double x) { p[i] = FloatToBf16(static_cast<float>(x)); }

template <typename M>
void AdamWLoop(float* w, const float* g, M* m, M* v, int64_t n, bool decay,
               const AdamStepCoeffs& c) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const double mi = c.b1 * LoadMoment(m, i) + (1 - c.b1) * g[i];
    const double vi = c.b2 * LoadMoment(v, i) + (1 - c.b2) * static_cast<double>(g[i]) * g[i];
    StoreMoment(m, i, mi);
    StoreMoment(v, i, vi);
    double p = w[i];
    if (decay) p *= 1 - c.lr * c.wd;  // decoupled (torch.optim.AdamW order)
    p -= c.lr * (mi / c.bc1) / (std::sqrt(vi / c.bc2) + c.eps);
    w[i] = static_cast<float>(p);
  }
}
}  // namespace

void CpuBackend::AdamW(float* w, const float* g, float* m, float* v, int64_t n, bool decay,
                       const AdamStepCoeffs& c) {
  AdamWLoop(w, g, m, v, n, decay, c);
}
void CpuBackend::AdamWBf16Moments(float* w, const float* g, uint16_t* m, uint16_t* v, int64_t n,
                                  bool decay, const AdamStepCoeffs& c) {
  AdamWLoop(w, g, m, v, n, decay, c);
}

}  // namespace mt

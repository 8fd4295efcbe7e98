// tests/gpu/op_table.cc: the entries of the GPU op table (op_table.h).
#include "tests/gpu/op_table.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <tuple>
#include <type_traits>
#include <vector>

#include "kernels/bf16.h"
#include "kernels/cuda/adamw.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/cross_entropy.h"
#include "kernels/cuda/fp8_quant.h"
#include "kernels/cuda/gemm_cublaslt.h"
#include "kernels/cuda/grouped_gemm.h"
#include "kernels/cuda/moe_permute.h"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/cuda/router.h"
#include "kernels/fp8.h"
#include "kernels/ops.h"
#include "kernels/quantize.h"
#include "kernels/status.h"

namespace mt::cuda::test {
namespace {

constexpr double kFp32 = 1e-5;
constexpr double kBf16 = 1e-2;
// FP8 GEMMs against the FP64 product of the dequantised operands: the products are exact,
// so this bounds cuBLASLt's accumulation (FP32 with promotion) and the output rounding.
constexpr double kFp8Gemm = 1e-3;
constexpr cudaStream_t kStream = nullptr;  // the default stream

template <typename T>
std::vector<T> FromTensor(const Tensor& t) {
  const T* p = static_cast<const T*>(t.raw());
  return std::vector<T>(p, p + t.numel());
}

// ---- fp32 ops of ops_cuda.h ----------------------------------------------------------

std::vector<Check> RmsNorm() {
  const int64_t rows = 37, C = 1000;  // C not a multiple of the block or the dw tile
  const double eps = 1e-6;
  auto x = Random(rows * C, 1, 2.0f), w = Random(C, 2, 0.5f, 1.0f), dy = Random(rows * C, 3);
  std::vector<float> y(rows * C), rstd(rows), dx(rows * C), dw = Random(C, 4);
  DeviceBuffer<float> d_x(x), d_w(w), d_dy(dy), d_y(y), d_rstd(rstd), d_dx(dx), d_dw(dw);
  ops::RmsNormForward<float>(x.data(), w.data(), y.data(), rstd.data(), rows, C, eps);
  ops::RmsNormBackward<float>(dy.data(), x.data(), w.data(), rstd.data(), dx.data(), dw.data(),
                              rows, C);
  RmsNormForward(d_x.get(), d_w.get(), d_y.get(), d_rstd.get(), rows, C, eps, kStream);
  RmsNormBackward(d_dy.get(), d_x.get(), d_w.get(), d_rstd.get(), d_dx.get(), d_dw.get(), rows, C,
                  kStream);
  return {RelError("y", d_y.ToHost(), y, kFp32), RelError("rstd", d_rstd.ToHost(), rstd, kFp32),
          RelError("dx", d_dx.ToHost(), dx, kFp32),
          RelError("dw (accumulated)", d_dw.ToHost(), dw, kFp32)};
}

std::vector<Check> Rope() {
  const int64_t B = 2, S = 19, H = 5, stride = 80, offset = 16, dr = 64;
  std::vector<double> cos(S * dr / 2), sin(S * dr / 2);
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t i = 0; i < dr / 2; ++i) {
      const double angle = s * std::pow(10000.0, -2.0 * i / dr);
      cos[s * dr / 2 + i] = 1.1 * std::cos(angle);  // YaRN-like mscale folded in
      sin[s * dr / 2 + i] = 1.1 * std::sin(angle);
    }
  }
  auto x = Random(B * S * H * stride, 5), dx = Random(B * S * H * stride, 6);
  DeviceBuffer<float> d_x(x), d_dx(dx);
  DeviceBuffer<double> d_cos(cos), d_sin(sin);
  ops::RopeForward<float>(x.data(), B, S, H, stride, offset, dr, cos.data(), sin.data());
  ops::RopeBackward<float>(dx.data(), B, S, H, stride, offset, dr, cos.data(), sin.data());
  RopeForward(d_x.get(), B, S, H, stride, offset, dr, d_cos.get(), d_sin.get(), kStream);
  RopeBackward(d_dx.get(), B, S, H, stride, offset, dr, d_cos.get(), d_sin.get(), kStream);
  return {RelError("forward", d_x.ToHost(), x, kFp32),
          RelError("backward", d_dx.ToHost(), dx, kFp32)};
}

std::vector<Check> Swiglu() {
  const int64_t n = 100003;
  auto gate = Random(n, 7, 6.0f), up = Random(n, 8), dh = Random(n, 9);
  std::vector<float> h(n), dgate(n), dup(n);
  DeviceBuffer<float> d_gate(gate), d_up(up), d_dh(dh), d_h(h), d_dgate(dgate), d_dup(dup);
  ops::SwigluForward<float>(gate.data(), up.data(), h.data(), n);
  ops::SwigluBackward<float>(dh.data(), gate.data(), up.data(), dgate.data(), dup.data(), n);
  SwigluForward(d_gate.get(), d_up.get(), d_h.get(), n, kStream);
  SwigluBackward(d_dh.get(), d_gate.get(), d_up.get(), d_dgate.get(), d_dup.get(), n, kStream);
  return {RelError("h", d_h.ToHost(), h, kFp32), RelError("dgate", d_dgate.ToHost(), dgate, kFp32),
          RelError("dup", d_dup.ToHost(), dup, kFp32)};
}

std::vector<Check> Embedding() {
  const int64_t n = 300, V = 50, C = 96;
  std::vector<int32_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = int32_t((7 * i + 3) % V);  // every id ~6 times
  auto table = Random(V * C, 10), dout = Random(n * C, 11), dtable = Random(V * C, 12);
  std::vector<float> out(n * C);
  DeviceBuffer<int32_t> d_ids(ids);
  DeviceBuffer<float> d_table(table), d_dout(dout), d_dtable(dtable), d_out(out);
  ops::EmbeddingForward<float>(ids.data(), table.data(), out.data(), n, C);
  ops::EmbeddingBackward<float>(ids.data(), dout.data(), dtable.data(), n, C);
  EmbeddingForward(d_ids.get(), d_table.get(), d_out.get(), n, C, kStream);
  EmbeddingBackward(d_ids.get(), d_dout.get(), d_dtable.get(), n, C, kStream);
  return {RelError("forward", d_out.ToHost(), out, kFp32),
          RelError("backward (repeated ids)", d_dtable.ToHost(), dtable, kFp32)};
}

std::vector<Check> AddAxpy() {
  const int64_t n = 77777;
  auto x = Random(n, 13), y_add = Random(n, 14), y_axpy = Random(n, 15);
  DeviceBuffer<float> d_x(x), d_y_add(y_add), d_y_axpy(y_axpy);
  ops::Add<float>(x.data(), y_add.data(), n);
  ops::Axpy<float>(-0.3f, x.data(), y_axpy.data(), n);
  Add(d_x.get(), d_y_add.get(), n, kStream);
  Axpy(-0.3f, d_x.get(), d_y_axpy.get(), n, kStream);
  return {RelError("add", d_y_add.ToHost(), y_add, kFp32),
          RelError("axpy", d_y_axpy.ToHost(), y_axpy, kFp32)};
}

// ---- MoE routing and permutation ------------------------------------------------------

RouterShape TestRouterShape() {
  RouterShape sh;
  sh.tokens = 515;  // not a multiple of the 4 tokens per block
  sh.experts = 64;
  sh.top_k = 6;
  sh.n_group = 8;
  sh.topk_group = 3;
  sh.norm_topk = true;
  sh.scaling = 2.5;
  sh.seq_len = 103;
  sh.valid = 100;  // MTP-style: the last 3 positions of each sequence do not count
  return sh;
}

std::vector<Check> Router() {
  const RouterShape sh = TestRouterShape();
  const int64_t T = sh.tokens, E = sh.experts, K = sh.top_k;
  auto logits = Random(T * E, 20, 4.0f), bias = Random(E, 21, 0.05f);
  DeviceBuffer<float> d_logits(logits), d_bias(bias), d_scores(T * E), d_weight(T * K);
  DeviceBuffer<int32_t> d_topk(T * K);
  DeviceBuffer<int64_t> d_load(E);
  RouterForward(d_logits.get(), d_bias.get(), d_scores.get(), d_topk.get(), d_weight.get(),
                d_load.get(), sh, kStream);
  std::vector<float> scores(T * E);
  for (int64_t i = 0; i < T * E; ++i) scores[i] = 1.0f / (1.0f + std::exp(-logits[i]));
  // Discrete routing is compared on the GPU's own scores (the sigmoid may differ in the
  // last bit, and a near-tie could then flip legitimately).
  const std::vector<float> gpu_scores = d_scores.ToHost();
  std::vector<int32_t> topk(T * K);
  std::vector<float> weight(T * K);
  std::vector<int64_t> load(E, 0);
  ref::RouteFromScores(gpu_scores.data(), bias.data(), topk.data(), weight.data(), load.data(), sh);
  return {RelError("scores (sigmoid)", gpu_scores, scores, kFp32),
          Mismatches("topk", d_topk.ToHost(), topk),
          Mismatches("weight", d_weight.ToHost(), weight),
          Mismatches("load", d_load.ToHost(), load)};
}

// Tokens whose logits are all NaN (a diverged forward the trainer skips) must still route to
// K distinct experts in range, and the finite tokens as the CPU routes them.
std::vector<Check> RouterNanLogits() {
  const RouterShape sh = TestRouterShape();
  const int64_t T = sh.tokens, E = sh.experts, K = sh.top_k;
  auto logits = Random(T * E, 22, 4.0f), bias = Random(E, 23, 0.05f);
  const auto nan_row = [](int64_t t) { return t % 7 == 2; };
  for (int64_t t = 0; t < T; ++t)
    if (nan_row(t)) std::fill(logits.begin() + t * E, logits.begin() + (t + 1) * E, NAN);
  DeviceBuffer<float> d_logits(logits), d_bias(bias), d_scores(T * E), d_weight(T * K);
  DeviceBuffer<int32_t> d_topk(T * K);
  DeviceBuffer<int64_t> d_load(E);
  RouterForward(d_logits.get(), d_bias.get(), d_scores.get(), d_topk.get(), d_weight.get(),
                d_load.get(), sh, kStream);
  const std::vector<float> gpu_scores = d_scores.ToHost();
  const std::vector<int32_t> got = d_topk.ToHost();
  std::vector<int32_t> want(T * K), got_finite, want_finite;
  std::vector<float> weight(T * K);
  std::vector<int64_t> load(E, 0);
  ref::RouteFromScores(gpu_scores.data(), bias.data(), want.data(), weight.data(), load.data(), sh);
  Check bad{"NaN tokens: picks out of range or repeated", 0, 0};
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> picks(got.begin() + t * K, got.begin() + (t + 1) * K);
    if (!nan_row(t)) {
      got_finite.insert(got_finite.end(), picks.begin(), picks.end());
      want_finite.insert(want_finite.end(), want.begin() + t * K, want.begin() + (t + 1) * K);
      continue;
    }
    std::sort(picks.begin(), picks.end());
    for (int64_t k = 0; k < K; ++k)
      if (picks[k] < 0 || picks[k] >= E || (k > 0 && picks[k] == picks[k - 1])) bad.error += 1;
  }
  return {bad, Mismatches("finite tokens: topk", got_finite, want_finite)};
}

// A routing with every expert's count different, some experts empty.
std::vector<int32_t> TestTopk(int64_t T, int64_t K, int64_t E, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> topk(T * K);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> experts(E);
    for (int64_t e = 0; e < E; ++e) experts[e] = int32_t(e);
    // Skewed: low experts more likely; the last two never chosen.
    std::partial_sort(experts.begin(), experts.begin() + K, experts.end() - 2,
                      [&](int32_t a, int32_t b) { return (rng() % (a + 4)) < (rng() % (b + 4)); });
    std::copy(experts.begin(), experts.begin() + K, topk.begin() + t * K);
  }
  return topk;
}

std::vector<Check> MoePermutation() {
  const int64_t T = 301, K = 4, E = 16, H = 72, P = T * K;
  const std::vector<int32_t> topk = TestTopk(T, K, E, 30);
  DeviceBuffer<int32_t> d_topk(topk), d_src(P), d_pos(P), d_counts(E), d_offsets(E + 1);
  const size_t ws_bytes = MoePlanWorkspaceBytes(P, E);
  DeviceBuffer<char> d_ws(ws_bytes);
  MoePlanBuild(d_topk.get(), T, K, E, {d_src.get(), d_pos.get(), d_counts.get(), d_offsets.get()},
               d_ws.get(), ws_bytes, kStream);
  std::vector<int32_t> src(P), pos(P), counts(E), offsets(E + 1);
  ref::MoePlanBuild(topk.data(), T, K, E, src.data(), pos.data(), counts.data(), offsets.data());

  auto x = Random(T * H, 31);
  DeviceBuffer<float> d_x(x), d_xp(P * H);
  PermuteRows(d_x.get(), d_xp.get(), d_src.get(), P, H * sizeof(float), kStream);
  std::vector<float> xp(P * H);
  for (int64_t p = 0; p < P; ++p)
    std::copy(x.begin() + src[p] * H, x.begin() + (src[p] + 1) * H, xp.begin() + p * H);

  auto ye = Random(P * H, 32), weight = Random(P, 33, 0.5f, 0.5f), dy = Random(T * H, 34);
  auto dxp = Random(P * H, 35);
  DeviceBuffer<float> d_ye(ye), d_w(weight), d_dy(dy), d_dxp(dxp), d_y(T * H), d_dye(P * H),
      d_dw(P), d_dx(T * H);
  Combine(d_ye.get(), d_w.get(), d_pos.get(), d_y.get(), T, K, H, kStream);
  CombineBackward(d_dy.get(), d_ye.get(), d_w.get(), d_pos.get(), d_dye.get(), d_dw.get(), T, K, H,
                  kStream);
  UnpermuteSum(d_dxp.get(), d_pos.get(), d_dx.get(), T, K, H, kStream);
  std::vector<float> y(T * H), dye(P * H), dw(P), dx(T * H);
  ref::Combine(ye.data(), weight.data(), pos.data(), y.data(), T, K, H);
  ref::CombineBackward(dy.data(), ye.data(), weight.data(), pos.data(), dye.data(), dw.data(), T, K,
                       H);
  ref::UnpermuteSum(dxp.data(), pos.data(), dx.data(), T, K, H);
  return {Mismatches("plan src_token", d_src.ToHost(), src),
          Mismatches("plan slot_pos", d_pos.ToHost(), pos),
          Mismatches("plan counts", d_counts.ToHost(), counts),
          Mismatches("plan offsets", d_offsets.ToHost(), offsets),
          Mismatches("permute rows", d_xp.ToHost(), xp),
          RelError("combine", d_y.ToHost(), y, kFp32),
          RelError("combine backward dye", d_dye.ToHost(), dye, kFp32),
          RelError("combine backward dweight", d_dw.ToHost(), dw, kFp32),
          RelError("unpermute sum", d_dx.ToHost(), dx, kFp32)};
}

// ---- loss and optimizer ---------------------------------------------------------------

std::vector<Check> CrossEntropy() {
  const int64_t R = 45, V = 5003;
  auto logits = Random(R * V, 40, 8.0f);
  std::vector<int32_t> targets(R);
  for (int64_t r = 0; r < R; ++r) targets[r] = r % 9 == 4 ? -1 : int32_t((r * 977) % V);
  const float grad_scale = 1.0f / 41;
  DeviceBuffer<float> d_logits(logits), d_losses(R);
  DeviceBuffer<int32_t> d_targets(targets);
  DeviceBuffer<uint16_t> d_bf16(R * V);
  DeviceBuffer<double> d_partials(kSumPartials), d_total(1);
  CrossEntropyForwardBackward(d_logits.get(), d_targets.get(), R, V, grad_scale, d_losses.get(),
                              d_bf16.get(), kStream);
  SumAccumulate(d_losses.get(), R, d_partials.get(), d_total.get(), kStream);
  std::vector<float> losses(R);
  const double total = ops::CrossEntropyForwardBackward<float>(logits.data(), targets.data(), R, V,
                                                               grad_scale, losses.data());
  const std::vector<float> dlogits = d_logits.ToHost();
  std::vector<uint16_t> bf16(R * V);
  for (int64_t i = 0; i < R * V; ++i) bf16[i] = mt::FloatToBf16(dlogits[i]);
  return {RelError("dlogits", dlogits, logits, kFp32),
          RelError("row losses", d_losses.ToHost(), losses, kFp32),
          RelError("loss sum", d_total.ToHost(), std::vector<double>{total}, kFp32),
          Mismatches("dlogits bf16 = bf16(dlogits)", d_bf16.ToHost(), bf16)};
}

std::vector<Check> AdamW() {
  const int64_t n = 50021;
  auto w = Random(n, 50), g = Random(n, 51, 0.1f), m = Random(n, 52, 0.01f);
  auto v = Random(n, 53, 1e-3f, 1e-3f);
  std::vector<uint16_t> mb(n), vb(n);
  for (int64_t i = 0; i < n; ++i) {
    mb[i] = mt::FloatToBf16(m[i]);
    vb[i] = mt::FloatToBf16(v[i]);
  }
  const AdamWCoeffs c = MakeAdamWCoeffs(3e-4, 0.9, 0.95, 1e-8, 0.1, 7);
  DeviceBuffer<float> d_w(w), d_g(g), d_m(m), d_v(v), d_w2(w);
  DeviceBuffer<uint16_t> d_mb(mb), d_vb(vb);
  AdamWStep(d_w.get(), d_g.get(), d_m.get(), d_v.get(), n, true, c, kStream);
  AdamWStepBf16Moments(d_w2.get(), d_g.get(), d_mb.get(), d_vb.get(), n, false, c, kStream);
  auto w2 = w;
  ref::AdamWStep(w.data(), g.data(), m.data(), v.data(), n, true, c);
  ref::AdamWStepBf16Moments(w2.data(), g.data(), mb.data(), vb.data(), n, false, c);
  auto to_float = [](const std::vector<uint16_t>& b) {
    std::vector<float> f(b.size());
    for (size_t i = 0; i < b.size(); ++i) f[i] = mt::Bf16ToFloat(b[i]);
    return f;
  };
  return {RelError("w (decay, fp32 moments)", d_w.ToHost(), w, kFp32),
          RelError("m fp32", d_m.ToHost(), m, kFp32),
          RelError("v fp32", d_v.ToHost(), v, kFp32),
          RelError("w (no decay, bf16 moments)", d_w2.ToHost(), w2, kFp32),
          RelError("m bf16", to_float(d_mb.ToHost()), to_float(mb), kBf16),
          RelError("v bf16", to_float(d_vb.ToHost()), to_float(vb), kBf16)};
}

std::vector<Check> GradNorm() {
  const auto a = Random(300007, 60), b = Random(1001, 61, 3.0f);
  DeviceBuffer<float> d_a(a), d_b(b);
  DeviceBuffer<double> d_partials(kNormPartials), d_sum(1);
  SumSquaresAccumulate(d_a.get(), int64_t(a.size()), d_partials.get(), d_sum.get(), kStream);
  SumSquaresAccumulate(d_b.get(), int64_t(b.size()), d_partials.get(), d_sum.get(), kStream);
  const double want = ops::SumSquares<float>(a.data(), int64_t(a.size())) +
                      ops::SumSquares<float>(b.data(), int64_t(b.size()));
  auto scaled = b;
  for (float& x : scaled) x *= 0.25f;
  Scale(d_b.get(), int64_t(b.size()), 0.25f, kStream);
  return {RelError("sum of squares", d_sum.ToHost(), std::vector<double>{want}, kFp32),
          Mismatches("clip scale", d_b.ToHost(), scaled)};
}

// ---- FP8 / BF16 formats (bit-exact with kernels/quantize.cc, fp8.cc, bf16.h) ------------

std::vector<Check> QuantizeActivations() {
  std::vector<Check> checks;
  const int64_t M = 67, K = 300;  // a partial tile in K
  auto x = Random(M * K, 70, 3.0f);
  for (int64_t i = 0; i < M * K; i += 97) x[i] *= 1e-6f;        // subnormal codes
  std::fill(x.begin() + 5 * K, x.begin() + 5 * K + 128, 0.0f);  // an all-zero tile
  for (bool pow2 : {false, true}) {
    const QuantizedActivation q = mt::QuantizeActivation(x.data(), M, K, {pow2});
    DeviceBuffer<float> d_x(x), d_scales(ActScaleCount(M, K)), d_deq(M * K);
    DeviceBuffer<uint8_t> d_codes(M * K);
    cuda::QuantizeActivation(d_x.get(), d_codes.get(), d_scales.get(), M, K, pow2, kStream);
    cuda::DequantizeActivation(d_codes.get(), d_scales.get(), d_deq.get(), M, K, kStream);
    std::vector<float> deq(M * K);
    mt::DequantizeActivation(q, deq.data());
    const std::string tag = pow2 ? " (pow2 scales)" : "";
    checks.push_back(
        Mismatches("1x128 codes" + tag, d_codes.ToHost(), FromTensor<uint8_t>(q.data)));
    checks.push_back(
        Mismatches("1x128 scales" + tag, d_scales.ToHost(), FromTensor<float>(q.scales)));
    checks.push_back(Mismatches("dequantize" + tag, d_deq.ToHost(), deq));

    // Backward re-tiling: X^T's 1x128 tiles from X's.
    const QuantizedActivation qt = mt::RetileTransposed(q, {pow2});
    DeviceBuffer<uint8_t> d_codes_t(M * K);
    DeviceBuffer<float> d_scales_t(ActScaleCount(K, M));
    cuda::RetileTransposed(d_codes.get(), d_scales.get(), d_codes_t.get(), d_scales_t.get(), M, K,
                           pow2, kStream);
    checks.push_back(Mismatches("retile transposed codes" + tag, d_codes_t.ToHost(),
                                FromTensor<uint8_t>(qt.data)));
    checks.push_back(Mismatches("retile transposed scales" + tag, d_scales_t.ToHost(),
                                FromTensor<float>(qt.scales)));
  }
  return checks;
}

std::vector<Check> QuantizeWeights() {
  const int64_t N = 300, K = 650;  // partial blocks both ways; ceil(K/128) = 6 -> ld 8
  auto w = Random(N * K, 80, 0.05f);
  const QuantizedWeight q = mt::QuantizeWeight(w.data(), N, K);
  const QuantizedWeight qt = mt::TransposeWeight(q);
  DeviceBuffer<float> d_w(w), d_deq(N * K);
  // Poisoned scale buffers: the padding must be written (as 0), not left behind.
  DeviceBuffer<float> d_scales(std::vector<float>(WeightScaleCount(N, K), -1.0f));
  DeviceBuffer<float> d_scales_t(std::vector<float>(WeightScaleCount(K, N), -1.0f));
  DeviceBuffer<uint8_t> d_codes(N * K), d_codes_t(N * K);
  cuda::QuantizeWeight(d_w.get(), d_codes.get(), d_scales.get(), N, K, false, kStream);
  cuda::DequantizeWeight(d_codes.get(), d_scales.get(), d_deq.get(), N, K, kStream);
  cuda::TransposeWeight(d_codes.get(), d_scales.get(), d_codes_t.get(), d_scales_t.get(), N, K,
                        kStream);
  std::vector<float> deq(N * K);
  mt::DequantizeWeight(q, deq.data());
  return {
      Mismatches("128x128 codes", d_codes.ToHost(), FromTensor<uint8_t>(q.data)),
      Mismatches("128x128 scales (+ zero padding)", d_scales.ToHost(), FromTensor<float>(q.scales)),
      Mismatches("dequantize", d_deq.ToHost(), deq),
      Mismatches("transpose codes", d_codes_t.ToHost(), FromTensor<uint8_t>(qt.data)),
      Mismatches("transpose scales", d_scales_t.ToHost(), FromTensor<float>(qt.scales))};
}

std::vector<Check> QuantizeTensorwise() {
  const int64_t n = 123457;
  auto x = Random(n, 90, 17.0f);
  float amax = 0;
  for (float v : x) amax = std::max(amax, std::fabs(v));
  const float scale = mt::Fp8Scale(amax, false);
  std::vector<uint8_t> codes(n);
  for (int64_t i = 0; i < n; ++i) codes[i] = mt::FloatToE4M3(x[i] / scale);
  DeviceBuffer<float> d_x(x), d_scale(1);
  DeviceBuffer<uint8_t> d_codes(n);
  DeviceBuffer<uint32_t> d_amax(1);
  cuda::QuantizeTensorwise(d_x.get(), d_codes.get(), d_scale.get(), d_amax.get(), n, kStream);
  return {Mismatches("scale", d_scale.ToHost(), std::vector<float>{scale}),
          Mismatches("codes", d_codes.ToHost(), codes)};
}

std::vector<Check> Bf16Casts() {
  const int64_t n = 70001;
  auto x = Random(n, 100, 1e3f);
  x[0] = NAN;
  x[1] = INFINITY;
  x[2] = -0.0f;
  x[3] = 1e-40f;   // subnormal
  x[4] = 3.0e38f;  // rounds to inf
  std::vector<uint16_t> b(n);
  FloatsToBf16(x.data(), b.data(), n);
  std::vector<float> back(n);
  Bf16ToFloats(b.data(), back.data(), n);
  DeviceBuffer<float> d_x(x), d_back(n);
  DeviceBuffer<uint16_t> d_b(n);
  cuda::FloatToBf16(d_x.get(), d_b.get(), n, kStream);
  cuda::Bf16ToFloat(d_b.get(), d_back.get(), n, kStream);
  return {Mismatches("fp32 -> bf16", d_b.ToHost(), b),
          Mismatches("bf16 -> fp32", d_back.ToHost(), back)};
}

// The fused kernel's codes must equal the CPU quantisation of the unfused GPU RMSNorm.
std::vector<Check> RmsNormQuantizeFused() {
  const int64_t rows = 29, C = 7168;  // DeepSeek-V3's hidden size
  const double eps = 1e-6;
  auto x = Random(rows * C, 110, 2.0f), w = Random(C, 111, 0.5f, 1.0f);
  DeviceBuffer<float> d_x(x), d_w(w), d_y(rows * C), d_rstd(rows), d_rstd2(rows);
  DeviceBuffer<float> d_scales(ActScaleCount(rows, C));
  DeviceBuffer<uint8_t> d_codes(rows * C);
  RmsNormForward(d_x.get(), d_w.get(), d_y.get(), d_rstd.get(), rows, C, eps, kStream);
  RmsNormQuantize(d_x.get(), d_w.get(), d_codes.get(), d_scales.get(), d_rstd2.get(), rows, C, eps,
                  /*pow2_scales=*/true, kStream);
  const std::vector<float> y = d_y.ToHost();
  const QuantizedActivation q = mt::QuantizeActivation(y.data(), rows, C, {true});
  return {Mismatches("rstd = unfused rstd", d_rstd2.ToHost(), d_rstd.ToHost()),
          Mismatches("codes = CPU quantize(y)", d_codes.ToHost(), FromTensor<uint8_t>(q.data)),
          Mismatches("scales = CPU quantize(y)", d_scales.ToHost(), FromTensor<float>(q.scales))};
}

// ---- GEMMs (cuBLASLt) -----------------------------------------------------------------

std::vector<uint16_t> ToBf16(const std::vector<float>& x) {
  std::vector<uint16_t> b(x.size());
  for (size_t i = 0; i < x.size(); ++i) b[i] = mt::FloatToBf16(x[i]);
  return b;
}

std::vector<float> FromBf16(const std::vector<uint16_t>& b) {
  std::vector<float> x(b.size());
  for (size_t i = 0; i < b.size(); ++i) x[i] = mt::Bf16ToFloat(b[i]);
  return x;
}

// C[M, N] = alpha op(A) op(B) + beta C in double (row-major, as ops::Gemm).
std::vector<double> GemmF64(bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                            const std::vector<float>& A, const std::vector<float>& B,
                            const std::vector<float>& C, double alpha, double beta) {
  std::vector<double> out(M * N);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k)
        acc += double(ta ? A[k * M + m] : A[m * K + k]) * double(tb ? B[n * K + k] : B[k * N + n]);
      out[m * N + n] = alpha * acc + beta * C[m * N + n];
    }
  return out;
}

// A GEMM runner for the current device with a 32 MiB workspace.
struct GemmFixture {
  GemmFixture() : workspace(size_t(32) << 20) {
    int dev = 0;
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
    sm = prop.major * 10 + prop.minor;
    auto g = CublasLtGemm::Create(sm, workspace.get(), workspace.size());
    MT_CHECK(g.ok(), g.status().ToString());
    gemm = std::move(*g);
  }
  DeviceBuffer<char> workspace;
  int sm = 0;
  std::unique_ptr<CublasLtGemm> gemm;
};

Check StatusCheck(const std::string& what, const absl::Status& s) {
  if (!s.ok()) std::printf("  %s: %s\n", what.c_str(), s.ToString().c_str());
  return {what + (s.ok() ? "" : " (call failed)"), s.ok() ? 0.0 : 1.0, 0};
}

std::vector<Check> GemmBf16() {
  GemmFixture f;
  std::vector<Check> checks;
  const int64_t M = 190, N = 264, K = 520;
  int seed = 120;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      const auto A = FromBf16(ToBf16(Random(M * K, seed++))),
                 B = FromBf16(ToBf16(Random(K * N, seed++)));
      const auto C0 = Random(M * N, seed++);
      const bool acc = ta && tb;  // one combination also accumulates into C
      const float beta = acc ? 0.5f : 0.0f;
      DeviceBuffer<uint16_t> d_a(ToBf16(A)), d_b(ToBf16(B));
      DeviceBuffer<float> d_c(C0);
      const std::string tag = std::string(ta ? "T" : "N") + (tb ? "T" : "N") + (acc ? " +=" : "");
      checks.push_back(StatusCheck(
          "call " + tag, f.gemm->Bf16(ta, tb, M, N, K, d_a.get(), ta ? M : K, d_b.get(), tb ? K : N,
                                      d_c.get(), GemmDtype::kF32, N, 1.0f, beta, kStream)));
      checks.push_back(RelError("C fp32 " + tag, d_c.ToHost(),
                                GemmF64(ta, tb, M, N, K, A, B, C0, 1.0, beta), kFp32));
    }
  }
  // BF16 output: one rounding of the FP32 result.
  const auto A = FromBf16(ToBf16(Random(M * K, seed++))),
             B = FromBf16(ToBf16(Random(N * K, seed++)));
  DeviceBuffer<uint16_t> d_a(ToBf16(A)), d_b(ToBf16(B)), d_c(M * N);
  checks.push_back(StatusCheck(
      "call NT bf16 out", f.gemm->Bf16(false, true, M, N, K, d_a.get(), K, d_b.get(), K, d_c.get(),
                                       GemmDtype::kBF16, N, 1.0f, 0.0f, kStream)));
  checks.push_back(RelError("C bf16 NT", FromBf16(d_c.ToHost()),
                            GemmF64(false, true, M, N, K, A, B, std::vector<float>(M * N), 1, 0),
                            kBf16));
  // The plan cache: the second identical call is a hit.
  const int64_t hits = f.gemm->cache().hits();
  checks.push_back(StatusCheck(
      "repeat call", f.gemm->Bf16(false, true, M, N, K, d_a.get(), K, d_b.get(), K, d_c.get(),
                                  GemmDtype::kBF16, N, 1.0f, 0.0f, kStream)));
  checks.push_back({"plan cache hit on repeat", double(f.gemm->cache().hits() - hits - 1), 0});
  return checks;
}

std::vector<Check> GemmFp8(bool block) {
  GemmFixture f;
  const int64_t M = 200, N = 320, K = 640;  // N: a partial 128-row weight block
  const auto x = Random(M * K, 140, 2.0f), w = Random(N * K, 141, 0.05f);
  if (block && !CublasLtHasBlockScaledFp8(f.sm)) {
    DeviceBuffer<uint8_t> d(M * K);
    DeviceBuffer<float> s(1), y(M * N);
    const absl::Status st =
        f.gemm->Fp8Linear(d.get(), s.get(), GemmScale::kVec128, d.get(), s.get(),
                          GemmScale::kBlock128, y.get(), GemmDtype::kF32, M, N, K, kStream);
    return {
        {"refused off sm_90 (FailedPrecondition)", absl::IsFailedPrecondition(st) ? 0.0 : 1.0, 0}};
  }
  std::vector<float> xd(M * K), wd(N * K);
  std::vector<uint8_t> xc, wc;
  std::vector<float> xs, ws;
  if (block) {
    const QuantizedActivation qx = mt::QuantizeActivation(x.data(), M, K);
    const QuantizedWeight qw = mt::QuantizeWeight(w.data(), N, K);
    mt::DequantizeActivation(qx, xd.data());
    mt::DequantizeWeight(qw, wd.data());
    xc = FromTensor<uint8_t>(qx.data);
    wc = FromTensor<uint8_t>(qw.data);
    xs = FromTensor<float>(qx.scales);
    ws = FromTensor<float>(qw.scales);
  } else {
    for (auto [src, n, codes, scales, deq] :
         {std::tuple{&x, M * K, &xc, &xs, &xd}, std::tuple{&w, N * K, &wc, &ws, &wd}}) {
      float amax = 0;
      for (float v : *src) amax = std::max(amax, std::fabs(v));
      const float s = mt::Fp8Scale(amax, false);
      scales->assign(1, s);
      codes->resize(n);
      for (int64_t i = 0; i < n; ++i) {
        (*codes)[i] = mt::FloatToE4M3((*src)[i] / s);
        (*deq)[i] = mt::E4M3ToFloat((*codes)[i]) * s;
      }
    }
  }
  const auto want = GemmF64(false, true, M, N, K, xd, wd, std::vector<float>(M * N), 1, 0);
  DeviceBuffer<uint8_t> d_xc(xc), d_wc(wc);
  DeviceBuffer<float> d_xs(xs), d_ws(ws), d_y(M * N);
  DeviceBuffer<uint16_t> d_yb(M * N);
  const GemmScale xm = block ? GemmScale::kVec128 : GemmScale::kTensor;
  const GemmScale wm = block ? GemmScale::kBlock128 : GemmScale::kTensor;
  std::vector<Check> checks;
  checks.push_back(StatusCheck(
      "call, f32 out", f.gemm->Fp8Linear(d_xc.get(), d_xs.get(), xm, d_wc.get(), d_ws.get(), wm,
                                         d_y.get(), GemmDtype::kF32, M, N, K, kStream)));
  checks.push_back(RelError("Y f32 vs FP64(dequantised)", d_y.ToHost(), want, kFp8Gemm));
  checks.push_back(StatusCheck(
      "call, bf16 out", f.gemm->Fp8Linear(d_xc.get(), d_xs.get(), xm, d_wc.get(), d_ws.get(), wm,
                                          d_yb.get(), GemmDtype::kBF16, M, N, K, kStream)));
  checks.push_back(RelError("Y bf16 vs FP64(dequantised)", FromBf16(d_yb.ToHost()), want, kBf16));
  return checks;
}

// ---- attention (attention.h) ----------------------------------------------------------

// DeepSeek-V3's MLA head dims (Q/K 192 = 128 nope + 64 rope, V 128) at a small size; the
// scale as MLA's: a YaRN-like mscale^2 over sqrt(Dqk).
AttentionShape MlaAttentionShape() { return {2, 128, 4, 192, 128, 1.2 / std::sqrt(192.0)}; }

int CurrentSm() {
  int dev = 0;
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  return prop.major * 10 + prop.minor;
}

// S > kBlock (each softmax thread loops over several keys), head dims unlike MLA's,
// three heads (chunked 2 + 1 below).
AttentionShape OddAttentionShape() { return {1, 300, 3, 40, 24, 0.2}; }

// Forward and backward through attention.h's dispatch vs ops::AttentionForward/Backward
// in fp32 on the same (for bf16: BF16-rounded) inputs. fp32 also checks the saved P and
// the head-chunked unfused path (a workspace for N - 1 heads: chunks of N - 1 and 1).
template <typename T>
std::vector<Check> AttentionCase(const AttentionShape& sh) {
  constexpr bool kF32 = std::is_same_v<T, float>;
  const AttentionDtype dtype = kF32 ? AttentionDtype::kF32 : AttentionDtype::kBF16;
  const double tol = kF32 ? kFp32 : kBf16;
  const int64_t B = sh.B, S = sh.S, N = sh.N, Dqk = sh.Dqk, Dv = sh.Dv;
  const int64_t nqk = B * S * N * Dqk, nv = B * S * N * Dv;
  // Operands as the GPU sees them: BF16-rounded for bf16, so only the GPU's roundings of
  // P, dS and the outputs separate the two.
  auto as_input = [&](std::vector<float> x) { return kF32 ? x : FromBf16(ToBf16(x)); };
  const auto q = as_input(Random(nqk, 160, 2.0f)), k = as_input(Random(nqk, 161, 2.0f)),
             v = as_input(Random(nv, 162)), dout = as_input(Random(nv, 163));
  std::vector<float> out(nv), probs(B * N * S * S), dq(nqk), dk(nqk), dv(nv);
  ops::AttentionForward<float>(q.data(), k.data(), v.data(), out.data(), probs.data(), B, S, N, Dqk,
                               Dv, sh.scale);
  ops::AttentionBackward<float>(dout.data(), q.data(), k.data(), v.data(), probs.data(), dq.data(),
                                dk.data(), dv.data(), B, S, N, Dqk, Dv, sh.scale);

  auto device_input = [&](const std::vector<float>& x) {
    if constexpr (kF32) {
      return std::make_unique<DeviceBuffer<T>>(x);
    } else {
      return std::make_unique<DeviceBuffer<T>>(ToBf16(x));
    }
  };
  auto to_float = [&](const DeviceBuffer<T>& d) {
    if constexpr (kF32) {
      return d.ToHost();
    } else {
      return FromBf16(d.ToHost());
    }
  };
  auto d_q = device_input(q), d_k = device_input(k), d_v = device_input(v),
       d_dout = device_input(dout);
  DeviceBuffer<T> d_out(nv), d_dq(nqk), d_dk(nqk), d_dv(nv);

  std::vector<Check> checks;
  auto attention = Attention::Create(
      CurrentSm(), [](const std::string& line) { std::printf("  %s\n", line.c_str()); });
  checks.push_back(StatusCheck("Attention::Create", attention.status()));
  if (!attention.ok()) return checks;
  Attention& a = **attention;
  DeviceBuffer<char> d_ws(a.WorkspaceBytes(sh, dtype)), d_saved(a.SavedBytes(sh, dtype));
  checks.push_back(
      StatusCheck("forward", a.Forward<T>(sh, d_q->get(), d_k->get(), d_v->get(), d_out.get(),
                                          d_saved.get(), d_ws.get(), d_ws.size(), kStream)));
  checks.push_back(
      StatusCheck("backward", a.Backward<T>(sh, d_dout->get(), d_q->get(), d_k->get(), d_v->get(),
                                            d_out.get(), d_saved.get(), d_dq.get(), d_dk.get(),
                                            d_dv.get(), d_ws.get(), d_ws.size(), kStream)));
  checks.push_back(RelError("out", to_float(d_out), out, tol));
  checks.push_back(RelError("dq", to_float(d_dq), dq, tol));
  checks.push_back(RelError("dk", to_float(d_dk), dk, tol));
  checks.push_back(RelError("dv", to_float(d_dv), dv, tol));

  if constexpr (kF32) {
    if (a.Choose(sh, dtype).path == AttentionPath::kUnfusedCublas) {
      // The saved state of the unfused path is P itself.
      std::vector<float> saved(B * N * S * S);
      CUDA_CHECK(cudaMemcpy(saved.data(), d_saved.get(), saved.size() * sizeof(float),
                            cudaMemcpyDeviceToHost));
      checks.push_back(RelError("saved P", saved, probs, tol));
    }
    // Head chunking: N - 1 heads in one GEMM batch, the last in the next (cuBLAS may pick
    // another algorithm per batch count, so against the reference, not bit for bit).
    const size_t per_head = UnfusedAttentionWorkspaceBytes(sh, dtype) / size_t(N);
    DeviceBuffer<char> d_ws_chunk(size_t(std::max<int64_t>(N - 1, 1)) * per_head);
    DeviceBuffer<T> d_out_chunk(nv), d_p_chunk(B * N * S * S), d_dq_chunk(nqk), d_dk_chunk(nqk),
        d_dv_chunk(nv);
    cublasHandle_t handle = nullptr;
    CUBLAS_CHECK(cublasCreate(&handle));
    UnfusedAttentionForward<T>(handle, sh, d_q->get(), d_k->get(), d_v->get(), d_out_chunk.get(),
                               d_p_chunk.get(), d_ws_chunk.get(), d_ws_chunk.size(), kStream);
    UnfusedAttentionBackward<T>(handle, sh, d_dout->get(), d_q->get(), d_k->get(), d_v->get(),
                                d_p_chunk.get(), d_dq_chunk.get(), d_dk_chunk.get(),
                                d_dv_chunk.get(), d_ws_chunk.get(), d_ws_chunk.size(), kStream);
    checks.push_back(RelError("chunked heads: out", d_out_chunk.ToHost(), out, tol));
    checks.push_back(RelError("chunked heads: dq", d_dq_chunk.ToHost(), dq, tol));
    checks.push_back(RelError("chunked heads: dk", d_dk_chunk.ToHost(), dk, tol));
    checks.push_back(RelError("chunked heads: dv", d_dv_chunk.ToHost(), dv, tol));
    CUBLAS_CHECK(cublasDestroy(handle));
  }
  return checks;
}

// ---- grouped expert GEMMs (grouped_gemm.h) ---------------------------------------------

// Ragged experts as routing leaves them: an empty one in the middle and at the end, a single
// row, exact and off-by-one tile multiples; 3 spare rows past offsets[E] that must stay
// untouched. N and K are multiples of neither the 64-wide tiles nor the 32-deep K step.
std::vector<int32_t> GroupedOffsets() {
  const std::vector<int32_t> counts = {70, 0, 1, 130, 64, 65, 0, 33};
  std::vector<int32_t> off(counts.size() + 1, 0);
  for (size_t e = 0; e < counts.size(); ++e) off[e + 1] = off[e] + counts[e];
  return off;
}

// Y = X W_e^T, dX = dY W_e, dW += dY^T X per expert, offsets only on the device. fp32: all
// FP32 at kFp32. bf16: BF16 operands (rounded first, so the FP64 reference sees the same
// values) with FP32 outputs at kFp32 (as gemm_bf16) and BF16 outputs at kBf16.
template <bool kBf16>
std::vector<Check> GroupedGemm() {
  const auto off = GroupedOffsets();
  GroupedGemmShape sh;
  sh.experts = int64_t(off.size()) - 1;
  sh.rows = off.back() + 3;
  sh.n = 72;
  sh.k = 100;
  const int64_t R = sh.rows, E = sh.experts, N = sh.n, K = sh.k;
  auto round = [](std::vector<float> v) { return kBf16 ? FromBf16(ToBf16(v)) : v; };
  const auto x = round(Random(R * K, 200)), w = round(Random(E * N * K, 201, 0.1f)),
             dy = round(Random(R * N, 202));
  const auto y0 = Random(R * N, 203), dx0 = Random(R * K, 204), dw0 = Random(E * N * K, 205);
  auto y = y0, dx = dx0, dw = dw0;  // [R, N], [R, K], [E, N, K]
  ref::GroupedGemmForward(x.data(), w.data(), y.data(), off.data(), sh);
  ref::GroupedGemmDataGrad(dy.data(), w.data(), dx.data(), off.data(), sh);
  ref::GroupedGemmWeightGrad(dy.data(), x.data(), dw.data(), off.data(), sh);

  DeviceBuffer<int32_t> d_off(off);  // [E + 1], never read back by the launchers
  DeviceBuffer<float> d_y(y0), d_dx(dx0), d_dw(dw0);
  std::vector<Check> checks;
  if constexpr (kBf16) {
    DeviceBuffer<uint16_t> d_x(ToBf16(x)), d_w(ToBf16(w)), d_dy(ToBf16(dy));
    DeviceBuffer<uint16_t> d_yb(ToBf16(y0)), d_dxb(ToBf16(dx0));
    GroupedGemmForward(d_x.get(), d_w.get(), d_y.get(), d_off.get(), sh, kStream);
    GroupedGemmForward(d_x.get(), d_w.get(), d_yb.get(), d_off.get(), sh, kStream);
    GroupedGemmDataGrad(d_dy.get(), d_w.get(), d_dx.get(), d_off.get(), sh, kStream);
    GroupedGemmDataGrad(d_dy.get(), d_w.get(), d_dxb.get(), d_off.get(), sh, kStream);
    GroupedGemmWeightGrad(d_dy.get(), d_x.get(), d_dw.get(), d_off.get(), sh, kStream);
    checks.push_back(RelError("y bf16 out", FromBf16(d_yb.ToHost()), y, kBf16));
    checks.push_back(RelError("dx bf16 out", FromBf16(d_dxb.ToHost()), dx, kBf16));
  } else {
    DeviceBuffer<float> d_x(x), d_w(w), d_dy(dy);
    GroupedGemmForward(d_x.get(), d_w.get(), d_y.get(), d_off.get(), sh, kStream);
    GroupedGemmDataGrad(d_dy.get(), d_w.get(), d_dx.get(), d_off.get(), sh, kStream);
    GroupedGemmWeightGrad(d_dy.get(), d_x.get(), d_dw.get(), d_off.get(), sh, kStream);
  }
  const auto got_y = d_y.ToHost(), got_dx = d_dx.ToHost();
  checks.push_back(RelError("y fp32 out", got_y, y, kFp32));
  checks.push_back(RelError("dx fp32 out", got_dx, dx, kFp32));
  checks.push_back(RelError("dw (accumulated)", d_dw.ToHost(), dw, kFp32));
  // The spare rows past offsets[E] keep their bytes (a relative error would hide them).
  std::vector<float> spare_got, spare_want;
  for (int64_t i = off.back() * N; i < R * N; ++i) spare_got.push_back(got_y[i]);
  for (int64_t i = off.back() * N; i < R * N; ++i) spare_want.push_back(y0[i]);
  for (int64_t i = off.back() * K; i < R * K; ++i) spare_got.push_back(got_dx[i]);
  for (int64_t i = off.back() * K; i < R * K; ++i) spare_want.push_back(dx0[i]);
  checks.push_back(Mismatches("rows past offsets[E] untouched", spare_got, spare_want));
  return checks;
}

}  // namespace

const std::vector<OpCase>& OpTable() {
  static const std::vector<OpCase> table = {
      {"rmsnorm", "fp32", RmsNorm},
      {"rope", "fp32", Rope},
      {"swiglu", "fp32", Swiglu},
      {"embedding", "fp32", Embedding},
      {"add_axpy", "fp32", AddAxpy},
      {"router", "exact", Router},
      {"router_nan_logits", "exact", RouterNanLogits},
      {"moe_permutation", "exact", MoePermutation},
      {"cross_entropy", "fp32", CrossEntropy},
      {"adamw", "fp32", AdamW},
      {"grad_norm", "fp32", GradNorm},
      {"fp8_quantize_1x128", "exact", QuantizeActivations},
      {"fp8_quantize_128x128", "exact", QuantizeWeights},
      {"fp8_quantize_tensorwise", "exact", QuantizeTensorwise},
      {"bf16_casts", "exact", Bf16Casts},
      {"rmsnorm_fp8_fused", "exact", RmsNormQuantizeFused},
      {"gemm_bf16", "bf16", GemmBf16},
      {"gemm_fp8_block_scaled", "fp8", [] { return GemmFp8(true); }},
      {"gemm_fp8_tensor_scaled", "fp8", [] { return GemmFp8(false); }},
      {"attention_mla_fp32", "fp32", [] { return AttentionCase<float>(MlaAttentionShape()); }},
      {"attention_mla_bf16", "bf16", [] { return AttentionCase<uint16_t>(MlaAttentionShape()); }},
      {"attention_odd_fp32", "fp32", [] { return AttentionCase<float>(OddAttentionShape()); }},
      {"grouped_gemm_fp32", "fp32", GroupedGemm<false>},
      {"grouped_gemm_bf16", "bf16", GroupedGemm<true>},
  };
  return table;
}

}  // namespace mt::cuda::test

// tests/trainer/precision_test.cc: training.precision (trainer/precision.h): fp32 unchanged,
// the bf16 and fp8 GEMM paths against their definitions, the whole model's loss and
// gradients in bf16 and fp8 against fp32, and the activation memory each mode holds.
#include "trainer/precision.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/bf16.h"
#include "kernels/ops.h"
#include "trainer/activation_memory.h"
#include "trainer/layers.h"
#include "trainer/mlp.h"
#include "trainer/model.h"
#include "trainer/rng.h"

static_assert(std::is_same_v<mt::Real, float>, "the precision emulation runs in float");

namespace mt {
namespace {

constexpr QuantizeOptions kPow2{true};

Tensor RandomMatrix(int64_t rows, int64_t cols, uint64_t seed, double scale = 1.0) {
  Tensor t({rows, cols});
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i)
    p[i] = static_cast<float>(scale * RandomNormal(seed, 1, i));
  return t;
}

bool SameBits(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// A Linear whose dimensions cross tile boundaries with padded edges: in = 200 (128 + 72),
// out = 300 (2 x 128 + 44), T = 170 tokens (128 + 42 along the Wgrad tiles).
struct LinearCase {
  static constexpr int64_t kIn = 200, kOut = 300, kT = 170;
  explicit LinearCase(Precision p) : policy(p), ps(7, 0.05) {
    ps.set_precision(&policy);
    linear = Linear(ps, "w", kIn, kOut);
  }
  const float* w() const { return linear.weight()->value.data<float>(); }
  PrecisionPolicy policy;
  ParamStore ps;
  Linear linear;
};

// FP64 product y[M,N] = a[M,K] b[N,K]^T of dequantised operands.
std::vector<double> ReferenceProduct(const std::vector<float>& a, const std::vector<float>& b,
                                     int64_t M, int64_t N, int64_t K) {
  std::vector<double> y(M * N, 0.0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += double(a[m * K + k]) * b[n * K + k];
      y[m * N + n] = s;
    }
  return y;
}

std::vector<float> Dequantized(const QuantizedActivation& q) {
  std::vector<float> x(q.rows * q.cols);
  DequantizeActivation(q, x.data());
  return x;
}

std::vector<float> Dequantized(const QuantizedWeight& q) {
  std::vector<float> x(q.rows * q.cols);
  DequantizeWeight(q, x.data());
  return x;
}

std::vector<float> Transposed(const float* x, int64_t rows, int64_t cols) {
  std::vector<float> y(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) y[c * rows + r] = x[r * cols + c];
  return y;
}

// |got - want| <= tol * (sum_k |a_k b_k|) per element: FP32 accumulation error of a K-term
// dot product with 128-term chunks is at most about (128 + K/128) u of that sum; tol = 1e-4
// is ~1e3 u, far below one E4M3 rounding (2^-4) and so still tells a wrong operand apart.
void ExpectMatchesReference(const float* got, const std::vector<float>& a,
                            const std::vector<float>& b, int64_t M, int64_t N, int64_t K) {
  const std::vector<double> want = ReferenceProduct(a, b, M, N, K);
  int bad = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double mag = 0;
      for (int64_t k = 0; k < K; ++k) mag += std::fabs(double(a[m * K + k]) * b[n * K + k]);
      if (std::fabs(got[m * N + n] - want[m * N + n]) > 1e-4 * mag + 1e-30) ++bad;
    }
  EXPECT_EQ(bad, 0);
}

TEST(Precision, ParsesTheThreeModes) {
  EXPECT_EQ(*ParsePrecision("fp32"), Precision::kFp32);
  EXPECT_EQ(*ParsePrecision("bf16"), Precision::kBf16);
  EXPECT_EQ(*ParsePrecision("fp8"), Precision::kFp8);
  const auto bad = ParsePrecision("fp16");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("fp16"), std::string::npos);
}

TEST(Precision, Fp8LinearForwardIsQuantizedLinearForward) {
  LinearCase c(Precision::kFp8);
  const Tensor x = RandomMatrix(LinearCase::kT, LinearCase::kIn, 11);
  const Tensor y = c.linear.Forward(x);
  Tensor want({LinearCase::kT, LinearCase::kOut});
  QuantizedLinearForward(x.data<float>(), c.w(), want.data<float>(), LinearCase::kT,
                         LinearCase::kIn, LinearCase::kOut, kPow2);
  EXPECT_TRUE(SameBits(y, want));
  // The stored input is the Fprop's operand: forwarding it again gives the same bits.
  const StoredActivation stored = c.linear.Store(x);
  EXPECT_EQ(stored.format(), StoredActivation::Format::kE4M3);
  EXPECT_TRUE(SameBits(c.linear.Forward(stored), want));
}

TEST(Precision, Fp8LinearBackwardInputUsesQuantizedGradientAndTransposedBlocks) {
  LinearCase c(Precision::kFp8);
  const int64_t T = LinearCase::kT, in = LinearCase::kIn, out = LinearCase::kOut;
  const Tensor dy = RandomMatrix(T, out, 12);
  const Tensor dx = c.linear.BackwardInput(dy);
  // dx = Q(dy) [T, out] . (Q(W)^T) [in, out]^T, scales along the inner dimension `out`.
  const std::vector<float> a = Dequantized(QuantizeActivation(dy.data<float>(), T, out, kPow2));
  const std::vector<float> b = Dequantized(TransposeWeight(QuantizeWeight(c.w(), out, in, kPow2)));
  ExpectMatchesReference(dx.data<float>(), a, b, T, in, out);
  // Accumulating adds the same product.
  Tensor acc = RandomMatrix(T, in, 13);
  const Tensor before = acc.Clone();
  c.linear.BackwardInput(dy.data<float>(), acc.data<float>(), T, /*accumulate=*/true);
  for (int64_t i = 0; i < acc.numel(); ++i)
    ASSERT_EQ(acc.data<float>()[i], before.data<float>()[i] + dx.data<float>()[i]);
}

TEST(Precision, Fp8LinearBackwardWeightTilesAlongTokens) {
  LinearCase c(Precision::kFp8);
  const int64_t T = LinearCase::kT, in = LinearCase::kIn, out = LinearCase::kOut;
  const Tensor x = RandomMatrix(T, in, 14), dy = RandomMatrix(T, out, 15);
  const StoredActivation stored = c.linear.Store(x);
  c.linear.weight()->grad.Zero();
  c.linear.BackwardWeight(dy, stored);
  // dW = Q(dy^T) [out, T] . RetileTransposed(Q(x)) [in, T]^T: both tiled along the T tokens,
  // x from its cached FP8 copy (1x128 along `in` re-tiled to 1x128 along T).
  const std::vector<float> dyt = Transposed(dy.data<float>(), T, out);
  const std::vector<float> a = Dequantized(QuantizeActivation(dyt.data(), out, T, kPow2));
  const std::vector<float> b = Dequantized(RetileTransposed(stored.e4m3(), kPow2));
  ExpectMatchesReference(c.linear.weight()->grad.data<float>(), a, b, out, in, T);
}

// The three FP8 GEMMs against the exact FP32 ones: E4M3 keeps 3 mantissa bits, so each
// operand element is off by at most 2^-4 relative (RMS about 2^-4 / sqrt(3) = 3.6% for a
// uniform rounding error), and a product of two such operands has a relative Frobenius error
// of about sqrt(2) x 3.6% = 5%; Wgrad quantises x twice (cached copy, then re-tiled), which
// with power-of-two scales adds nothing for normal-range values. Bound: 8%.
TEST(Precision, Fp8LinearGemmsAreCloseToFp32) {
  LinearCase f8(Precision::kFp8), f32(Precision::kFp32);
  const int64_t T = LinearCase::kT;
  const Tensor x = RandomMatrix(T, LinearCase::kIn, 16), dy = RandomMatrix(T, LinearCase::kOut, 17);
  auto rel = [](const Tensor& got, const Tensor& want) {
    double e = 0, n = 0;
    for (int64_t i = 0; i < got.numel(); ++i) {
      const double d = got.data<float>()[i] - want.data<float>()[i];
      e += d * d;
      n += double(want.data<float>()[i]) * want.data<float>()[i];
    }
    return std::sqrt(e / n);
  };
  EXPECT_LT(rel(f8.linear.Forward(x), f32.linear.Forward(x)), 0.08);
  EXPECT_LT(rel(f8.linear.BackwardInput(dy), f32.linear.BackwardInput(dy)), 0.08);
  f8.linear.weight()->grad.Zero();
  f32.linear.weight()->grad.Zero();
  f8.linear.BackwardWeight(dy, f8.linear.Store(x));
  f32.linear.BackwardWeight(dy, f32.linear.Store(x));
  const double e = rel(f8.linear.weight()->grad, f32.linear.weight()->grad);
  EXPECT_LT(e, 0.08);
  EXPECT_GT(e, 0.0);  // it is really quantised
}

TEST(Precision, Bf16LinearRoundsOperandsAndAccumulatesInFp32) {
  LinearCase c(Precision::kBf16);
  const int64_t T = LinearCase::kT, in = LinearCase::kIn, out = LinearCase::kOut;
  const Tensor x = RandomMatrix(T, in, 18), dy = RandomMatrix(T, out, 19);
  auto rounded = [](const float* p, int64_t n) {
    std::vector<float> r(n);
    for (int64_t i = 0; i < n; ++i) r[i] = Bf16ToFloat(FloatToBf16(p[i]));
    return r;
  };
  const std::vector<float> xb = rounded(x.data<float>(), T * in), wb = rounded(c.w(), out * in),
                           dyb = rounded(dy.data<float>(), T * out);
  Tensor want({T, out});
  ops::LinearForward(xb.data(), wb.data(), want.data<float>(), T, in, out);
  const StoredActivation stored = c.linear.Store(x);
  EXPECT_EQ(stored.format(), StoredActivation::Format::kBf16);
  EXPECT_EQ(stored.bytes(), T * in * 2);
  EXPECT_TRUE(SameBits(c.linear.Forward(stored), want));
  Tensor want_dx({T, in});
  ops::LinearBackwardInput(dyb.data(), wb.data(), want_dx.data<float>(), T, in, out, false);
  EXPECT_TRUE(SameBits(c.linear.BackwardInput(dy), want_dx));
  Tensor want_dw({out, in});
  ops::LinearBackwardWeight(dyb.data(), xb.data(), want_dw.data<float>(), T, in, out);
  c.linear.weight()->grad.Zero();
  c.linear.BackwardWeight(dy, stored);
  EXPECT_TRUE(SameBits(c.linear.weight()->grad, want_dw));
}

TEST(Precision, Fp32LinearIsTheReferenceOp) {
  LinearCase c(Precision::kFp32);
  const int64_t T = LinearCase::kT, in = LinearCase::kIn, out = LinearCase::kOut;
  const Tensor x = RandomMatrix(T, in, 20);
  Tensor want({T, out});
  ops::LinearForward(x.data<float>(), c.w(), want.data<float>(), T, in, out);
  const StoredActivation stored = c.linear.Store(x);
  EXPECT_EQ(stored.format(), StoredActivation::Format::kExact);
  EXPECT_EQ(stored.buffer(), x.raw());  // shared, not copied
  EXPECT_TRUE(SameBits(c.linear.Forward(x), want));
}

TEST(Precision, Fp8GemmTokenTiledMatchesDequantisedProduct) {
  const int64_t M = 37, N = 150, K = 300;
  const Tensor a = RandomMatrix(M, K, 21), b = RandomMatrix(N, K, 22, 1e-3);
  const QuantizedActivation qa = QuantizeActivation(a.data<float>(), M, K, kPow2);
  const QuantizedActivation qb = QuantizeActivation(b.data<float>(), N, K, kPow2);
  std::vector<float> y(M * N);
  Fp8GemmTokenTiled(qa, qb, y.data());
  ExpectMatchesReference(y.data(), Dequantized(qa), Dequantized(qb), M, N, K);
}

// The SwiGLU block in fp8 keeps x, gate and up as E4M3 codes plus one FP32 scale per
// 1x128 tile, and no SwiGLU output (recomputed in backward).
TEST(Precision, Fp8SwigluCachesItsInputsAndRecomputesItsOutput) {
  PrecisionPolicy policy(Precision::kFp8);
  ParamStore ps(3, 0.05);
  ps.set_precision(&policy);
  const int64_t T = 50, H = 160, F = 136;
  SwigluMlp mlp(ps, "mlp.", H, F);
  SwigluMlp::Saved s;
  const Tensor x = RandomMatrix(T, H, 23);
  mlp.Forward(x, &s);
  EXPECT_EQ(s.g.format(), StoredActivation::Format::kE4M3);
  EXPECT_FALSE(s.h.defined());
  ActivationCounter c;
  CountSaved(s, &c);
  const int64_t tiles_h = 2, tiles_f = 2;  // ceil(160/128), ceil(136/128)
  EXPECT_EQ(c.total(), (T * H + T * tiles_h * 4) + 2 * (T * F + T * tiles_f * 4));
  mlp.BackwardInput(RandomMatrix(T, H, 24), &s);
  EXPECT_TRUE(s.h.defined());  // recomputed for down_proj's Wgrad
  mlp.BackwardWeight(&s);
}

// ---- The whole model ------------------------------------------------------------------

// Small, but every quantised dimension crosses a 128 boundary with a padded edge.
ModelConfig TestConfig() {
  ModelConfig m;
  m.vocab_size = 300;
  m.hidden_size = 160;
  m.intermediate_size = 288;
  m.moe_intermediate_size = 136;
  m.num_hidden_layers = 2;
  m.num_attention_heads = 2;
  m.num_key_value_heads = 2;
  m.n_routed_experts = 8;
  m.n_shared_experts = 1;
  m.num_experts_per_tok = 2;
  m.n_group = 4;
  m.topk_group = 2;
  m.first_k_dense_replace = 1;
  m.q_lora_rank = 144;
  m.kv_lora_rank = 136;
  m.qk_nope_head_dim = 32;
  m.qk_rope_head_dim = 16;
  m.v_head_dim = 32;
  m.num_nextn_predict_layers = 1;
  m.routed_scaling_factor = 2.5;
  m.initializer_range = 0.05;
  return m;
}

constexpr int64_t kB = 2, kS = 80;  // 160 tokens: the Wgrad token tiles are 128 + 32

std::vector<int32_t> Tokens(int64_t vocab) {
  std::vector<int32_t> t(kB * (kS + 1));
  for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<int32_t>(RandomBits(9, 4, i) % vocab);
  return t;
}

struct RunResult {
  Losses losses;
  std::vector<Tensor> grads;  // trainable parameters, in ParamStore order
  std::vector<std::string> names;
  std::vector<std::vector<int64_t>> loads;  // [MoE layer][expert]
  int64_t activation_bytes = 0;
};

RunResult RunModel(Model& model) {
  const std::vector<int32_t> tokens = Tokens(model.config().vocab_size);
  model.params().ZeroGrads();
  RunResult r;
  r.losses = model.ForwardBackward(tokens.data(), kB, kS, ObjectiveWeights{}, 1.0, &r.loads);
  r.activation_bytes = model.activation_bytes();
  for (const auto& p : model.params().all())
    if (p->trainable) {
      r.grads.push_back(p->grad.Clone());
      r.names.push_back(p->name);
    }
  return r;
}

// pin_routing: selection biases of +-10 around the scores' (0, 1) range, so that every
// token picks the same experts whatever the rounding (the gate weights still come from the
// scores, so the router keeps its gradient).
RunResult RunAt(Precision p, const ModelConfig& m = TestConfig(), bool pin_routing = false) {
  Model model(m, 5, p);
  if (pin_routing)
    for (Moe* moe : model.moe_layers())
      for (int64_t e = 0; e < moe->num_experts(); ++e)
        moe->bias()->value.data<float>()[e] = static_cast<float>(10 * RandomNormal(8, e, 0));
  return RunModel(model);
}

// The same shapes with every FFN dense (MTP layer included): no routing decision to flip.
ModelConfig DenseConfig() {
  ModelConfig m = TestConfig();
  m.first_k_dense_replace = 3;
  return m;
}

double Cosine(const float* a, const float* b, int64_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (int64_t i = 0; i < n; ++i) {
    ab += double(a[i]) * b[i];
    aa += double(a[i]) * a[i];
    bb += double(b[i]) * b[i];
  }
  if (aa == 0 || bb == 0) return aa == bb ? 1.0 : 0.0;  // an expert no token reached
  return ab / std::sqrt(aa * bb);
}

TEST(PrecisionModel, Fp32IsBitIdenticalToTheDefaultModel) {
  Model plain(TestConfig(), 5);  // no precision argument: the model as it was before
  const RunResult a = RunModel(plain);
  const RunResult b = RunAt(Precision::kFp32);
  EXPECT_EQ(std::memcmp(&a.losses.total, &b.losses.total, sizeof(double)), 0);
  EXPECT_EQ(a.loads, b.loads);
  ASSERT_EQ(a.grads.size(), b.grads.size());
  for (size_t i = 0; i < a.grads.size(); ++i)
    EXPECT_TRUE(SameBits(a.grads[i], b.grads[i])) << a.names[i];
}

struct Bounds {
  double loss_rel;    // |loss - loss_fp32| / loss_fp32 below this
  double global_cos;  // cosine of the concatenated gradient with fp32's above this
  double tensor_cos;  // and of every parameter's gradient
};

// Loss and gradients on one batch against fp32. Prints the figures (MT_PRINT_COS=1 lists
// every tensor's cosine) and the share of routing assignments that moved to another expert.
void ExpectCloseToFp32(const ModelConfig& m, Precision p, const Bounds& bounds,
                       bool pin_routing = false) {
  const RunResult ref = RunAt(Precision::kFp32, m, pin_routing), got = RunAt(p, m, pin_routing);
  const double rel = std::fabs(got.losses.total - ref.losses.total) / ref.losses.total;
  std::vector<float> all_ref, all_got;
  double worst = 1;
  std::string worst_name;
  for (size_t i = 0; i < ref.grads.size(); ++i) {
    const float* a = ref.grads[i].data<float>();
    const float* b = got.grads[i].data<float>();
    const int64_t n = ref.grads[i].numel();
    all_ref.insert(all_ref.end(), a, a + n);
    all_got.insert(all_got.end(), b, b + n);
    const double c = Cosine(a, b, n);
    if (std::getenv("MT_PRINT_COS")) std::printf("  %-50s %.5f\n", ref.names[i].c_str(), c);
    if (c < worst) {
      worst = c;
      worst_name = ref.names[i];
    }
  }
  int64_t moved = 0, assignments = 0;  // half the L1 distance of the loads: a lower bound
  for (size_t l = 0; l < ref.loads.size(); ++l)
    for (size_t e = 0; e < ref.loads[l].size(); ++e) {
      moved += std::abs(ref.loads[l][e] - got.loads[l][e]);
      assignments += ref.loads[l][e];
    }
  const double cos = Cosine(all_ref.data(), all_got.data(), static_cast<int64_t>(all_ref.size()));
  std::printf(
      "%s: loss %.6f vs fp32 %.6f (rel %.2e), gradient cosine %.5f, worst tensor %.5f (%s), "
      "routing moved >= %.1f%% of assignments\n",
      PrecisionName(p), got.losses.total, ref.losses.total, rel, cos, worst, worst_name.c_str(),
      assignments ? 50.0 * moved / assignments : 0.0);
  EXPECT_LT(rel, bounds.loss_rel);
  EXPECT_GT(cos, bounds.global_cos);
  EXPECT_GT(worst, bounds.tensor_cos) << worst_name;
}

// The thresholds. A gradient with relative error r (RMS, uncorrelated with it) has cosine
// 1 / sqrt(1 + r^2) with the exact one, about 1 - r^2 / 2.
//
// Dense model (arithmetic alone). BF16 rounding is at most 2^-9 relative per operand, RMS
// about 2^-9 / sqrt(3) = 0.11%; one GEMM's output carries sqrt(2) x that, and the error of a
// gradient at the bottom of the network gathers that of the ~15 GEMMs on its path
// (forward and backward): r ~ sqrt(15) x 0.16% = 0.6%, cosine ~ 0.99998. E4M3 keeps 3
// mantissa bits: RMS rounding error about 2.6% per operand (the relative gap is 2^-3..2^-4
// over a binade, uniform error = gap / sqrt(12)), 3.7% per GEMM, r ~ sqrt(15) x 3.7% = 14%,
// cosine ~ 0.990 (measured: 0.9896 overall, worst tensor 0.974). The bounds leave a factor
// ~2 on r: bf16 r < 1.4% (cosine 0.9999) overall and 4.5% per tensor (0.999); fp8 r < 20%
// (0.98) overall and 33% per tensor (0.95). The loss at initialisation is ~ln(V) and moves
// far less than the gradients: bf16 < 1e-3, fp8 < 1e-2 relative (measured 1e-5, 4e-4).
//
// MoE model. At initialisation the router's scores are close together, so the perturbation
// of its input moves some tokens to other experts (the test prints a lower bound: 0.3% of
// the assignments in bf16, 2.8% in fp8), and those tokens' outputs, the experts' and the
// router's gradients and everything upstream of them then differ by whole tokens, not by
// rounding. That is how low-precision MoE training really behaves, but it is not an
// arithmetic error: with the routing pinned (PinnedMoe* below) the MoE model meets the
// dense bounds (measured fp8: 0.988 overall, worst 0.972). With free routing the bounds are
// looser (measured: bf16 0.9999 overall, router 0.976; fp8 0.945 overall, router 0.78):
// bf16 0.999 / 0.9, fp8 0.9 / 0.6, loss as for the dense model.
constexpr Bounds kDenseBf16{1e-3, 0.9999, 0.999};
constexpr Bounds kDenseFp8{1e-2, 0.98, 0.95};
constexpr Bounds kMoeBf16{1e-3, 0.999, 0.9};
constexpr Bounds kMoeFp8{1e-2, 0.9, 0.6};

TEST(PrecisionModel, DenseBf16StaysCloseToFp32) {
  ExpectCloseToFp32(DenseConfig(), Precision::kBf16, kDenseBf16);
}

TEST(PrecisionModel, DenseFp8StaysCloseToFp32) {
  ExpectCloseToFp32(DenseConfig(), Precision::kFp8, kDenseFp8);
}

// With the routing pinned, the MoE model's arithmetic meets the dense bounds.
TEST(PrecisionModel, PinnedMoeBf16StaysCloseToFp32) {
  ExpectCloseToFp32(TestConfig(), Precision::kBf16, kDenseBf16, /*pin_routing=*/true);
}

TEST(PrecisionModel, PinnedMoeFp8StaysCloseToFp32) {
  ExpectCloseToFp32(TestConfig(), Precision::kFp8, kDenseFp8, /*pin_routing=*/true);
}

TEST(PrecisionModel, MoeBf16StaysCloseToFp32) {
  ExpectCloseToFp32(TestConfig(), Precision::kBf16, kMoeBf16);
}

TEST(PrecisionModel, MoeFp8StaysCloseToFp32) {
  ExpectCloseToFp32(TestConfig(), Precision::kFp8, kMoeFp8);
}

TEST(PrecisionModel, ActivationMemoryShrinksWithPrecision) {
  const int64_t f32 = RunAt(Precision::kFp32).activation_bytes;
  const int64_t b16 = RunAt(Precision::kBf16).activation_bytes;
  const int64_t f8 = RunAt(Precision::kFp8).activation_bytes;
  std::printf("activation bytes per micro-batch: fp32 %lld, bf16 %lld, fp8 %lld\n",
              static_cast<long long>(f32), static_cast<long long>(b16), static_cast<long long>(f8));
  EXPECT_LT(f8, b16);
  EXPECT_LT(b16, f32);
  // The forward-only measurement gives the same figure as a training micro-batch.
  Model model(TestConfig(), 5, Precision::kFp8);
  EXPECT_EQ(model.MeasureActivationBytes(kB, kS), f8);
}

}  // namespace
}  // namespace mt

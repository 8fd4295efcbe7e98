// tests/trainer/precision_model_test.cc: the whole model in bf16 and fp8 against fp32 (loss,
// every gradient, routing), fp32 bit for bit unchanged, and the activation memory each
// precision mode holds per micro-batch.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "trainer/model.h"
#include "trainer/precision.h"
#include "trainer/rng.h"

static_assert(std::is_same_v<mt::Real, float>, "the precision emulation runs in float");

namespace mt {
namespace {

bool SameBits(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

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

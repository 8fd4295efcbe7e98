// tests/gpu/reference_test.cc: the CPU references of the CUDA kernels (kernels/cuda/*_ref.cc)
// held to the trainer they stand in for, on the CPU (runs in CI everywhere):
//   ref::RouteFromScores   == Moe::Forward's routing (topk, weights, loads)
//   ref::AdamWStep(Bf16)   == AdamW::Step over several steps (fp32 and bf16 moments)
//   ref::MoePlanBuild      == the per-expert slot lists Moe::Forward builds
// The GPU kernels are then compared with these references by ops_gpu_test.
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/adamw.h"
#include "kernels/cuda/moe_permute.h"
#include "kernels/cuda/router.h"
#include "trainer/moe.h"
#include "trainer/optimizer.h"

namespace mt {
namespace {

void FillRandom(float* p, int64_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  for (int64_t i = 0; i < n; ++i) p[i] = u(rng);
}

ModelConfig SmallMoe() {
  ModelConfig m;
  m.hidden_size = 24;
  m.moe_intermediate_size = 16;
  m.n_routed_experts = 32;
  m.num_experts_per_tok = 6;
  m.n_group = 8;
  m.topk_group = 3;
  m.n_shared_experts = 1;
  m.routed_scaling_factor = 2.5;
  m.norm_topk_prob = true;
  return m;
}

TEST(RouterReference, MatchesMoeForward) {
  const ModelConfig m = SmallMoe();
  ParamStore ps(/*seed=*/7, /*init_std=*/0.5);
  Moe moe(ps, "model.layers.3.mlp.", m);
  // A non-zero selection bias, large enough to change some choices.
  FillRandom(moe.bias()->value.data<float>(), m.n_routed_experts, 1, 0.3f);
  const int64_t B = 3, S = 41, valid = 39, T = B * S, E = m.n_routed_experts,
                K = m.num_experts_per_tok;
  Tensor x({T, m.hidden_size});
  FillRandom(x.data<float>(), x.numel(), 2, 1.0f);
  Moe::Saved saved;
  double balance = 0;
  std::vector<int64_t> load(E, 0);
  moe.Forward(x, B, S, valid, &saved, &balance, load.data());

  cuda::RouterShape sh;
  sh.tokens = T;
  sh.experts = E;
  sh.top_k = K;
  sh.n_group = m.n_group;
  sh.topk_group = m.topk_group;
  sh.norm_topk = m.norm_topk_prob;
  sh.scaling = m.routed_scaling_factor;
  sh.seq_len = S;
  sh.valid = valid;
  std::vector<int32_t> topk(T * K);
  std::vector<float> weight(T * K);
  std::vector<int64_t> ref_load(E, 0);
  cuda::ref::RouteFromScores(saved.scores.data<float>(), moe.bias()->value.data<float>(),
                             topk.data(), weight.data(), ref_load.data(), sh);
  EXPECT_EQ(topk, saved.topk);
  EXPECT_EQ(weight, saved.weight);  // bit-exact: same double arithmetic
  EXPECT_EQ(ref_load, load);
  int64_t changed_by_bias = 0;  // the test must exercise the bias and the group mask
  std::vector<float> zero_bias(E, 0.0f);
  std::vector<int32_t> unbiased(T * K);
  std::vector<int64_t> scratch(E, 0);
  cuda::ref::RouteFromScores(saved.scores.data<float>(), zero_bias.data(), unbiased.data(),
                             weight.data(), scratch.data(), sh);
  for (int64_t i = 0; i < T * K; ++i) changed_by_bias += unbiased[i] != topk[i];
  EXPECT_GT(changed_by_bias, 0);

  // The permutation plan orders slots as Moe's per-expert slot lists do.
  std::vector<int32_t> src(T * K), pos(T * K), counts(E), offsets(E + 1);
  cuda::ref::MoePlanBuild(saved.topk.data(), T, K, E, src.data(), pos.data(), counts.data(),
                          offsets.data());
  for (int64_t e = 0; e < E; ++e) {
    ASSERT_EQ(counts[e], int32_t(saved.slots[e].size())) << "expert " << e;
    for (int32_t j = 0; j < counts[e]; ++j) {
      const int64_t slot = saved.slots[e][j];
      EXPECT_EQ(pos[slot], offsets[e] + j);
      EXPECT_EQ(src[offsets[e] + j], slot / K);
    }
  }
}

void CheckAdamW(const std::string& moment_dtype) {
  ParamStore ps(/*seed=*/3, /*init_std=*/0.1);
  Param* a = ps.Add("a.weight", {33, 17}, Init::kNormal);
  Param* b = ps.Add("b.norm.weight", {17}, Init::kOnes);
  b->decay = false;
  OptimizerConfig cfg;
  cfg.weight_decay = 0.1;
  cfg.moment_dtype = moment_dtype;
  AdamW opt(ps, cfg);
  const bool bf16 = moment_dtype == "bf16";
  struct Mirror {
    Param* p;
    std::vector<float> w, m, v;
    std::vector<uint16_t> mb, vb;
  };
  std::vector<Mirror> mirror;
  for (Param* p : {a, b}) {
    const int64_t n = p->value.numel();
    const float* w = p->value.data<float>();
    mirror.push_back({p, std::vector<float>(w, w + n), std::vector<float>(n, 0.0f),
                      std::vector<float>(n, 0.0f), std::vector<uint16_t>(n, 0),
                      std::vector<uint16_t>(n, 0)});
  }
  for (int step = 1; step <= 4; ++step) {
    const double lr = 1e-2 / step;
    for (auto& mi : mirror) FillRandom(mi.p->grad.data<float>(), mi.p->grad.numel(), 10 + step, 1);
    opt.Step(lr);
    const cuda::AdamWCoeffs c =
        cuda::MakeAdamWCoeffs(lr, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay, step);
    for (auto& mi : mirror) {
      const int64_t n = mi.p->value.numel();
      const float* g = mi.p->grad.data<float>();
      if (bf16) {
        cuda::ref::AdamWStepBf16Moments(mi.w.data(), g, mi.mb.data(), mi.vb.data(), n, mi.p->decay,
                                        c);
      } else {
        cuda::ref::AdamWStep(mi.w.data(), g, mi.m.data(), mi.v.data(), n, mi.p->decay, c);
      }
      const float* w = mi.p->value.data<float>();
      EXPECT_EQ(mi.w, std::vector<float>(w, w + n)) << mi.p->name << " step " << step;
    }
  }
}

TEST(AdamWReference, MatchesTrainerWithFp32Moments) { CheckAdamW("fp32"); }
TEST(AdamWReference, MatchesTrainerWithBf16Moments) { CheckAdamW("bf16"); }

}  // namespace
}  // namespace mt

// Finite-difference gradient checks, in double precision, for every module of the model
// and for the whole model with its objective (main + MTP + balance loss).
//
// Compiled with MT_REAL_F64 against mt_model_f64, so central differences (h = 1e-6) are
// accurate to ~1e-9 and a relative tolerance of 1e-6 leaves no room for a wrong backward.
#include <cmath>
#include <cstdio>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/trainer/tiny_model.h"
#include "trainer/model.h"
#include "trainer/rng.h"

static_assert(std::is_same_v<mt::Real, double>, "gradient checks must run in double");

namespace mt {
namespace {

using testing_tiny::RandomTokens;
using testing_tiny::TinyConfig;

// Randomises the selection biases so that routing depends on them.
void RandomiseBiases(Model& model) {
  for (Moe* moe : model.moe_layers()) {
    Real* b = moe->bias()->value.data<Real>();
    for (int64_t e = 0; e < moe->num_experts(); ++e) b[e] = 0.05 * RandomNormal(3, e, 0);
  }
}

// Checks d(loss)/d(param) from ForwardBackward against central differences on a few
// entries of every trainable parameter.
void CheckModelGradients(const ModelConfig& m, const ObjectiveWeights& w) {
  Model model(m, /*seed=*/42);
  RandomiseBiases(model);
  const int64_t B = 2, S = 6;
  const std::vector<int32_t> tokens = RandomTokens(B * (S + 1), m.vocab_size, 5);
  model.params().ZeroGrads();
  model.ForwardBackward(tokens.data(), B, S, w, 1.0, nullptr);
  const double h = 1e-6;
  int checked = 0;
  for (const auto& p : model.params().all()) {
    if (!p->trainable) continue;
    Real* v = p->value.data<Real>();
    const int64_t n = p->value.numel();
    for (int j = 0; j < 3; ++j) {
      const int64_t i = static_cast<int64_t>(RandomBits(11, HashName(p->name), j) % n);
      const Real saved = v[i];
      v[i] = saved + h;
      const double lp = model.Evaluate(tokens.data(), B, S, w).total;
      v[i] = saved - h;
      const double lm = model.Evaluate(tokens.data(), B, S, w).total;
      v[i] = saved;
      const double fd = (lp - lm) / (2 * h);
      const double an = p->grad.data<Real>()[i];
      EXPECT_NEAR(an, fd, 1e-6 * std::max(1.0, std::fabs(fd)) + 1e-9)
          << p->name << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 30);
}

TEST(ModelGradient, QLoraGroupsSharedExpertsMtp2) {
  ObjectiveWeights w{.mtp_lambda = 0.3, .balance_alpha = 0.1};
  CheckModelGradients(TinyConfig(), w);
}

TEST(ModelGradient, PlainQProjNoMtpNoNorm) {
  ModelConfig m = TinyConfig();
  m.q_lora_rank = 0;
  m.num_nextn_predict_layers = 0;
  m.norm_topk_prob = false;
  m.n_shared_experts = 0;
  CheckModelGradients(m, {.mtp_lambda = 0, .balance_alpha = 0.05});
}

TEST(ModelGradient, YarnRopeScaling) {
  ModelConfig m = TinyConfig();
  m.num_nextn_predict_layers = 1;
  m.rope_scaling = RopeScaling{.factor = 4, .beta_fast = 32, .beta_slow = 1, .mscale = 1,
                               .mscale_all_dim = 1, .original_max_position_embeddings = 4};
  CheckModelGradients(m, {.mtp_lambda = 0.5, .balance_alpha = 0.01});
}

// The balance loss alone (alpha large, everything else present): its gradient reaches
// the router only through the scores.
TEST(ModelGradient, BalanceLossDominant) {
  ModelConfig m = TinyConfig();
  m.num_hidden_layers = 3;
  m.first_k_dense_replace = 0;
  CheckModelGradients(m, {.mtp_lambda = 0.3, .balance_alpha = 10.0});
}

// Module-level: MLA on its own, loss = sum(y * r) for a fixed random r.
TEST(ModuleGradient, MlaWithAndWithoutQLora) {
  for (int64_t rq : {int64_t{8}, int64_t{0}}) {
    ModelConfig m = TinyConfig();
    m.q_lora_rank = rq;
    ParamStore ps(1, 0.3);
    Mla mla(ps, "attn.", m);
    const int64_t B = 2, S = 5, T = B * S, H = m.hidden_size;
    RopeTables rope = MakeRopeTables(m, S);
    Tensor x = NewMatrix(T, H), r = NewMatrix(T, H);
    for (int64_t i = 0; i < T * H; ++i) {
      x.data<Real>()[i] = RandomNormal(2, 0, i);
      r.data<Real>()[i] = RandomNormal(2, 1, i);
    }
    auto loss = [&](const Tensor& in) {
      Mla::Saved s;
      Tensor y = mla.Forward(in, B, S, rope, &s);
      double l = 0;
      for (int64_t i = 0; i < T * H; ++i) l += y.data<Real>()[i] * r.data<Real>()[i];
      return l;
    };
    Mla::Saved s;
    mla.Forward(x, B, S, rope, &s);
    ps.ZeroGrads();
    Tensor dx = mla.BackwardInput(r, B, S, rope, &s);
    mla.BackwardWeight(&s);
    const double h = 1e-6;
    for (int64_t i = 0; i < T * H; i += 7) {
      Tensor xp = x.Clone(), xm = x.Clone();
      xp.data<Real>()[i] += h;
      xm.data<Real>()[i] -= h;
      double fd = (loss(xp) - loss(xm)) / (2 * h);
      EXPECT_NEAR(dx.data<Real>()[i], fd, 1e-6 * std::max(1.0, std::fabs(fd))) << "dx " << i;
    }
    for (const auto& p : ps.all()) {
      Real* v = p->value.data<Real>();
      for (int64_t i = 0; i < p->value.numel(); i += 5) {
        Real saved = v[i];
        v[i] = saved + h;
        double lp = loss(x);
        v[i] = saved - h;
        double lm = loss(x);
        v[i] = saved;
        double fd = (lp - lm) / (2 * h);
        EXPECT_NEAR(p->grad.data<Real>()[i], fd, 1e-6 * std::max(1.0, std::fabs(fd)))
            << p->name << "[" << i << "] q_lora_rank=" << rq;
      }
    }
  }
}

// Routing sanity: chosen experts lie in at most topk_group groups, and loads count every
// valid (token, slot) pair exactly once.
TEST(Moe, GroupLimitedRoutingAndLoads) {
  ModelConfig m = TinyConfig();
  ParamStore ps(9, 0.3);
  Moe moe(ps, "mlp.", m);
  const int64_t B = 3, S = 7, T = B * S, H = m.hidden_size;
  Tensor x = NewMatrix(T, H);
  for (int64_t i = 0; i < T * H; ++i) x.data<Real>()[i] = RandomNormal(4, 0, i);
  Moe::Saved s;
  double bal = 0;
  std::vector<int64_t> load(m.n_routed_experts, 0);
  moe.Forward(x, B, S, /*valid=*/5, &s, &bal, load.data());
  int64_t total = 0;
  for (int64_t l : load) total += l;
  EXPECT_EQ(total, B * 5 * m.num_experts_per_tok);
  const int64_t group_size = m.n_routed_experts / m.n_group;
  for (int64_t t = 0; t < T; ++t) {
    std::set<int64_t> groups;
    for (int64_t k = 0; k < m.num_experts_per_tok; ++k)
      groups.insert(s.topk[t * m.num_experts_per_tok + k] / group_size);
    EXPECT_LE(static_cast<int64_t>(groups.size()), m.topk_group);
  }
  // With every expert equally loaded and scores uniform, sum_i f_i P_i = 1; in general it
  // is positive.
  EXPECT_GT(bal, 0);
}

}  // namespace
}  // namespace mt

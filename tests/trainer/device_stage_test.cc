// DeviceModel split into pipeline stages (trainer/device_model.h Forward / Backward /
// TakeLosses, the CPU path's split of trainer/pipeline_stages.h) on the CPU backend, against
// the whole module model: two stages run three micro-batches in 1F1B order, with activations
// and gradients handed from one to the other. Losses, loads, every gradient of a parameter
// one stage holds and the validation forward must be the whole model's to the last bit;
// the embedding, which both stages hold with MTP, and the balance loss, whose per-layer
// terms the stages add in two groups, to rounding.
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend_cpu.h"
#include "tests/trainer/tiny_model.h"
#include "trainer/device_model.h"
#include "trainer/model_chunk.h"

namespace mt {
namespace {

ModelConfig FourLayers() {
  ModelConfig m = testing_tiny::TinyConfig();
  m.num_hidden_layers = 4;  // stage 0: the embedding, layers 0 (dense) and 1; stage 1: the rest
  return m;
}

ParamStore& WithPrecision(ParamStore& ps, const PrecisionPolicy* precision) {
  ps.set_precision(precision);
  return ps;
}

// A stage's host parameters with the whole model's values, by name.
struct HostStage {
  HostStage(const ModelConfig& m, int stage, Model& whole, const PrecisionPolicy* precision)
      : ps(/*seed=*/1, m.initializer_range),
        chunk(WithPrecision(ps, precision), m, MakeStageSpec(m, stage, 2)) {
    for (const auto& p : ps.all()) {
      const Param* src = whole.params().Find(p->name);
      EXPECT_NE(src, nullptr) << p->name;
      if (src) std::memcpy(p->value.raw(), src->value.raw(), p->value.nbytes());
    }
  }
  ParamStore ps;
  ModelChunk chunk;  // registers the stage's parameters in ps
};

bool SameBits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

TEST(DeviceStageTest, TwoStagesIn1F1BOrderMatchTheWholeModel) {
  const ModelConfig m = FourLayers();
  const int64_t B = 2, S = 10, n = 3;
  const ObjectiveWeights w{0.3, 0.01};
  const double scale = 1.0 / n;
  Model ref(m, /*seed=*/5);
  PrecisionPolicy precision(Precision::kFp32);
  HostStage h0(m, 0, ref, &precision), h1(m, 1, ref, &precision);
  CpuBackend cpu;
  DeviceModel s0(m, Precision::kFp32, &h0.ps, &cpu, {}, {}, 0, 2);
  DeviceModel s1(m, Precision::kFp32, &h1.ps, &cpu, {}, {}, 1, 2);
  s0.ZeroGrads();
  s1.ZeroGrads();
  std::vector<std::vector<int32_t>> tokens;
  std::vector<std::vector<int64_t>> ref_loads;
  std::vector<Losses> ref_losses;
  for (int i = 0; i < n; ++i) {
    tokens.push_back(testing_tiny::RandomTokens(B * (S + 1), m.vocab_size, 40 + i));
    ref_losses.push_back(ref.ForwardBackward(tokens[i].data(), B, S, w, scale, &ref_loads));
  }
  // 1F1B with two stages, serialised: stage 0 runs F0 F1 B0 F2 B1 B2, stage 1 F0 B0 F1 B1
  // F2 B2.
  std::vector<Tensor> x(n), dx(n);
  auto f0 = [&](int i) { x[i] = s0.Forward(i, tokens[i].data(), B, S, Tensor(), w, scale, true); };
  auto fb1 = [&](int i) {
    EXPECT_FALSE(s1.Forward(i, tokens[i].data(), B, S, x[i], w, scale, true).defined());
    dx[i] = s1.Backward(i, Tensor());
  };
  auto b0 = [&](int i) { EXPECT_FALSE(s0.Backward(i, dx[i]).defined()); };
  f0(0);
  f0(1);
  fb1(0);
  b0(0);
  f0(2);
  fb1(1);
  b0(1);
  fb1(2);
  b0(2);
  std::vector<std::vector<int64_t>> loads;
  for (int i = 0; i < n; ++i) {
    const Losses a = s0.TakeLosses(i, &loads), b = s1.TakeLosses(i, &loads);
    EXPECT_EQ(b.main, ref_losses[i].main) << "micro-batch " << i;
    EXPECT_EQ(b.mtp, ref_losses[i].mtp) << "micro-batch " << i;
    EXPECT_GT(a.balance, 0);
    EXPECT_NEAR(a.balance + b.balance, ref_losses[i].balance, 1e-12 * ref_losses[i].balance);
  }
  EXPECT_EQ(loads, ref_loads);

  s0.Download(/*grads=*/true);
  s1.Download(/*grads=*/true);
  int compared = 0;
  for (HostStage* h : {&h0, &h1})
    for (const auto& p : h->ps.all()) {
      if (!p->trainable || p->name == "model.embed_tokens.weight") continue;
      EXPECT_TRUE(SameBits(p->grad, ref.params().Find(p->name)->grad)) << p->name;
      ++compared;
    }
  EXPECT_GT(compared, 20);
  // The embedding: the first stage's gradient plus the MTP modules' on the last stage.
  const Tensor& e0 = h0.ps.Find("model.embed_tokens.weight")->grad;
  const Tensor& e1 = h1.ps.Find("model.embed_tokens.weight")->grad;
  const Tensor& er = ref.params().Find("model.embed_tokens.weight")->grad;
  double diff = 0, norm = 0;
  for (int64_t i = 0; i < er.numel(); ++i) {
    const double sum = double(e0.data<float>()[i] + e1.data<float>()[i]);
    diff = std::max(diff, std::abs(sum - er.data<float>()[i]));
    norm = std::max(norm, std::abs(double(er.data<float>()[i])));
  }
  EXPECT_GT(norm, 0);
  EXPECT_LE(diff, 1e-6 * norm);

  // Validation's forward through both stages.
  const std::vector<int32_t> val = testing_tiny::RandomTokens(B * (S + 1), m.vocab_size, 9);
  const Losses r = ref.Evaluate(val.data(), B, S, w);
  const Tensor y = s0.Forward(-1, val.data(), B, S, Tensor(), w, 0.0, false);
  const Losses a = s0.TakeLosses(-1, nullptr);
  s1.Forward(-1, val.data(), B, S, y, w, 0.0, false);
  const Losses b = s1.TakeLosses(-1, nullptr);
  EXPECT_EQ(b.main, r.main);
  EXPECT_EQ(b.mtp, r.mtp);
  EXPECT_NEAR(a.balance + b.balance, r.balance, 1e-12 * r.balance);
}

}  // namespace
}  // namespace mt

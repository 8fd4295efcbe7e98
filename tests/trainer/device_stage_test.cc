// DeviceModel split into pipeline stages (trainer/device_model.h Forward / Backward /
// TakeLosses, the CPU path's split of trainer/pipeline_stages.h) on the CPU backend, against
// the whole module model: two stages run three micro-batches in 1F1B order, with activations
// and gradients handed from one to the other. Losses, loads, every gradient of a parameter
// one stage holds and the validation forward must be the whole model's to the last bit;
// the embedding, which both stages hold with MTP, and the balance loss, whose per-layer
// terms the stages add in two groups, to rounding. Then the split backward
// (BackwardInput, BackwardWeight) at every precision, against the whole backward and the
// CPU path's ModelChunk stages running the same passes.
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend_cpu.h"
#include "tests/trainer/host_stage.h"
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

using testing_stage::HostStage;
using testing_stage::SameBits;

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

// A pass of one stage in a serialised two-stage schedule: F forward, B backward (whole),
// I its input half, W its weight half, of micro-batch mb.
struct Pass {
  int stage;
  char op;
  int mb;
};

// ZB1P-like: stage 1 runs weight halves after later input halves, stage 0 after later
// forwards; after pass kMidpoint each stage holds a micro-batch between its two halves.
const std::vector<Pass> kSplit = {{0, 'F', 0}, {0, 'F', 1}, {1, 'F', 0}, {1, 'I', 0}, {0, 'I', 0},
                                  {1, 'F', 1}, {1, 'I', 1}, {1, 'W', 0}, {0, 'F', 2}, {0, 'I', 1},
                                  {0, 'W', 0}, {1, 'F', 2}, {1, 'I', 2}, {1, 'W', 1}, {1, 'W', 2},
                                  {0, 'I', 2}, {0, 'W', 1}, {0, 'W', 2}};
constexpr size_t kMidpoint = 10;
// The same micro-batch order per stage with whole backwards.
const std::vector<Pass> kWhole = {{0, 'F', 0}, {0, 'F', 1}, {1, 'F', 0}, {1, 'B', 0},
                                  {0, 'B', 0}, {1, 'F', 1}, {1, 'B', 1}, {0, 'F', 2},
                                  {0, 'B', 1}, {1, 'F', 2}, {1, 'B', 2}, {0, 'B', 2}};

// Two stages of one path: the passes on them, the activations and gradients handed over.
struct StageRun {
  std::vector<std::vector<int32_t>> tokens;  // [micro-batch][B * (S + 1)]
  int64_t B = 2, S = 10;
  ObjectiveWeights w{0.3, 0.01};
  double scale = 1.0 / 3;
  std::map<int, Tensor> x, dx;  // by micro-batch: stage 0's output, stage 1's input gradient
  std::vector<Losses> losses = std::vector<Losses>(3);  // stage 1's
};

// Passes [begin, end) of `passes`.
void RunDevice(DeviceModel* s[2], const std::vector<Pass>& passes, size_t begin, size_t end,
               StageRun* r) {
  for (size_t i = begin; i < end; ++i) {
    const Pass& p = passes[i];
    DeviceModel& d = *s[p.stage];
    const Tensor dy = p.stage == 0 ? r->dx[p.mb] : Tensor();
    Tensor out;
    if (p.op == 'F')
      out = d.Forward(p.mb, r->tokens[p.mb].data(), r->B, r->S, p.stage ? r->x[p.mb] : Tensor(),
                      r->w, r->scale, true);
    else if (p.op == 'B')
      out = d.Backward(p.mb, dy);
    else if (p.op == 'I')
      out = d.BackwardInput(p.mb, dy);
    else
      d.BackwardWeight(p.mb);
    if (p.stage == 0 && p.op == 'F') r->x[p.mb] = out;
    if (p.stage == 1 && (p.op == 'B' || p.op == 'I')) r->dx[p.mb] = out;
    if (p.op == 'B' || p.op == 'W') {
      const Losses l = d.TakeLosses(p.mb, nullptr);
      if (p.stage == 1) r->losses[p.mb] = l;
    }
  }
}

void RunCpu(ModelChunk* s[2], const std::vector<Pass>& passes, size_t begin, size_t end,
            StageRun* r) {
  for (size_t i = begin; i < end; ++i) {
    const Pass& p = passes[i];
    ModelChunk& c = *s[p.stage];
    if (p.op == 'F') {
      Losses l;
      const MicroBatch mb{r->tokens[p.mb].data(), r->B, r->S};
      const Tensor out =
          c.Forward(p.mb, mb, p.stage ? r->x[p.mb] : Tensor(), r->w, r->scale, true, &l, nullptr);
      if (p.stage == 0) r->x[p.mb] = out;
      if (p.stage == 1) r->losses[p.mb] = l;
    } else if (p.op == 'I') {
      const Tensor dx = c.BackwardInput(p.mb, p.stage == 0 ? r->dx[p.mb] : Tensor());
      if (p.stage == 1) r->dx[p.mb] = dx;
    } else {
      ASSERT_EQ(p.op, 'W');
      c.BackwardWeight(p.mb);
    }
  }
}

// Device stages of the whole model's values at `precision`.
struct DeviceStages {
  DeviceStages(const ModelConfig& m, Model& whole, Precision precision,
               const PrecisionPolicy* policy)
      : h0(m, 0, whole, policy),
        h1(m, 1, whole, policy),
        s0(m, precision, &h0.ps, &cpu, {}, {}, 0, 2),
        s1(m, precision, &h1.ps, &cpu, {}, {}, 1, 2) {
    s0.ZeroGrads();
    s1.ZeroGrads();
  }
  void Download() {
    s0.Download(/*grads=*/true);
    s1.Download(/*grads=*/true);
  }
  CpuBackend cpu;
  HostStage h0, h1;
  DeviceModel s0, s1;
  DeviceModel* stages[2] = {&s0, &s1};
};

void CheckSplitBackward(Precision precision) {
  const ModelConfig m = FourLayers();
  Model ref(m, /*seed=*/5, precision);
  PrecisionPolicy policy(precision);
  StageRun split, whole, cpu;
  for (int i = 0; i < 3; ++i)
    split.tokens.push_back(testing_tiny::RandomTokens(2 * 11, m.vocab_size, 40 + i));
  whole.tokens = cpu.tokens = split.tokens;
  DeviceStages dev(m, ref, precision, &policy), dev_whole(m, ref, precision, &policy);
  HostStage c0(m, 0, ref, &policy), c1(m, 1, ref, &policy);
  ModelChunk* chunks[2] = {&c0.chunk, &c1.chunk};

  // Halfway, with micro-batches between their halves: the same gradients taken and the same
  // left for BackwardWeight as the CPU path (the embedding's, the decoder layers' Linears').
  RunDevice(dev.stages, kSplit, 0, kMidpoint, &split);
  RunCpu(chunks, kSplit, 0, kMidpoint, &cpu);
  dev.Download();
  EXPECT_GT(testing_stage::ExpectSameGrads(c0.ps, dev.h0.ps, "midpoint"), 10);
  EXPECT_GT(testing_stage::ExpectSameGrads(c1.ps, dev.h1.ps, "midpoint"), 10);
  // Stage 0 has run input halves only: its embedding's and Linears' gradients wait.
  for (const char* name : {"model.embed_tokens.weight", "model.layers.0.mlp.down_proj.weight"}) {
    const Tensor& g = dev.h0.ps.Find(name)->grad;
    EXPECT_TRUE(SameBits(g, Tensor(g.shape()))) << name;
  }
  RunDevice(dev.stages, kSplit, kMidpoint, kSplit.size(), &split);
  RunCpu(chunks, kSplit, kMidpoint, kSplit.size(), &cpu);
  RunDevice(dev_whole.stages, kWhole, 0, kWhole.size(), &whole);
  dev.Download();
  dev_whole.Download();
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(SameBits(split.dx[i], cpu.dx[i])) << "micro-batch " << i;
    EXPECT_TRUE(SameBits(split.dx[i], whole.dx[i])) << "micro-batch " << i;
    EXPECT_EQ(split.losses[i].main, cpu.losses[i].main);
    EXPECT_EQ(split.losses[i].mtp, cpu.losses[i].mtp);
  }
  // Every gradient, the embedding's on each stage included: the CPU path's and the whole
  // backward's bits.
  EXPECT_GT(testing_stage::ExpectSameGrads(c0.ps, dev.h0.ps, "end"), 10);
  EXPECT_GT(testing_stage::ExpectSameGrads(c1.ps, dev.h1.ps, "end"), 10);
  testing_stage::ExpectSameGrads(dev_whole.h0.ps, dev.h0.ps, "whole backward");
  testing_stage::ExpectSameGrads(dev_whole.h1.ps, dev.h1.ps, "whole backward");
}

TEST(DeviceStageTest, SplitBackwardMatchesTheCpuChunksAndTheWholeBackward) {
  CheckSplitBackward(Precision::kFp32);
}
TEST(DeviceStageTest, SplitBackwardMatchesTheCpuChunksAndTheWholeBackwardInBf16) {
  CheckSplitBackward(Precision::kBf16);
}
TEST(DeviceStageTest, SplitBackwardMatchesTheCpuChunksAndTheWholeBackwardInFp8) {
  CheckSplitBackward(Precision::kFp8);
}

}  // namespace
}  // namespace mt

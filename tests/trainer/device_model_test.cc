// The device model (trainer/device_model.h) on the CPU backend against the module model
// (trainer/model.h), the reference: losses, expert loads, every gradient and, after
// optimizer steps, every parameter must be bit-identical, because the CPU backend runs
// the same ops in the same order. The same model on CUDA is compared with the CPU in
// tests/gpu/device_model_gpu_test.cc; this test is what makes the device model's
// orchestration (reshapes, routing, permutation, MTP, gradient flow) trustworthy in CI.
#include "trainer/device_model.h"

#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend_cpu.h"
#include "tests/trainer/tiny_model.h"
#include "trainer/optimizer.h"
#include "trainer/rng.h"

namespace mt {
namespace {

// The shared tiny model with three layers and top-3 routing.
ModelConfig TinyConfig() {
  ModelConfig m = testing_tiny::TinyConfig();
  m.num_hidden_layers = 3;
  m.num_experts_per_tok = 3;
  return m;
}
using testing_tiny::RandomTokens;

void RandomiseBiases(Model& model) {
  for (Moe* moe : model.moe_layers()) {
    float* b = moe->bias()->value.data<float>();
    for (int64_t e = 0; e < moe->num_experts(); ++e) b[e] = 0.05f * RandomNormal(3, e, 0);
  }
}

// Bit-for-bit equality of two float tensors; names the first differing element.
void ExpectSameBits(const std::string& what, const Tensor& a, const Tensor& b) {
  ASSERT_EQ(a.shape(), b.shape()) << what;
  const float* x = a.data<float>();
  const float* y = b.data<float>();
  for (int64_t i = 0; i < a.numel(); ++i) {
    if (std::memcmp(&x[i], &y[i], sizeof(float)) != 0) {
      ADD_FAILURE() << what << "[" << i << "]: module model " << x[i] << ", device model " << y[i];
      return;
    }
  }
}

void ExpectSameLosses(const Losses& a, const Losses& b) {
  EXPECT_EQ(a.main, b.main);
  EXPECT_EQ(a.balance, b.balance);
  EXPECT_EQ(a.total, b.total);
  EXPECT_EQ(a.tokens, b.tokens);
  ASSERT_EQ(a.mtp.size(), b.mtp.size());
  for (size_t k = 0; k < a.mtp.size(); ++k) EXPECT_EQ(a.mtp[k], b.mtp[k]) << "MTP " << k + 1;
}

// Every gradient (or value) of `ref` against the device model's, downloaded into `dev`.
void ExpectSameParams(Model& ref, Model& dev, bool grads) {
  const auto& a = ref.params().all();
  const auto& b = dev.params().all();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ExpectSameBits(a[i]->name + " value", a[i]->value, b[i]->value);
    if (grads && a[i]->grad.defined()) ExpectSameBits(a[i]->name + " grad", a[i]->grad, b[i]->grad);
  }
}

// Two micro-batches of gradient accumulation on both models, then the comparisons.
void CheckForwardBackward(const ModelConfig& m, Precision precision = Precision::kFp32,
                          int64_t S = 12) {
  const int64_t B = 2;
  Model ref(m, /*seed=*/11, precision), mirror(m, /*seed=*/11, precision);
  RandomiseBiases(ref);
  RandomiseBiases(mirror);
  CpuBackend cpu;
  DeviceModel dev(&mirror, &cpu);
  const ObjectiveWeights w{0.3, 0.01};
  for (int mb = 0; mb < 2; ++mb) {
    const std::vector<int32_t> tokens = RandomTokens(B * (S + 1), m.vocab_size, 100 + mb);
    std::vector<std::vector<int64_t>> ref_loads, dev_loads;
    const Losses a = ref.ForwardBackward(tokens.data(), B, S, w, 0.5, &ref_loads);
    const Losses b = dev.ForwardBackward(tokens.data(), B, S, w, 0.5, &dev_loads);
    ExpectSameLosses(a, b);
    EXPECT_EQ(ref_loads, dev_loads);
    EXPECT_GT(a.main, 0);
  }
  dev.Download(/*grads=*/true);
  ExpectSameParams(ref, mirror, /*grads=*/true);
  const std::vector<int32_t> tokens = RandomTokens(B * (S + 1), m.vocab_size, 7);
  ExpectSameLosses(ref.Evaluate(tokens.data(), B, S, w), dev.Evaluate(tokens.data(), B, S, w));
}

TEST(DeviceModelTest, MatchesTheModuleModel) { CheckForwardBackward(TinyConfig()); }

// BF16: every GEMM on rounded operands, the attention core's operands, the embedding's
// output, the head's output gradient and the SwiGLU inputs rounded, the SwiGLU output
// recomputed in backward: the same roundings in the same places as trainer/precision.h.
TEST(DeviceModelTest, MatchesTheModuleModelInBf16) {
  CheckForwardBackward(TinyConfig(), Precision::kBf16);
}

// FP8: every Linear's three GEMMs in E4M3 with 1x128 / 128x128 power-of-two scales (Wgrad
// tiled along the tokens, re-tiled from the cached Fprop operand), the attention output
// kept in BF16 for o_proj's Wgrad, the SwiGLU inputs kept in E4M3, the expert outputs
// rounded to BF16; the BF16 operators as in bf16.
TEST(DeviceModelTest, MatchesTheModuleModelInFp8) {
  CheckForwardBackward(TinyConfig(), Precision::kFp8);
}

// Wide enough for several 1x128 tiles and 128x128 blocks per operand, and more than 128
// tokens, so that Wgrad's token tiles split inside the dense layers and the experts.
TEST(DeviceModelTest, MatchesTheModuleModelInFp8AcrossTiles) {
  ModelConfig m = TinyConfig();
  m.hidden_size = 272;
  m.intermediate_size = 300;
  m.moe_intermediate_size = 136;
  m.q_lora_rank = 144;
  m.kv_lora_rank = 136;
  m.num_hidden_layers = 2;
  m.num_nextn_predict_layers = 1;
  m.n_routed_experts = 4;
  m.n_group = 2;
  m.topk_group = 1;
  m.num_experts_per_tok = 2;
  m.initializer_range = 0.05;
  CheckForwardBackward(m, Precision::kFp8, /*S=*/100);
}

TEST(DeviceModelTest, MatchesWithoutQueryLoraSharedExpertsOrNormalisedTopK) {
  ModelConfig m = TinyConfig();
  m.q_lora_rank = 0;
  m.n_shared_experts = 0;
  m.norm_topk_prob = false;
  m.n_group = 1;
  m.topk_group = 1;
  m.num_nextn_predict_layers = 1;
  CheckForwardBackward(m);
}

TEST(DeviceModelTest, MatchesADenseModelWithoutMtp) {
  ModelConfig m = TinyConfig();
  m.first_k_dense_replace = m.num_hidden_layers;  // no MoE layer: no loads, no balance loss
  m.num_nextn_predict_layers = 0;
  CheckForwardBackward(m);
}

// Three optimizer steps (clipping on, bias update on) give the same parameters, moments
// included through their effect on the later steps.
void CheckOptimizerSteps(Precision precision) {
  const ModelConfig m = TinyConfig();
  const int64_t B = 2, S = 8;
  Model ref(m, 5, precision), mirror(m, 5, precision);
  CpuBackend cpu;
  DeviceModel dev(&mirror, &cpu);
  OptimizerConfig opt;
  opt.weight_decay = 0.1;
  opt.grad_clip = 0.5;  // small enough to clip
  AdamW adam(ref.params(), opt);
  const ObjectiveWeights w{0.3, 0.001};
  for (int64_t step = 1; step <= 3; ++step) {
    const std::vector<int32_t> tokens = RandomTokens(B * (S + 1), m.vocab_size, 40 + step);
    ref.params().ZeroGrads();
    dev.ZeroGrads();
    std::vector<std::vector<int64_t>> ref_loads, dev_loads;
    ref.ForwardBackward(tokens.data(), B, S, w, 1.0, &ref_loads);
    dev.ForwardBackward(tokens.data(), B, S, w, 1.0, &dev_loads);
    const double norm = adam.GradNorm();
    EXPECT_EQ(norm, dev.GradNorm());
    EXPECT_GT(norm, opt.grad_clip);
    adam.ClipGradients(norm, opt.grad_clip);
    adam.Step(1e-2);
    UpdateExpertBiases(ref.moe_layers(), ref_loads, 1e-3);
    dev.OptimizerStep(opt, 1e-2, step, norm, dev_loads, 1e-3);
  }
  dev.Download(/*grads=*/false);
  ExpectSameParams(ref, mirror, /*grads=*/false);
}

TEST(DeviceModelTest, OptimizerStepsMatchAdamW) { CheckOptimizerSteps(Precision::kFp32); }
TEST(DeviceModelTest, OptimizerStepsMatchAdamWInBf16) { CheckOptimizerSteps(Precision::kBf16); }

TEST(DeviceModelTest, OptimizerStepsMatchAdamWInFp8) { CheckOptimizerSteps(Precision::kFp8); }

// ZeRO-1 over the flat buffers without MPI: three ranks' device models on the CPU backend,
// the collectives done by hand. Each rank updates only its shard (three shards, so they end
// inside parameters, one straddles the decay classes' boundary and the last holds padding);
// gathered, three clipped steps equal AdamW's, in fp32 and bf16 moments. With
// expert_region, the routed experts form their own region (expert parallelism's layout:
// ZeroAdamW's second part), sharded over the same three ranks, each region reduced and
// gathered on its own.
void CheckZeroShards(const std::string& moment_dtype, bool expert_region = false) {
  constexpr int kRanks = 3;
  const ModelConfig m = TinyConfig();
  const int64_t B = 2, S = 8;
  Model ref(m, 5, Precision::kFp32);
  std::vector<std::unique_ptr<Model>> mirrors;
  std::vector<std::unique_ptr<DeviceModel>> devs;
  CpuBackend cpu;
  DeviceOptimizerLayout layout;
  layout.dp_size = kRanks;
  layout.moments = moment_dtype == "bf16" ? DType::kBF16 : DType::kF32;
  if (expert_region) layout.expert_dp_size = kRanks;
  for (int r = 0; r < kRanks; ++r) {
    mirrors.push_back(std::make_unique<Model>(m, 5, Precision::kFp32));
    layout.dp_rank = r;
    layout.expert_dp_rank = r;
    devs.push_back(
        std::make_unique<DeviceModel>(m, Precision::kFp32, &mirrors[r]->params(), &cpu, layout));
  }
  DeviceParams& f0 = devs[0]->flat();
  const std::vector<DeviceParamRegion>& regions = f0.regions();
  ASSERT_EQ(regions.size(), expert_region ? 2u : 1u);
  ASSERT_GT(regions[0].padded, regions[0].trainable) << "want padding in the last shard";
  ASSERT_NE(regions[0].decayed % regions[0].shard_size(), 0)
      << "want a shard across the decay boundary";
  for (const DeviceParam* d : devs[0]->params()) {
    if (!d->host->trainable) continue;
    const DeviceParamRegion& g = f0.RegionOf(*d);
    EXPECT_EQ(&g == &regions.back(), !expert_region || d->host->expert) << d->host->name;
    EXPECT_GE(d->offset, g.begin) << d->host->name;
    EXPECT_LE(d->offset + d->value.numel(), d->host->decay ? g.decayed : g.trainable);
  }
  OptimizerConfig opt;
  opt.weight_decay = 0.1;
  opt.grad_clip = 0.5;
  opt.moment_dtype = moment_dtype;
  AdamW adam(ref.params(), opt);
  const ObjectiveWeights w{0.3, 0.001};
  for (int64_t step = 1; step <= 3; ++step) {
    const std::vector<int32_t> tokens = RandomTokens(B * (S + 1), m.vocab_size, 60 + step);
    ref.params().ZeroGrads();
    std::vector<std::vector<int64_t>> ref_loads, dev_loads;
    ref.ForwardBackward(tokens.data(), B, S, w, 1.0, &ref_loads);
    const double norm = adam.GradNorm();
    adam.ClipGradients(norm, opt.grad_clip);
    adam.Step(1e-2);
    UpdateExpertBiases(ref.moe_layers(), ref_loads, 1e-3);
    // Rank 0 computes the gradient; the "reduce-scatter" hands each rank its shard of it.
    devs[0]->ZeroGrads();
    devs[0]->ForwardBackward(tokens.data(), B, S, w, 1.0, &dev_loads);
    double shard_sq = 0;
    for (int r = 0; r < kRanks; ++r) {
      DeviceParams& f = devs[r]->flat();
      for (const DeviceParamRegion& g : f.regions())
        std::memcpy(f.grad_shard().data<float>() + g.shard_offset,
                    f0.grads().data<float>() + g.shard_begin(), g.shard_size() * sizeof(float));
      shard_sq += devs[r]->ShardSumSquares();
    }
    EXPECT_NEAR(std::sqrt(shard_sq), norm, 1e-12 * norm);
    // The norm AdamW used, so that clipping scales by the same float on every rank.
    for (int r = 0; r < kRanks; ++r) devs[r]->OptimizerStep(opt, 1e-2, step, norm, dev_loads, 1e-3);
    // The "all-gather": every rank's updated shard into every rank's values.
    for (int r = 0; r < kRanks; ++r) {
      DeviceParams& src = devs[r]->flat();
      for (int q = 0; q < kRanks; ++q)
        for (const DeviceParamRegion& g : src.regions())
          if (q != r)
            std::memcpy(devs[q]->flat().values().data<float>() + g.shard_begin(),
                        src.values().data<float>() + g.shard_begin(),
                        g.shard_size() * sizeof(float));
    }
  }
  for (int r = 0; r < kRanks; ++r) {
    devs[r]->Download(/*grads=*/false);
    ExpectSameParams(ref, *mirrors[r], /*grads=*/false);
  }
  // The moments: the three shards, concatenated, cut at each parameter's offset, load back
  // into fresh ranks and come out as the same shards.
  std::vector<Tensor> m_shards(kRanks), v_shards(kRanks);
  for (int r = 0; r < kRanks; ++r) devs[r]->MomentShards(&m_shards[r], &v_shards[r]);
  const size_t es = DTypeSize(layout.moments);
  std::vector<Tensor> m_full, v_full;  // per trainable parameter
  std::map<std::string, const Tensor*> m_by_name, v_by_name;
  for (const DeviceParam* d : devs[0]->params()) {
    if (!d->host->trainable) continue;
    Tensor mt(d->value.shape(), layout.moments), vt(d->value.shape(), layout.moments);
    const DeviceParamRegion& g = f0.RegionOf(*d);
    for (int64_t i = 0; i < d->value.numel(); ++i) {
      // Element x of region g sits on rank r at o in its shard buffers.
      const int64_t x = d->offset + i - g.begin;
      const int64_t r = x / g.shard_size(), o = g.shard_offset + x % g.shard_size();
      std::memcpy(static_cast<char*>(mt.raw()) + i * es,
                  static_cast<const char*>(m_shards[r].raw()) + o * es, es);
      std::memcpy(static_cast<char*>(vt.raw()) + i * es,
                  static_cast<const char*>(v_shards[r].raw()) + o * es, es);
    }
    m_full.push_back(std::move(mt));
    v_full.push_back(std::move(vt));
  }
  size_t i = 0;
  for (const DeviceParam* d : devs[0]->params()) {
    if (!d->host->trainable) continue;
    m_by_name[d->host->name] = &m_full[i];
    v_by_name[d->host->name] = &v_full[i];
    ++i;
  }
  for (int r = 0; r < kRanks; ++r) {
    Model fresh_host(m, 5, Precision::kFp32);
    layout.dp_rank = r;
    layout.expert_dp_rank = r;
    DeviceModel fresh(m, Precision::kFp32, &fresh_host.params(), &cpu, layout);
    ASSERT_TRUE(fresh.LoadMoments(m_by_name, v_by_name).ok());
    Tensor m2, v2;
    fresh.MomentShards(&m2, &v2);
    EXPECT_EQ(std::memcmp(m2.raw(), m_shards[r].raw(), m2.nbytes()), 0) << "rank " << r;
    EXPECT_EQ(std::memcmp(v2.raw(), v_shards[r].raw(), v2.nbytes()), 0) << "rank " << r;
  }
}

TEST(DeviceModelTest, ZeroShardsOverThreeRanksMatchAdamW) { CheckZeroShards("fp32"); }
TEST(DeviceModelTest, ZeroShardsOverThreeRanksMatchAdamWWithBf16Moments) {
  CheckZeroShards("bf16");
}
TEST(DeviceModelTest, ZeroShardsWithAnExpertRegionMatchAdamW) {
  CheckZeroShards("fp32", /*expert_region=*/true);
}

}  // namespace
}  // namespace mt

// tests/launch/planner_test.cc: the planner reproduces DeepSeek-V3's published numbers (671B /
// 37B parameters, 250 / 260 GFLOP per token, 180K GPU-hours per trillion tokens, 2.664M
// GPU-hours for 14.8T, $5.576M for the three stages) and Megatron-Bridge's DeepSeek-V3 runs
// from their own published throughput.
#include "launch/planner.h"

#include <cmath>

#include "gtest/gtest.h"

namespace mt::plan {
namespace {

constexpr const char* kModel = "configs/deepseek-v3-671b.yaml";

#define ASSERT_OK_AND_ASSIGN(lhs, expr)            \
  auto lhs##_or = (expr);                          \
  ASSERT_TRUE(lhs##_or.ok()) << lhs##_or.status(); \
  auto lhs = *std::move(lhs##_or)

double Relative(double got, double want) { return std::abs(got / want - 1); }

// DeepSeek-V3 as trained: its run config on its cluster.
PlanRequest DeepSeekV3(double tokens = 14.8e12) {
  PlanRequest r;
  absl::StatusOr<Config> config = LoadConfig(kModel);
  EXPECT_TRUE(config.ok()) << config.status();
  absl::StatusOr<ClusterSpec> cluster = LoadClusterSpec("configs/clusters/deepseek-v3-h800.yaml");
  EXPECT_TRUE(cluster.ok()) << cluster.status();
  r.model = config->model;
  r.cluster = *cluster;
  r.layout.pp = config->parallel.pp;
  r.layout.ep = config->parallel.ep;
  r.layout.dp = config->parallel.dp;
  r.layout.schedule = *ParseScheduleKind(config->parallel.schedule);
  r.layout.seq_len = config->training.seq_len;
  r.layout.micro_batch = config->training.micro_batch_size;
  r.layout.global_batch = config->training.global_batch_size;
  r.layout.precision = config->training.precision;
  r.layout.recompute = config->training.recompute;
  r.layout.moment_dtype = config->optimizer.moment_dtype;
  r.ramp = config->training.batch_ramp;
  r.tokens = tokens;
  return r;
}

TEST(Planner, DeepSeekV3ConfigIsTheHubConfig) {
  // reference/ecosystem.md §1.1, the Hub config.json of deepseek-ai/DeepSeek-V3.
  ASSERT_OK_AND_ASSIGN(config, LoadConfig(kModel));
  const ModelConfig& m = config.model;
  EXPECT_EQ(m.vocab_size, 129280);
  EXPECT_EQ(m.hidden_size, 7168);
  EXPECT_EQ(m.intermediate_size, 18432);
  EXPECT_EQ(m.moe_intermediate_size, 2048);
  EXPECT_EQ(m.num_hidden_layers, 61);
  EXPECT_EQ(m.num_attention_heads, 128);
  EXPECT_EQ(m.n_routed_experts, 256);
  EXPECT_EQ(m.n_shared_experts, 1);
  EXPECT_EQ(m.num_experts_per_tok, 8);
  EXPECT_EQ(m.n_group, 8);
  EXPECT_EQ(m.topk_group, 4);
  EXPECT_EQ(m.first_k_dense_replace, 3);
  EXPECT_EQ(m.q_lora_rank, 1536);
  EXPECT_EQ(m.kv_lora_rank, 512);
  EXPECT_EQ(m.qk_nope_head_dim, 128);
  EXPECT_EQ(m.qk_rope_head_dim, 64);
  EXPECT_EQ(m.v_head_dim, 128);
  EXPECT_EQ(m.num_nextn_predict_layers, 1);
  EXPECT_DOUBLE_EQ(m.routed_scaling_factor, 2.5);
  ASSERT_TRUE(m.rope_scaling.has_value());
  EXPECT_DOUBLE_EQ(m.rope_scaling->factor, 40);
  EXPECT_EQ(config.parallel.pp, 16);
  EXPECT_EQ(config.parallel.ep, 64);
  EXPECT_EQ(config.parallel.schedule, "dualpipe");
  EXPECT_EQ(config.training.global_batch_size, 15360);
  EXPECT_EQ(config.training.precision, "fp8");
}

TEST(Planner, DeepSeekV3Parameters) {
  const ParamCounts p = CountParameters(DeepSeekV3().model);
  EXPECT_LT(Relative(p.Total(), 671e9), 0.02) << p.Total();  // without the MTP module
  EXPECT_LT(Relative(p.Active(), 37e9), 0.02) << p.Active();
  // perf.md §2: attention 187.1M per layer; activated non-embedding 35.7B; MTP ~11.6B unique.
  EXPECT_NEAR(p.attention / 61 / 1e6, 187.1, 0.1);
  EXPECT_NEAR(p.ActiveNonEmbedding() / 1e9, 35.7, 0.05);
  EXPECT_NEAR(p.mtp / 1e9, 11.6, 0.1);
}

// The MFU denominator of a GPU run: the board's dense peak at the run's precision, the more
// specific name first (an "H100 PCIe" is not an SXM H100), 0 for a board not tabled.
TEST(Planner, GpuDensePeakFlops) {
  EXPECT_EQ(GpuDensePeakFlops("NVIDIA H200", "bf16"), 989.4e12);
  EXPECT_EQ(GpuDensePeakFlops("NVIDIA H800", "fp8"), 1978.9e12);
  EXPECT_EQ(GpuDensePeakFlops("NVIDIA H100 80GB HBM3", "fp32"), 66.9e12);
  EXPECT_EQ(GpuDensePeakFlops("NVIDIA H100 PCIe", "bf16"), 756.5e12);
  EXPECT_EQ(GpuDensePeakFlops("NVIDIA GeForce RTX 4090", "bf16"), 0.0);
}

TEST(Planner, DeepSeekV3FlopsPerToken) {
  const ModelConfig m = DeepSeekV3().model;
  const FlopsBreakdown with = TrainingFlopsPerToken(m, 4096, true);
  const FlopsBreakdown without = TrainingFlopsPerToken(m, 4096, false);
  EXPECT_LT(Relative(without.total(), 250e9), 0.01) << without.total();
  EXPECT_LT(Relative(with.total(), 260e9), 0.01) << with.total();
  // perf.md §2, term by term (GFLOP per token, with MTP).
  EXPECT_NEAR(with.dense_mlp / 1e9, 7.13, 0.005);
  EXPECT_NEAR(with.routed_experts / 1e9, 124.72, 0.005);
  EXPECT_NEAR(with.shared_experts / 1e9, 15.59, 0.005);
  EXPECT_NEAR(with.attention_projections / 1e9, 69.60, 0.005);
  EXPECT_NEAR(with.attention_core / 1e9, 31.21, 0.005);
  EXPECT_NEAR(with.mtp_extra / 1e9, 0.62, 0.005);
  EXPECT_NEAR(with.logits / 1e9, 11.12, 0.005);
}

TEST(Planner, StageWorkAddsUpToTheFlopFormula) {
  // The time model's per-stage FLOPs are the same formula split by stage.
  const PlanRequest r = DeepSeekV3();
  ASSERT_OK_AND_ASSIGN(step, EstimateStep(r.model, r.cluster, r.layout, kDefaultEfficiency));
  double flops = 0;
  for (const Stage& s : step.stages) flops += StageTrainingFlops(r.model, r.layout, s);
  const double tokens = static_cast<double>(r.layout.micro_batch) * r.layout.seq_len;
  EXPECT_NEAR(flops / tokens, TrainingFlopsPerToken(r.model, r.layout.seq_len, true).total(), 1e3);
  int64_t layers = 0;
  for (const Stage& s : step.stages) layers += s.num_layers;
  EXPECT_EQ(layers, 61);
  EXPECT_TRUE(step.stages.front().embedding);
  EXPECT_TRUE(step.stages.back().head);
}

TEST(Planner, DeepSeekV3GpuHoursAtTheCalibratedEfficiency) {
  ASSERT_OK_AND_ASSIGN(p, MakePlan(DeepSeekV3()));
  // arXiv 2412.19437: 180K H800 GPU-hours per trillion tokens; 2.664M for 14.8T.
  EXPECT_LT(Relative(p.gpu_hours_per_trillion, 180e3), 0.05) << p.gpu_hours_per_trillion;
  EXPECT_LT(Relative(p.gpu_hours, 2.664e6), 0.05) << p.gpu_hours;
  // arXiv 2505.09343 Table 4: 19.926 s per step, MFU 38.94% (no MTP), bubble 2.06 s = 10.3%.
  EXPECT_LT(Relative(p.step_s, 19.926), 0.05) << p.step_s;
  EXPECT_NEAR(p.mfu_no_mtp, 0.3894, 0.02);
  EXPECT_NEAR(p.step.bubble_fraction, 0.103, 0.04);
  // It fits in the H800's 80 GB, as it did; DualPipe holds pp + 1 stashes on its fullest rank.
  EXPECT_TRUE(p.memory.Fits()) << p.memory.Total() / 1073741824.0 << " GiB";
  EXPECT_EQ(p.memory.activations_in_flight, 17);
}

TEST(Planner, DefaultEfficiencyIsFittedToTheMeasuredStep) {
  // 15360 sequences x 4096 tokens per 19.926 s step on 2048 GPUs (arXiv 2505.09343 Table 4).
  const double measured = 15360.0 * 4096 / 19.926 / 2048;
  ASSERT_OK_AND_ASSIGN(efficiency, CalibrateEfficiency(DeepSeekV3(), measured));
  EXPECT_LT(Relative(efficiency, kDefaultEfficiency), 0.01) << efficiency;
}

TEST(Planner, DeepSeekV3ThreeStagesCost) {
  const PlanRequest r = DeepSeekV3();
  ASSERT_OK_AND_ASSIGN(file, LoadStages("configs/deepseek-v3-stages.yaml", r.layout));
  ASSERT_OK_AND_ASSIGN(stages, PlanStages(r, file));
  ASSERT_EQ(stages.size(), 3u);
  double hours = 0, cost = 0;
  for (const StagePlan& s : stages) hours += s.gpu_hours, cost += s.cost_usd;
  EXPECT_FALSE(stages[0].given);  // pre-training is planned, not given
  EXPECT_LT(Relative(hours, 2.788e6), 0.05) << hours;
  EXPECT_LT(Relative(cost, 5.576e6), 0.05) << cost;
}

// Megatron-Bridge's DeepSeek-V3 runs (NVIDIA-NeMo/Megatron-Bridge performance summaries;
// reference/perf.md §1.2) from their own published Model TFLOP/s/GPU. Convention: their
// TFLOPS are Megatron's formula counting MTP, i.e. our `mfu` x dense BF16 peak. From that MFU
// the planner must give back their tokens/s/GPU.
TEST(Planner, MegatronBridgeRunsFromTheirOwnThroughput) {
  struct Run {
    const char* cluster;
    int64_t gpus;
    double tflops;  // published Model TFLOP/s/GPU
    double tokens_per_s_per_gpu;
  };
  for (const Run& run : {Run{"configs/clusters/h100-8gpu.yaml", 1024, 338, 1297},  // 25.09, FP8
                         Run{"configs/clusters/gb200-nvl72.yaml", 256, 1276, 4912}}) {  // 26.08
    PlanRequest r = DeepSeekV3(1e12);
    ASSERT_OK_AND_ASSIGN(cluster, LoadClusterSpec(run.cluster));
    r.cluster = cluster;
    r.cluster.num_gpus = run.gpus;
    r.layout.pp = 8, r.layout.dp = run.gpus / 8, r.layout.ep = 32;
    r.layout.schedule = ScheduleKind::k1F1B;
    r.layout.global_batch = r.layout.dp * 32;
    r.ramp.reset();
    r.fixed_mfu = run.tflops / (cluster.bf16_tflops);
    ASSERT_OK_AND_ASSIGN(p, MakePlan(r));
    EXPECT_LT(Relative(p.tokens_per_s_per_gpu, run.tokens_per_s_per_gpu), 0.10)
        << run.cluster << ": " << p.tokens_per_s_per_gpu;
    EXPECT_LT(Relative(p.model_tflops_per_gpu, run.tflops), 1e-9);
    // Counting the FLOPs without MTP (DeepSeek's convention) would miss by more.
    const double no_mtp = run.tflops * 1e12 / p.flops_no_mtp.total();
    EXPECT_LT(std::abs(p.tokens_per_s_per_gpu - run.tokens_per_s_per_gpu),
              std::abs(no_mtp - run.tokens_per_s_per_gpu));
    EXPECT_NEAR(p.gpu_hours, 1e12 / run.tokens_per_s_per_gpu / 3600, 0.1 * p.gpu_hours);
  }
}

TEST(Planner, MemoryModel) {
  PlanRequest r = DeepSeekV3();
  ASSERT_OK_AND_ASSIGN(dual, EstimateStep(r.model, r.cluster, r.layout, kDefaultEfficiency));
  r.layout.schedule = ScheduleKind::k1F1B;
  ASSERT_OK_AND_ASSIGN(ofob, EstimateStep(r.model, r.cluster, r.layout, kDefaultEfficiency));
  // DualPipe keeps two stages per rank: twice the parameters of 1F1B over the pipeline.
  double dual_params = 0, ofob_params = 0;
  for (int rank = 0; rank < 16; ++rank) {
    const StageParams d = RankParams(r.model, dual.layout, dual.stages, dual.schedule, rank);
    const StageParams o = RankParams(r.model, ofob.layout, ofob.stages, ofob.schedule, rank);
    dual_params += d.linear + d.other + d.expert;
    ofob_params += o.linear + o.other + o.expert;
  }
  EXPECT_NEAR(dual_params / ofob_params, 2.0, 1e-9);
  // Per EP rank the experts are 1/64 of each layer's: the pipeline holds 1/64 of them.
  const ParamCounts all = CountParameters(r.model);
  EXPECT_NEAR(ofob_params,
              all.TotalWithMtp() - (all.routed_experts + 256 * 3.0 * 7168 * 2048) * 63 / 64, 1e3);
  const MemoryEstimate m1 = EstimateMemory(r.model, r.cluster, ofob);
  EXPECT_EQ(m1.activations_in_flight, 16);  // 1F1B's first stage holds pp micro-batches
  // Less recomputation stashes more; full recompute keeps only each layer's input.
  const ModelConfig& m = r.model;
  const double none = LayerActivationBytes(m, true, "fp8", "none");
  const double selective = LayerActivationBytes(m, true, "fp8", "selective");
  const double full = LayerActivationBytes(m, true, "fp8", "full");
  EXPECT_GT(none, selective);
  EXPECT_GT(selective, full);
  EXPECT_DOUBLE_EQ(full, 2.0 * m.hidden_size);
  EXPECT_GT(LayerActivationBytes(m, true, "bf16", "selective"), selective);  // no FP8 caching
  // The same layout does not fit on 24 GB gaming cards.
  ASSERT_OK_AND_ASSIGN(rtx, LoadClusterSpec("configs/clusters/rtx4090-pcie.yaml"));
  EXPECT_FALSE(EstimateMemory(r.model, rtx, dual).Fits());
}

TEST(Planner, NodeLimitedRouting) {
  const PlanRequest r = DeepSeekV3();
  // EP64 over 8 nodes, 8 groups, 4 per token: 4 nodes reached, 3.5 of them remote.
  EXPECT_NEAR(ExpectedRemoteNodes(r.model, r.cluster, 64), 3.5, 1e-9);
  EXPECT_DOUBLE_EQ(ExpectedRemoteNodes(r.model, r.cluster, 8), 0);  // one node
  EXPECT_NEAR(ExpectedTargetGpus(r.model, 64), 7.6, 0.1);
  // Within a node the all-to-all runs at NVLink speed: EP8 is faster than EP64 over IB.
  Layout l = r.layout;
  l.ep = 8;
  const double intra = AllToAllSeconds(r.model, r.cluster, l, 4096);
  l.ep = 64;
  EXPECT_GT(AllToAllSeconds(r.model, r.cluster, l, 4096), intra);
}

TEST(Planner, SearchOnGamingCards) {
  PlanRequest r = DeepSeekV3();
  ASSERT_OK_AND_ASSIGN(rtx, LoadClusterSpec("configs/clusters/rtx4090-pcie.yaml"));
  r.cluster = rtx;
  ASSERT_OK_AND_ASSIGN(rows, SearchLayouts(r, 5));
  ASSERT_FALSE(rows.empty());
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_LE(rows[i].memory_bytes, rtx.UsableMemoryBytes());
    if (i > 0) {
      EXPECT_LE(rows[i].tokens_per_s_per_gpu, rows[i - 1].tokens_per_s_per_gpu);
    }
  }
  ASSERT_OK_AND_ASSIGN(h800, MakePlan(DeepSeekV3()));
  EXPECT_GT(rows[0].gpu_hours, 5 * h800.gpu_hours);  // a 4090 is ~1/6 of an H800
}

}  // namespace
}  // namespace mt::plan

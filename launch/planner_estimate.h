// launch/planner_estimate.h: step time and memory per GPU for one model x cluster x layout.
//
// Time model (one optimizer step):
//  * Each pipeline stage's work per micro-batch comes from the Megatron FLOP terms: linear
//    layers run at the precision's dense peak (FP8 GEMMs for `fp8`), attention core and the
//    output head at the BF16 peak (DeepSeek keeps them in BF16), both times the achieved
//    efficiency factor. Forward = 1 pass; input backward = 1 pass of the linears and 2 of the
//    attention core; weight backward = 1 pass of the linears.
//  * Every MoE layer dispatches (FP8 under `fp8`, else BF16) and combines (BF16) each way;
//    each token crosses IB once per remote node it reaches (node-limited routing) and fans out
//    over NVLink (or PCIe) inside the node; the slower of the two sets the time.
//  * Stages get contiguous layers that balance their time (embedding on the first; head and
//    MTP on the last; DualPipe balances the two stages of each rank and counts computation
//    only); when that split does not fit in memory, single layers move across stage
//    boundaries until it does. The schedule is simulated (parallel/pipeline_schedule.h): standalone
//    F/B expose their all-to-all, DualPipe's F&B pairs hide it behind computation.
//  * After the pipeline: the ZeRO-1 gradient reduce-scatter and parameter all-gather (BF16,
//    ring, not overlapped) and the AdamW update on the local shard (memory-bound).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "launch/planner_cluster.h"
#include "parallel/pipeline_schedule.h"
#include "trainer/config.h"

namespace mt::plan {

struct Layout {
  int64_t pp = 1;
  int64_t ep = 1;
  int64_t dp = 1;
  ScheduleKind schedule = ScheduleKind::k1F1B;
  int64_t micro_batch = 1;   // sequences per micro-batch
  int64_t global_batch = 1;  // sequences per optimizer step, all DP ranks
  int64_t seq_len = 4096;
  std::string precision = "bf16";       // bf16 | fp8
  std::string recompute = "selective";  // none | selective (RMSNorm, MLA up-proj, SwiGLU) | full
  std::string moment_dtype = "fp32";    // AdamW moments: fp32 | bf16

  int64_t NumGpus() const { return pp * dp; }
  int64_t MicroBatches() const { return global_batch / (micro_batch * dp); }
  int64_t TokensPerStep() const { return global_batch * seq_len; }
};

// One message for the first inconsistency (layers vs pp, experts vs ep, batch vs dp, DualPipe
// sizes, unknown precision or recompute policy).
absl::Status ValidateLayout(const ModelConfig& m, const Layout& layout);

// Contiguous main layers of one pipeline stage.
struct Stage {
  int64_t first_layer = 0;
  int64_t num_layers = 0;
  bool embedding = false;  // first stage
  bool head = false;       // last stage: final norm, lm_head, MTP modules
};

// Training FLOPs of one micro-batch through a stage (forward, input and weight gradients;
// recomputation not counted): trainer/flops.h's formula split by stage.
double StageTrainingFlops(const ModelConfig& m, const Layout& layout, const Stage& stage);

// Parameters a stage or a rank holds (a DualPipe rank holds two stages).
struct StageParams {
  double linear = 0;  // GEMM weights of dense modules (attention, dense/shared MLP, eh_proj)
  double other = 0;   // embedding, head, router, norms
  double expert = 0;  // routed experts on one EP rank (E / ep per MoE layer)
};
StageParams ParamsOfStage(const ModelConfig& m, const Layout& layout, const Stage& stage);

// Seconds for one MoE layer's dispatch + combine of `tokens` tokens, one direction.
double AllToAllSeconds(const ModelConfig& m, const ClusterSpec& c, const Layout& layout,
                       double tokens);
// Expected nodes other than its own that a token is sent to, and distinct GPUs it reaches.
double ExpectedRemoteNodes(const ModelConfig& m, const ClusterSpec& c, int64_t ep);
double ExpectedTargetGpus(const ModelConfig& m, int64_t ep);

struct StepEstimate {
  Layout layout;                   // as run (schedule after any fallback)
  bool schedule_fallback = false;  // DualPipe impossible at this batch: timed as 1F1B
  std::vector<Stage> stages;       // [pp]
  bool split_for_memory = false;   // the fastest split did not fit; layers moved until it does
  PipelineSchedule schedule;
  PipelineCosts costs;  // per stage, seconds per micro-batch
  PipelineTimeline timeline;
  double all_to_all_s = 0;  // one MoE layer, one micro-batch, one direction
  double pipeline_s = 0;    // simulated makespan
  double dp_comm_s = 0;
  double optimizer_s = 0;
  double step_s = 0;
  double tokens_per_s_per_gpu = 0;
  double bubble_fraction = 0;  // mean pipeline idle time per rank / step time
};

StageParams RankParams(const ModelConfig& m, const Layout& layout, const std::vector<Stage>& stages,
                       const PipelineSchedule& schedule, int rank);

// `efficiency`: achieved fraction of the dense peaks in the micro-batch computation.
absl::StatusOr<StepEstimate> EstimateStep(const ModelConfig& m, const ClusterSpec& c,
                                          const Layout& layout, double efficiency);

// Bytes per token that one decoder layer keeps for its backward (see planner_memory.cc for the
// itemised list per recompute policy).
double LayerActivationBytes(const ModelConfig& m, bool moe, const std::string& precision,
                            const std::string& recompute);

struct MemoryEstimate {
  int rank = 0;                   // the pipeline rank that needs the most
  double weights = 0;             // working copy: BF16, or FP8 GEMM weights under fp8
  double gradients = 0;           // FP32, full local copy (ZeRO-1 shards only the optimizer)
  double optimizer = 0;           // FP32 master + two moments, sharded over the replicas
  double activations = 0;         // peak of the stashes of the micro-batches in flight
  int activations_in_flight = 0;  // (micro-batch, chunk) stashes at that peak
  double comm_buffers = 0;        // all-to-all receive buffers, P2P buffers
  double workspace = 0;           // one micro-batch's logits; a recomputed layer under `full`
  double Total() const;
  double capacity = 0;  // usable bytes per GPU
  bool Fits() const { return Total() <= capacity; }
};

// The fullest pipeline rank for these stages and this schedule.
MemoryEstimate EstimateMemory(const ModelConfig& m, const ClusterSpec& c, const Layout& layout,
                              const std::vector<Stage>& stages, const PipelineSchedule& schedule);
inline MemoryEstimate EstimateMemory(const ModelConfig& m, const ClusterSpec& c,
                                     const StepEstimate& step) {
  return EstimateMemory(m, c, step.layout, step.stages, step.schedule);
}

}  // namespace mt::plan

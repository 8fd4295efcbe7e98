// launch/planner.h: `moetrain plan`: what a training run of a DeepseekV3-style model costs on a
// given cluster and layout: parameters, FLOPs per token, memory per GPU, step time, MFU,
// GPU-hours and dollars, per stage; a layout search; calibration from a measured run.
//
// MFU convention (printed with every report): model FLOPs by Megatron-LM's formula with
// causal attention, counting MTP (`mfu`) or not (`mfu_no_mtp`, DeepSeek's convention), over
// the GPU's dense BF16 peak, even when the GEMMs run in FP8 (DeepSeek's 38.9%).
//
// The achieved-efficiency factor scales every micro-batch's computation against the dense
// peaks (planner_estimate.h). Its default was fitted once so that DeepSeek-V3's layout on its
// 2,048 H800s reproduces the measured step of arXiv 2505.09343 Table 4 (19.926 s, 1,541.7
// tokens/s/GPU, i.e. 180K GPU-hours per trillion tokens); --calibrate-from refits it to a
// measured moetrain run.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "launch/planner_cluster.h"
#include "launch/planner_estimate.h"
#include "launch/planner_model.h"
#include "nlohmann/json.hpp"
#include "trainer/config.h"
#include "trainer/flops.h"

namespace mt {

// `moetrain plan ...` (argv[0] is the command name). Prints the report; returns the exit code.
int RunPlanCommand(int argc, char** argv);

namespace plan {

// Fitted by CalibrateEfficiency to DeepSeek-V3's measured step (see the file comment and
// tests/launch/planner_test.cc, which re-derives it).
inline constexpr double kDefaultEfficiency = 0.2944;

struct PlanRequest {
  ModelConfig model;
  ClusterSpec cluster;
  Layout layout;
  std::optional<BatchRamp> ramp;  // global batch grows from ramp->start over ramp->tokens
  double tokens = 0;              // token budget of the (single-stage) run
  double efficiency = kDefaultEfficiency;
  // When set, the step time comes from this MFU (Megatron convention, with MTP) instead of
  // the schedule simulation: reproducing a published run from its own throughput.
  std::optional<double> fixed_mfu;
};

struct PlanResult {
  ParamCounts params;
  FlopsBreakdown flops;  // per token, with MTP (trainer/flops.h)
  FlopsBreakdown flops_no_mtp;
  StepEstimate step;  // steady state at the full global batch
  MemoryEstimate memory;
  double step_s = 0;  // = step.step_s, or from fixed_mfu
  double tokens_per_s_per_gpu = 0;
  double mfu = 0;
  double mfu_no_mtp = 0;
  double model_tflops_per_gpu = 0;    // with MTP
  double gpu_hours = 0;               // for request.tokens, ramp included
  double gpu_hours_per_trillion = 0;  // steady state
  double wall_days = 0;
  double cost_usd = 0;
};

absl::StatusOr<PlanResult> MakePlan(const PlanRequest& request);
// GPU-hours for `tokens` tokens; with a ramp the early steps run at smaller batches (eight
// segments; those too small for DualPipe are timed as 1F1B).
absl::StatusOr<double> GpuHoursFor(const PlanRequest& request, double tokens, bool use_ramp);

// ---- Stages (pre-training, context extension, post-training) from a YAML file:
//   price_per_gpu_hour: 2.0            # optional, else the cluster's
//   stages:
//     - name: pre-training
//       tokens: 14.8T                  # planned at the base layout (with its batch ramp)
//     - name: context extension 32K
//       steps: 1000                    # tokens = steps x global_batch x seq_len
//       seq_len: 32768
//       global_batch: 1920
//       pp: 16                         # optional layout overrides: pp ep dp schedule
//                                      #   micro_batch precision recompute
//     - name: post-training
//       gpu_hours: 5K                  # given (measured or published), not planned
struct CostStage {
  std::string name;
  double tokens = 0;
  std::optional<double> given_gpu_hours;
  Layout layout;
  bool use_ramp = false;
};
struct StagePlan {
  std::string name;
  double tokens = 0;
  double gpu_hours = 0;
  double cost_usd = 0;
  bool given = false;
  bool fits = true;
  Layout layout;
  double tokens_per_s_per_gpu = 0;
};
struct StagesFile {
  std::vector<CostStage> stages;
  std::optional<double> price_per_gpu_hour;
};
absl::StatusOr<StagesFile> LoadStages(const std::string& path, const Layout& base);
absl::StatusOr<std::vector<StagePlan>> PlanStages(const PlanRequest& base, const StagesFile& file);

// ---- Search: every layout of the cluster's GPUs (pp dividing them, ep dividing dp and the
// experts, schedules, micro-batch 1/2/4, recompute policies) that fits memory, fastest first.
struct SearchRow {
  Layout layout;
  double step_s = 0;
  double tokens_per_s_per_gpu = 0;
  double mfu = 0;
  double bubble_fraction = 0;
  double memory_bytes = 0;
  double gpu_hours = 0;
  double cost_usd = 0;
};
absl::StatusOr<std::vector<SearchRow>> SearchLayouts(const PlanRequest& request, size_t top);

// ---- Calibration: the efficiency at which the plan's tokens/s/GPU equals `measured`.
absl::StatusOr<double> CalibrateEfficiency(const PlanRequest& request,
                                           double measured_tokens_per_s_per_gpu);
// Steady-state tokens/s/GPU of a metrics JSON-lines file (keys step, tokens, tokens_per_s =
// whole job, optionally tokens_per_s_per_gpu): the median over the lines after the first
// tenth (warm-up), divided by `num_gpus` when only tokens_per_s is given.
absl::StatusOr<double> ReadMeasuredThroughput(const std::string& path, int64_t num_gpus);

// ---- Output.
std::string FormatPlan(const PlanRequest& request, const PlanResult& result);
nlohmann::json PlanToJson(const PlanRequest& request, const PlanResult& result);
std::string FormatStages(const std::vector<StagePlan>& stages);
std::string FormatSearch(const std::vector<SearchRow>& rows);

}  // namespace plan
}  // namespace mt

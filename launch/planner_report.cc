// launch/planner_report.cc: the planner's readable tables and its JSON object.
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "launch/planner.h"

namespace mt::plan {
namespace {

constexpr const char* kMfuConvention =
    "model FLOPs by Megatron-LM's formula (causal attention; mfu counts MTP, mfu_no_mtp does "
    "not, as DeepSeek's 250 GFLOP/token) over the dense BF16 peak, also for fp8 runs";

// 671.03e9 -> "671.0B"; 2.664e6 -> "2.664M".
std::string Si(double v, int digits = 2) {
  const char* suffix[] = {"", "K", "M", "B", "T"};
  int i = 0;
  while (std::abs(v) >= 1000 && i < 4) v /= 1000, ++i;
  return absl::StrFormat("%.*f%s", digits, v, suffix[i]);
}

std::string GiB(double bytes) { return absl::StrFormat("%.1f GiB", bytes / 1073741824.0); }

std::string LayoutLine(const Layout& l) {
  return absl::StrFormat(
      "pp=%d ep=%d dp=%d (%d GPUs), %s, micro-batch %d x %d tokens, global batch %d "
      "(%d micro-batches per pipeline), %s, recompute %s",
      l.pp, l.ep, l.dp, l.NumGpus(), ScheduleKindName(l.schedule), l.micro_batch, l.seq_len,
      l.global_batch, l.MicroBatches(), l.precision, l.recompute);
}

nlohmann::json LayoutJson(const Layout& l) {
  return {{"pp", l.pp},
          {"ep", l.ep},
          {"dp", l.dp},
          {"num_gpus", l.NumGpus()},
          {"schedule", ScheduleKindName(l.schedule)},
          {"micro_batch", l.micro_batch},
          {"global_batch", l.global_batch},
          {"seq_len", l.seq_len},
          {"micro_batches", l.MicroBatches()},
          {"precision", l.precision},
          {"recompute", l.recompute},
          {"moment_dtype", l.moment_dtype}};
}

}  // namespace

std::string FormatPlan(const PlanRequest& r, const PlanResult& p) {
  std::string o;
  const ParamCounts& c = p.params;
  absl::StrAppend(&o, "moetrain plan on ", r.cluster.name, " (", r.cluster.num_gpus, " x ",
                  r.cluster.gpu, ")\n  layout: ", LayoutLine(r.layout), "\n");
  if (p.step.schedule_fallback) {
    absl::StrAppend(&o,
                    "  (DualPipe needs an even number >= 2*pp of micro-batches: timed as 1F1B)\n");
  }
  if (p.step.split_for_memory) {
    absl::StrAppend(
        &o, "  (the fastest layer split does not fit in memory: layers moved until it does)\n");
  }
  absl::StrAppend(&o, "\nParameters                 total     active/token\n");
  auto row = [&](const char* name, double total, double active) {
    absl::StrAppend(&o, absl::StrFormat("  %-22s %9s %12s\n", name, Si(total), Si(active)));
  };
  row("embedding", c.embedding, c.embedding);
  row("attention (MLA)", c.attention, c.attention);
  row("dense MLP", c.dense_mlp, c.dense_mlp);
  row("router", c.router, c.router);
  row("routed experts", c.routed_experts, c.active_routed);
  row("shared experts", c.shared_experts, c.shared_experts);
  row("head + final norm", c.head, c.head);
  row("total (without MTP)", c.Total(), c.Active());
  row("  non-embedding", c.Total() - c.embedding - c.head, c.ActiveNonEmbedding());
  row("MTP modules (unique)", c.mtp, c.mtp_active);

  absl::StrAppend(&o, "\nTraining FLOPs per token (Megatron-LM formula, causal, seq ",
                  r.layout.seq_len, ")\n");
  auto frow = [&](const char* name, double with, double without) {
    absl::StrAppend(&o,
                    absl::StrFormat("  %-22s %9.2f G %9.2f G\n", name, with / 1e9, without / 1e9));
  };
  absl::StrAppend(&o, "                          with MTP   without MTP\n");
  frow("dense MLP", p.flops.dense_mlp, p.flops_no_mtp.dense_mlp);
  frow("routed experts", p.flops.routed_experts, p.flops_no_mtp.routed_experts);
  frow("shared experts", p.flops.shared_experts, p.flops_no_mtp.shared_experts);
  frow("MLA projections", p.flops.attention_projections, p.flops_no_mtp.attention_projections);
  frow("MLA core (causal)", p.flops.attention_core, p.flops_no_mtp.attention_core);
  frow("MTP norms + eh_proj", p.flops.mtp_extra, p.flops_no_mtp.mtp_extra);
  frow("logits", p.flops.logits, p.flops_no_mtp.logits);
  frow("total", p.flops.total(), p.flops_no_mtp.total());

  const MemoryEstimate& m = p.memory;
  absl::StrAppend(&o, "\nMemory per GPU (pipeline rank ", m.rank, ", the fullest)\n");
  auto mrow = [&](const char* name, double bytes, const std::string& note) {
    absl::StrAppend(&o, absl::StrFormat("  %-22s %10s  %s\n", name, GiB(bytes), note));
  };
  mrow("weights", m.weights,
       r.layout.precision == "fp8" ? "FP8 GEMM weights, BF16 others" : "BF16");
  mrow("gradients", m.gradients, "FP32");
  mrow("optimizer (ZeRO-1)", m.optimizer,
       absl::StrCat("FP32 master + ", r.layout.moment_dtype, " moments, sharded"));
  mrow("activations", m.activations,
       absl::StrCat(m.activations_in_flight, " micro-batch stashes in flight"));
  mrow("comm buffers", m.comm_buffers, "all-to-all and P2P");
  mrow("workspace", m.workspace,
       r.layout.recompute == "full" ? "logits of one micro-batch, one layer being recomputed"
                                    : "logits of one micro-batch");
  mrow("total", m.Total(),
       absl::StrCat("of ", GiB(m.capacity), " usable: ", m.Fits() ? "fits" : "DOES NOT FIT"));

  const StepEstimate& s = p.step;
  absl::StrAppend(&o, "\nStep time");
  if (r.fixed_mfu) {
    absl::StrAppend(&o,
                    absl::StrFormat(" (from --mfu %.1f%%, not simulated)\n", 100 * *r.fixed_mfu));
  } else {
    absl::StrAppend(&o, absl::StrFormat(" (efficiency %.2f%% of dense peak on each micro-batch)\n",
                                        100 * r.efficiency));
    double worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < s.costs.stages.size(); ++i) {
      const double t = s.costs.stages[i].forward + s.costs.stages[i].backward;
      if (t > worst) worst = t, at = i;
    }
    const StageCost& w = s.costs.stages[at];
    absl::StrAppend(
        &o,
        absl::StrFormat(
            "  slowest stage %d (%d layers): F %.1f ms, B %.1f ms (W %.1f ms), all-to-all %.1f ms "
            "per MoE layer and direction, P2P %.2f ms\n",
            at, s.stages[at].num_layers, 1e3 * w.forward, 1e3 * w.backward, 1e3 * w.backward_weight,
            1e3 * s.all_to_all_s, 1e3 * s.costs.p2p));
    absl::StrAppend(
        &o, absl::StrFormat(
                "  pipeline %.3f s + ZeRO-1 reduce-scatter/all-gather %.3f s + optimizer %.3f s\n",
                s.pipeline_s, s.dp_comm_s, s.optimizer_s));
  }
  absl::StrAppend(
      &o,
      absl::StrFormat(
          "  step %.3f s, bubble %.1f%% of the step, %.1f tokens/s/GPU, %.0f model TFLOP/s/GPU\n",
          p.step_s, 100 * s.bubble_fraction, p.tokens_per_s_per_gpu, p.model_tflops_per_gpu));
  absl::StrAppend(
      &o, absl::StrFormat("  MFU %.1f%% with MTP, %.1f%% without (BF16 dense peak %.1f TFLOPS)\n",
                          100 * p.mfu, 100 * p.mfu_no_mtp, r.cluster.bf16_tflops));
  absl::StrAppend(&o, "  convention: ", kMfuConvention, "\n");

  if (r.tokens <= 0) {  // stages only
    absl::StrAppend(&o, absl::StrFormat("\n%s GPU-hours per trillion tokens at this layout\n",
                                        Si(p.gpu_hours_per_trillion, 1)));
    return o;
  }
  absl::StrAppend(&o,
                  absl::StrFormat("\nCost of %s tokens: %s GPU-hours (%s per trillion tokens), "
                                  "%.1f days on %d GPUs, $%s at $%.2f/GPU-hour\n",
                                  Si(r.tokens), Si(p.gpu_hours, 3), Si(p.gpu_hours_per_trillion, 1),
                                  p.wall_days, r.layout.NumGpus(), Si(p.cost_usd, 3),
                                  r.cluster.price_per_gpu_hour));
  return o;
}

nlohmann::json PlanToJson(const PlanRequest& r, const PlanResult& p) {
  const ParamCounts& c = p.params;
  const MemoryEstimate& m = p.memory;
  auto flops = [](const FlopsBreakdown& f) {
    return nlohmann::json{{"dense_mlp", f.dense_mlp},
                          {"routed_experts", f.routed_experts},
                          {"shared_experts", f.shared_experts},
                          {"mla_projections", f.attention_projections},
                          {"mla_core", f.attention_core},
                          {"mtp_glue", f.mtp_extra},
                          {"logits", f.logits},
                          {"total", f.total()}};
  };
  nlohmann::json stages = nlohmann::json::array();
  for (size_t i = 0; i < p.step.stages.size(); ++i) {
    const Stage& st = p.step.stages[i];
    const StageCost& sc = p.step.costs.stages[i];
    stages.push_back({{"first_layer", st.first_layer},
                      {"num_layers", st.num_layers},
                      {"embedding", st.embedding},
                      {"head", st.head},
                      {"forward_s", sc.forward},
                      {"backward_s", sc.backward},
                      {"backward_weight_s", sc.backward_weight},
                      {"all_to_all_s", sc.forward_comm}});
  }
  return {{"pipeline_stages", stages},
          {"cluster", r.cluster.name},
          {"gpu", r.cluster.gpu},
          {"layout", LayoutJson(p.step.layout)},
          {"params_total", c.Total()},
          {"params_active", c.Active()},
          {"params_active_non_embedding", c.ActiveNonEmbedding()},
          {"params_mtp", c.mtp},
          {"params",
           {{"embedding", c.embedding},
            {"attention", c.attention},
            {"dense_mlp", c.dense_mlp},
            {"router", c.router},
            {"routed_experts", c.routed_experts},
            {"shared_experts", c.shared_experts},
            {"head", c.head},
            {"mtp", c.mtp}}},
          {"flops_per_token", p.flops.total()},
          {"flops_per_token_no_mtp", p.flops_no_mtp.total()},
          {"flops_terms", flops(p.flops)},
          {"flops_terms_no_mtp", flops(p.flops_no_mtp)},
          {"memory_per_gpu_bytes", m.Total()},
          {"memory_capacity_bytes", m.capacity},
          {"fits", m.Fits()},
          {"memory",
           {{"rank", m.rank},
            {"weights", m.weights},
            {"gradients", m.gradients},
            {"optimizer", m.optimizer},
            {"activations", m.activations},
            {"activations_in_flight", m.activations_in_flight},
            {"comm_buffers", m.comm_buffers},
            {"workspace", m.workspace}}},
          {"efficiency", r.fixed_mfu ? nlohmann::json(nullptr) : nlohmann::json(r.efficiency)},
          {"step_time_s", p.step_s},
          {"pipeline_s", p.step.pipeline_s},
          {"dp_comm_s", p.step.dp_comm_s},
          {"optimizer_s", p.step.optimizer_s},
          {"all_to_all_s", p.step.all_to_all_s},
          {"schedule_fallback", p.step.schedule_fallback},
          {"tokens_per_s_per_gpu", p.tokens_per_s_per_gpu},
          {"model_tflops_per_gpu", p.model_tflops_per_gpu},
          {"mfu", p.mfu},
          {"mfu_no_mtp", p.mfu_no_mtp},
          {"mfu_convention", kMfuConvention},
          {"bubble_fraction", p.step.bubble_fraction},
          {"tokens", r.tokens},
          {"gpu_hours", p.gpu_hours},
          {"gpu_hours_per_trillion_tokens", p.gpu_hours_per_trillion},
          {"wall_days", p.wall_days},
          {"price_per_gpu_hour", r.cluster.price_per_gpu_hour},
          {"cost_usd", p.cost_usd}};
}

std::string FormatStages(const std::vector<StagePlan>& stages) {
  std::string o =
      "\nStage                            tokens   GPU-hours        cost  tok/s/GPU  layout\n";
  double hours = 0, cost = 0;
  for (const StagePlan& s : stages) {
    hours += s.gpu_hours, cost += s.cost_usd;
    const std::string layout =
        s.given ? "given"
                : absl::StrFormat("pp%d ep%d dp%d %s seq %d%s", s.layout.pp, s.layout.ep,
                                  s.layout.dp, ScheduleKindName(s.layout.schedule),
                                  s.layout.seq_len, s.fits ? "" : " (does not fit)");
    absl::StrAppend(
        &o,
        absl::StrFormat("  %-28s %9s %11s %11s %10s  %s\n", s.name, s.given ? "-" : Si(s.tokens),
                        Si(s.gpu_hours, 3), "$" + Si(s.cost_usd, 3),
                        s.given ? "-" : absl::StrFormat("%.0f", s.tokens_per_s_per_gpu), layout));
  }
  absl::StrAppend(
      &o, absl::StrFormat("  %-28s %9s %11s %11s\n", "total", "", Si(hours, 3), "$" + Si(cost, 3)));
  return o;
}

std::string FormatSearch(const std::vector<SearchRow>& rows) {
  std::string o =
      "\nLayouts that fit, fastest first (GPU-hours at the full batch, without the ramp)\n"
      "    pp   ep    dp  schedule  mb  recompute   memory   step s  tok/s/GPU   MFU  bubble   "
      "GPU-hours        cost\n";
  for (const SearchRow& r : rows) {
    const Layout& l = r.layout;
    absl::StrAppend(
        &o, absl::StrFormat(
                "  %4d %4d %5d  %-8s %3d  %-9s %9s %8.2f %10.1f %5.1f%% %6.1f%% %11s %11s\n", l.pp,
                l.ep, l.dp, ScheduleKindName(l.schedule), l.micro_batch, l.recompute,
                GiB(r.memory_bytes), r.step_s, r.tokens_per_s_per_gpu, 100 * r.mfu,
                100 * r.bubble_fraction, Si(r.gpu_hours, 3), "$" + Si(r.cost_usd, 3)));
  }
  return o;
}

}  // namespace mt::plan

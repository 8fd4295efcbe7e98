// launch/planner_time.cc: the step-time model of planner_estimate.h: stage work, all-to-all,
// layer partition, schedule simulation, ZeRO-1 communication and the optimizer update.
#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/status.h"
#include "launch/planner_estimate.h"
#include "launch/planner_model.h"

namespace mt::plan {
namespace {

// The AdamW update streams its shard at about this share of peak memory bandwidth (assumed).
constexpr double kOptimizerBandwidthShare = 0.8;

// log C(n, k) for real n (expected-coverage formulas below).
double LogChoose(double n, double k) {
  return std::lgamma(n + 1) - std::lgamma(k + 1) - std::lgamma(n - k + 1);
}

// Probability that none of `picked` items drawn without replacement from `total` falls in a
// given subset of `subset` items.
double MissProbability(double total, double subset, double picked) {
  if (total - subset < picked) return 0;
  return std::exp(LogChoose(total - subset, picked) - LogChoose(total, picked));
}

// FLOPs of one micro-batch through a stage, per precision class; forward pass only, plus what
// the recompute policy runs again before the backward.
struct StageFlops {
  double linear = 0;  // FP8-able linear layers (fwd = input grad = weight grad)
  double head = 0;    // BF16 output-head GEMMs (fwd = input grad = weight grad)
  double core = 0;    // BF16 attention core (input grad = 2 x fwd, no weight grad)
  int64_t moe_layers = 0;
  double recompute_linear = 0;  // selective: MLA up-projections; full: the layers' forward
  double recompute_core = 0;
  int64_t recompute_moe_layers = 0;  // full recompute dispatches and combines again
};

StageFlops WorkOf(const ModelConfig& m, const Layout& l, const Stage& s) {
  const double tokens = static_cast<double>(l.micro_batch) * l.seq_len;
  const double H = m.num_attention_heads;
  // q_b and kv_b: what DeepSeek's selective recompute runs again (norms and SwiGLU are
  // element-wise, too cheap to count).
  const double up_proj = m.q_lora_rank * H * (m.qk_nope_head_dim + m.qk_rope_head_dim) +
                         m.kv_lora_rank * H * (m.qk_nope_head_dim + m.v_head_dim);
  StageFlops w;
  auto add_layer = [&](bool moe) {
    const double linear =
        2 * tokens * (AttentionProjectionMacs(m) + (moe ? MoeMlpMacs(m) : DenseMlpMacs(m)));
    const double core = 2 * tokens * AttentionCoreMacs(m, l.seq_len);
    w.linear += linear;
    w.core += core;
    w.moe_layers += moe ? 1 : 0;
    if (l.recompute == "selective") w.recompute_linear += 2 * tokens * up_proj;
    if (l.recompute == "full") {
      w.recompute_linear += linear, w.recompute_core += core, w.recompute_moe_layers += moe ? 1 : 0;
    }
  };
  for (int64_t i = s.first_layer; i < s.first_layer + s.num_layers; ++i) add_layer(m.IsMoeLayer(i));
  if (s.head) {
    w.head += 2 * tokens * LogitsMacs(m) * (1 + m.num_nextn_predict_layers);
    for (int64_t k = 0; k < m.num_nextn_predict_layers; ++k) {
      add_layer(MtpLayersAreMoe(m));
      w.linear += 2 * tokens * MtpGlueMacs(m);
    }
  }
  return w;
}

struct Speeds {
  double linear;  // FLOP/s achieved by the linear layers
  double bf16;    // FLOP/s achieved at BF16 (head, attention core)
};

StageCost CostOf(const StageFlops& w, const Speeds& v, double a2a) {
  StageCost c;
  const double fwd = w.linear / v.linear + (w.head + w.core) / v.bf16;
  const double weight = w.linear / v.linear + w.head / v.bf16;
  const double recompute = w.recompute_linear / v.linear + w.recompute_core / v.bf16;
  const double input = weight + 2 * w.core / v.bf16 + recompute;
  c.forward_comm = w.moe_layers * a2a;
  c.backward_comm = (w.moe_layers + w.recompute_moe_layers) * a2a;
  c.forward = fwd + c.forward_comm;
  c.backward_weight = weight;
  c.backward = input + weight + c.backward_comm;
  return c;
}

// Contiguous splits of the main layers over pp stages, by their layer counts. Every stage gets
// at least one layer except the last, whose head and MTP modules may fill it alone
// (DeepSeek-V3's head + MTP cost about four MoE layers). A stage's load is its F + B,
// computation only under DualPipe (its F&B pairs hide the all-to-all); it is additive over the
// layers plus the head (the embedding costs nothing here), so prefix sums give it in O(1).
class LayerSplit {
 public:
  LayerSplit(const ModelConfig& m, const Layout& l, const Speeds& v, double a2a)
      : pp_(l.pp), layers_(m.num_hidden_layers), dualpipe_(l.schedule == ScheduleKind::kDualPipe) {
    auto load = [&](const Stage& s) {
      const StageCost c = CostOf(WorkOf(m, l, s), v, a2a);
      return c.forward + c.backward - (dualpipe_ ? c.forward_comm + c.backward_comm : 0);
    };
    prefix_.assign(layers_ + 1, 0);
    for (int64_t i = 0; i < layers_; ++i)
      prefix_[i + 1] = prefix_[i] + load(Stage{i, 1, false, false});
    head_ = load(Stage{0, 0, false, true});
    // Loads are compared in units of 1e-9 of the whole model, so that splits equal in exact
    // arithmetic tie exactly whatever the efficiency (and keep the first one found).
    quantum_ = (prefix_.back() + head_) * 1e-9;
  }

  // The split whose slowest stage is fastest (O(pp * L^2) dynamic programme); under DualPipe
  // then improved for the slowest rank, which runs stages r and pp-1-r.
  std::vector<int64_t> Fastest() const {
    const double inf = std::numeric_limits<double>::infinity();
    // best[i][j]: slowest stage when the first j layers form stages 0..i-1.
    std::vector<std::vector<double>> best(pp_ + 1, std::vector<double>(layers_ + 1, inf));
    std::vector<std::vector<int64_t>> cut(pp_ + 1, std::vector<int64_t>(layers_ + 1, 0));
    best[0][0] = 0;
    for (int64_t i = 1; i <= pp_; ++i) {
      for (int64_t j = 0; j <= layers_; ++j) {
        for (int64_t k = 0; k < j || (i == pp_ && k == j); ++k) {
          if (best[i - 1][k] == inf) continue;
          const double t =
              std::max(best[i - 1][k], Quantize(prefix_[j] - prefix_[k] + (i == pp_ ? head_ : 0)));
          if (t < best[i][j]) best[i][j] = t, cut[i][j] = k;
        }
      }
    }
    std::vector<int64_t> sizes(pp_);
    for (int64_t i = pp_, j = layers_; i >= 1; --i) sizes[i - 1] = j - cut[i][j], j = cut[i][j];
    return dualpipe_ ? Improve(sizes, [this](const auto& n) { return Load(n); }) : sizes;
  }

  // (slowest stage or DualPipe rank, sum of squared loads): smaller is faster.
  std::pair<double, double> Load(const std::vector<int64_t>& sizes) const {
    std::vector<double> stage(pp_);
    for (int64_t i = 0, first = 0; i < pp_; first += sizes[i], ++i) {
      stage[i] = prefix_[first + sizes[i]] - prefix_[first] + (i == pp_ - 1 ? head_ : 0);
    }
    double worst = 0, squares = 0;
    for (int64_t r = 0; r < (dualpipe_ ? pp_ / 2 : pp_); ++r) {
      const double rank = Quantize(stage[r] + (dualpipe_ ? stage[pp_ - 1 - r] : 0));
      worst = std::max(worst, rank), squares += rank * rank;
    }
    return {worst, squares};
  }

  // The splits one layer away: a layer crosses one stage boundary.
  std::vector<std::vector<int64_t>> Neighbours(const std::vector<int64_t>& sizes) const {
    std::vector<std::vector<int64_t>> out;
    for (int64_t b = 0; b + 1 < pp_; ++b) {
      for (int dir : {-1, 1}) {  // -1: stage b gives its last layer to stage b+1
        std::vector<int64_t> n = sizes;
        n[b] += dir, n[b + 1] -= dir;
        if (n[b] >= 1 && n[b + 1] >= (b + 1 == pp_ - 1 ? 0 : 1)) out.push_back(n);
      }
    }
    return out;
  }

  // Moves single layers across stage boundaries while `score` (lower is better) improves.
  template <class Score>
  std::vector<int64_t> Improve(std::vector<int64_t> sizes, Score score) const {
    auto current = score(sizes);
    for (bool improved = true; improved;) {
      improved = false;
      for (const std::vector<int64_t>& n : Neighbours(sizes)) {
        auto candidate = score(n);
        if (candidate < current) sizes = n, current = candidate, improved = true;
      }
    }
    return sizes;
  }

  std::vector<Stage> Stages(const std::vector<int64_t>& sizes) const {
    std::vector<Stage> stages(pp_);
    for (int64_t i = 0, first = 0; i < pp_; first += sizes[i], ++i) {
      stages[i] = Stage{first, sizes[i], i == 0, i == pp_ - 1};
    }
    return stages;
  }

 private:
  double Quantize(double load) const { return std::round(load / quantum_); }

  int64_t pp_, layers_;
  bool dualpipe_;
  std::vector<double> prefix_;  // [L + 1] load of the first i layers
  double head_ = 0;
  double quantum_ = 1;
};

// Ring reduce-scatter or all-gather of `bytes` over `n` ranks: each sends (n-1)/n of it.
double RingSeconds(double bytes, int64_t n, double bandwidth) {
  return n <= 1 ? 0 : bytes * (n - 1) / n / bandwidth;
}

}  // namespace

double StageTrainingFlops(const ModelConfig& m, const Layout& l, const Stage& s) {
  const StageFlops w = WorkOf(m, l, s);
  return 3 * (w.linear + w.head + w.core);
}

StageParams ParamsOfStage(const ModelConfig& m, const Layout& l, const Stage& s) {
  StageParams p;
  auto add_layer = [&](bool moe) {
    p.linear += AttentionParams(m) + (moe ? SharedExpertParams(m) : DenseMlpParams(m));
    p.other += moe ? RouterParams(m) : 0;
    p.expert += moe ? RoutedExpertParams(m) / l.ep : 0;
  };
  for (int64_t i = s.first_layer; i < s.first_layer + s.num_layers; ++i) add_layer(m.IsMoeLayer(i));
  if (s.embedding) p.other += static_cast<double>(m.vocab_size) * m.hidden_size;
  if (s.head) {
    p.other += CountParameters(m).head;
    for (int64_t k = 0; k < m.num_nextn_predict_layers; ++k) {
      add_layer(MtpLayersAreMoe(m));
      p.linear += MtpGlueParams(m);
    }
  }
  return p;
}

StageParams RankParams(const ModelConfig& m, const Layout& l, const std::vector<Stage>& stages,
                       const PipelineSchedule& schedule, int rank) {
  StageParams p;
  for (int chunk = 0; chunk < schedule.num_chunks; ++chunk) {
    const StageParams s = ParamsOfStage(m, l, stages[schedule.StageOf(rank, chunk)]);
    p.linear += s.linear;
    p.other += s.other;
    p.expert += s.expert;
  }
  return p;
}

absl::Status ValidateLayout(const ModelConfig& m, const Layout& l) {
  auto bad = [](const std::string& what) { return absl::InvalidArgumentError("layout: " + what); };
  if (l.pp < 1 || l.ep < 1 || l.dp < 1 || l.micro_batch < 1 || l.seq_len < 1) {
    return bad(absl::StrCat("pp=", l.pp, " ep=", l.ep, " dp=", l.dp, " micro-batch=", l.micro_batch,
                            " seq-len=", l.seq_len, "; expected all >= 1"));
  }
  if (l.pp > m.num_hidden_layers) {
    return bad(absl::StrCat("pp=", l.pp, " stages for ", m.num_hidden_layers,
                            " layers; expected at most one stage per layer"));
  }
  if (l.dp % l.ep != 0 || m.n_routed_experts % l.ep != 0) {
    return bad(absl::StrCat("ep=", l.ep, " must divide dp=", l.dp, " and the ", m.n_routed_experts,
                            " routed experts"));
  }
  if (l.global_batch < l.micro_batch * l.dp || l.global_batch % (l.micro_batch * l.dp) != 0) {
    return bad(absl::StrCat("global batch ", l.global_batch, " is not a multiple of micro-batch ",
                            l.micro_batch, " x dp ", l.dp, " = ", l.micro_batch * l.dp));
  }
  if (l.precision != "bf16" && l.precision != "fp8") {
    return bad(absl::StrCat("precision \"", l.precision, "\"; expected bf16 or fp8"));
  }
  if (l.recompute != "none" && l.recompute != "selective" && l.recompute != "full") {
    return bad(absl::StrCat("recompute \"", l.recompute, "\"; expected none, selective or full"));
  }
  if (l.moment_dtype != "fp32" && l.moment_dtype != "bf16") {
    return bad(absl::StrCat("moment dtype \"", l.moment_dtype, "\"; expected fp32 or bf16"));
  }
  if (l.schedule == ScheduleKind::kDualPipe) {
    RETURN_IF_ERROR(
        MakeDualPipeSchedule(static_cast<int>(l.pp), static_cast<int>(l.MicroBatches())).status());
  }
  return absl::OkStatus();
}

double ExpectedRemoteNodes(const ModelConfig& m, const ClusterSpec& c, int64_t ep) {
  const int64_t nodes = (ep + c.gpus_per_node - 1) / c.gpus_per_node;
  if (nodes <= 1) return 0;
  double reached;  // expected distinct nodes holding a token's experts
  if (m.n_group > 1 && m.topk_group < m.n_group && m.n_group % nodes == 0) {
    // Node-limited routing: groups map onto nodes, a token picks topk_group groups.
    reached = nodes * (1 - MissProbability(m.n_group, m.n_group / nodes, m.topk_group));
  } else {
    reached = nodes * (1 - MissProbability(m.n_routed_experts, m.n_routed_experts / nodes,
                                           m.num_experts_per_tok));
  }
  return reached * (1 - 1.0 / nodes);  // its own node is as likely as any other
}

double ExpectedTargetGpus(const ModelConfig& m, int64_t ep) {
  return ep *
         (1 - MissProbability(m.n_routed_experts, m.n_routed_experts / ep, m.num_experts_per_tok));
}

double AllToAllSeconds(const ModelConfig& m, const ClusterSpec& c, const Layout& l, double tokens) {
  if (l.ep <= 1) return 0;
  const double dispatch = l.precision == "fp8" ? 1 + 4.0 / 128 : 2;  // bytes/element (+scales)
  const double per_token_elems = m.hidden_size * (dispatch + 2);     // dispatch + combine
  const int64_t local = std::min(l.ep, c.gpus_per_node);
  // IB: once per remote node; NVLink/PCIe: from the entry GPU to each target GPU but itself.
  const double inter = ExpectedRemoteNodes(m, c, l.ep) * per_token_elems;
  const double intra = ExpectedTargetGpus(m, l.ep) * (1 - 1.0 / local) * per_token_elems;
  const double per_token =
      std::max(inter / c.InterNodeBytesPerSecond(), intra / c.IntraNodeBytesPerSecond());
  return tokens * per_token;
}

absl::StatusOr<StepEstimate> EstimateStep(const ModelConfig& m, const ClusterSpec& c,
                                          const Layout& layout, double efficiency) {
  if (!(efficiency > 0 && efficiency <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("efficiency ", efficiency, "; expected a fraction of peak in (0, 1]"));
  }
  StepEstimate e;
  e.layout = layout;
  // DualPipe needs m even and >= 2 pp; a smaller batch (ramp) runs 1F1B instead.
  const int64_t micro_batches = layout.MicroBatches();
  if (layout.schedule == ScheduleKind::kDualPipe &&
      (layout.pp % 2 != 0 || micro_batches % 2 != 0 || micro_batches < 2 * layout.pp)) {
    e.layout.schedule = ScheduleKind::k1F1B;
    e.schedule_fallback = true;
  }
  RETURN_IF_ERROR(ValidateLayout(m, e.layout));
  const Layout& l = e.layout;
  const double tokens = static_cast<double>(l.micro_batch) * l.seq_len;
  const Speeds v{(l.precision == "fp8" ? c.fp8_tflops : c.bf16_tflops) * 1e12 * efficiency,
                 c.bf16_tflops * 1e12 * efficiency};
  e.all_to_all_s = AllToAllSeconds(m, c, l, tokens);
  ASSIGN_OR_RETURN(e.schedule, MakePipelineSchedule(l.schedule, static_cast<int>(l.pp),
                                                    static_cast<int>(micro_batches)));
  const LayerSplit split(m, l, v, e.all_to_all_s);
  std::vector<int64_t> sizes = split.Fastest();
  auto excess = [&](const std::vector<int64_t>& n) {
    const MemoryEstimate mem = EstimateMemory(m, c, l, split.Stages(n), e.schedule);
    return std::max(0.0, mem.Total() - mem.capacity);
  };
  if (excess(sizes) > 0) {
    sizes = split.Improve(sizes, [&](const auto& n) {
      return std::pair{excess(n), split.Load(n)};
    });
    e.split_for_memory = true;
  }
  // PP neighbours are dp ranks apart: on another node once a DP group fills a node.
  const double p2p_bw =
      l.dp >= c.gpus_per_node ? c.InterNodeBytesPerSecond() : c.IntraNodeBytesPerSecond();
  auto costs_of = [&](const std::vector<int64_t>& n) {
    PipelineCosts costs;
    for (const Stage& s : split.Stages(n)) {
      costs.stages.push_back(CostOf(WorkOf(m, l, s), v, e.all_to_all_s));
    }
    costs.p2p = l.pp > 1 ? tokens * m.hidden_size * 2 / p2p_bw : 0;
    return costs;
  };
  if (l.schedule == ScheduleKind::kDualPipe) {
    // Ranks at the pipeline ends also run most of the unoverlapped warm-up and cool-down work,
    // which the balance above does not see: among splits as balanced as this one (and fitting
    // if it fits), move single layers while the simulated makespan shrinks.
    const double balance = split.Load(sizes).first;
    const bool fits = excess(sizes) == 0;
    ASSIGN_OR_RETURN(PipelineTimeline best, SimulateSchedule(e.schedule, costs_of(sizes)));
    for (bool improved = true; improved;) {
      improved = false;
      std::vector<int64_t> next = sizes;
      for (const std::vector<int64_t>& n : split.Neighbours(sizes)) {
        if (split.Load(n).first > balance || (fits && excess(n) > 0)) continue;
        ASSIGN_OR_RETURN(PipelineTimeline t, SimulateSchedule(e.schedule, costs_of(n)));
        if (t.makespan < best.makespan * (1 - 1e-9)) best = t, next = n, improved = true;
      }
      sizes = next;
    }
  }
  e.stages = split.Stages(sizes);
  e.costs = costs_of(sizes);
  ASSIGN_OR_RETURN(e.timeline, SimulateSchedule(e.schedule, e.costs));
  e.pipeline_s = e.timeline.makespan;

  // ZeRO-1 and the optimizer, for the rank with the most parameters.
  const int64_t expert_replicas = l.dp / l.ep;
  const double bw =
      l.dp > c.gpus_per_node ? c.InterNodeBytesPerSecond() : c.IntraNodeBytesPerSecond();
  double worst_dp = 0, worst_opt = 0;
  for (int r = 0; r < l.pp; ++r) {
    const StageParams p = RankParams(m, l, e.stages, e.schedule, r);
    const double dense = p.linear + p.other;
    // BF16 gradients reduce-scattered, BF16 parameters all-gathered.
    const double dp_s =
        2 * (RingSeconds(2 * dense, l.dp, bw) + RingSeconds(2 * p.expert, expert_replicas, bw));
    const double shard = dense / l.dp + p.expert / expert_replicas;
    const double moment = l.moment_dtype == "bf16" ? 2 : 4;
    // Read grad (4) and master (4), read+write two moments, write master (4) and BF16 param (2).
    const double bytes = shard * (4 + 4 + 4 * moment + 4 + 2);
    const double opt_s = bytes / (c.memory_bandwidth_gbps * 1e9 * kOptimizerBandwidthShare);
    worst_dp = std::max(worst_dp, dp_s);
    worst_opt = std::max(worst_opt, opt_s);
  }
  e.dp_comm_s = worst_dp;
  e.optimizer_s = worst_opt;
  e.step_s = e.pipeline_s + e.dp_comm_s + e.optimizer_s;
  e.tokens_per_s_per_gpu = l.TokensPerStep() / e.step_s / l.NumGpus();
  e.bubble_fraction = e.timeline.MeanBubble() / e.step_s;
  return e;
}

}  // namespace mt::plan

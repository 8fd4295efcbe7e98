// launch/planner.cc: one plan (MakePlan), GPU-hours with the batch ramp, the layout search and
// the efficiency calibration. Stages are in planner_stages.cc, output in planner_report.cc.
#include "launch/planner.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "kernels/status.h"

namespace mt::plan {
namespace {

double BF16Peak(const ClusterSpec& c) { return c.bf16_tflops * 1e12; }

// Steady-state tokens/s/GPU of `layout` (fixed MFU or simulated).
absl::StatusOr<double> Throughput(const PlanRequest& r, const Layout& layout) {
  if (r.fixed_mfu) {
    const double flops = TrainingFlopsPerToken(r.model, layout.seq_len, true).total();
    return *r.fixed_mfu * BF16Peak(r.cluster) / flops;
  }
  ASSIGN_OR_RETURN(StepEstimate e, EstimateStep(r.model, r.cluster, layout, r.efficiency));
  return e.tokens_per_s_per_gpu;
}

}  // namespace

absl::StatusOr<double> GpuHoursFor(const PlanRequest& r, double tokens, bool use_ramp) {
  if (!(tokens >= 0)) return absl::InvalidArgumentError("token budget must be >= 0");
  const Layout& l = r.layout;
  double hours = 0, remaining = tokens;
  if (use_ramp && r.ramp && r.ramp->start < l.global_batch && r.ramp->tokens > 0 && !r.fixed_mfu) {
    // Eight equal-token segments, each at its mean batch rounded down to whole micro-batches
    // per DP rank (trainer/config.h BatchRamp).
    constexpr int kSegments = 8;
    const double ramp_tokens = std::min(r.ramp->tokens, tokens);
    const int64_t unit = l.micro_batch * l.dp;
    for (int i = 0; i < kSegments; ++i) {
      const double batch = r.ramp->start + (l.global_batch - r.ramp->start) * (i + 0.5) / kSegments;
      Layout seg = l;
      seg.global_batch = std::max<int64_t>(unit, static_cast<int64_t>(batch / unit) * unit);
      ASSIGN_OR_RETURN(double tps, Throughput(r, seg));
      hours += ramp_tokens / kSegments / tps / 3600;
    }
    remaining -= ramp_tokens;
  }
  ASSIGN_OR_RETURN(double tps, Throughput(r, l));
  return hours + remaining / tps / 3600;
}

absl::StatusOr<PlanResult> MakePlan(const PlanRequest& r) {
  RETURN_IF_ERROR(ValidateLayout(r.model, r.layout));
  if (r.fixed_mfu && !(*r.fixed_mfu > 0 && *r.fixed_mfu <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--mfu ", *r.fixed_mfu, "; expected a fraction in (0, 1]"));
  }
  const Layout& l = r.layout;
  PlanResult p;
  p.params = CountParameters(r.model);
  p.flops = TrainingFlopsPerToken(r.model, l.seq_len, true);
  p.flops_no_mtp = TrainingFlopsPerToken(r.model, l.seq_len, false);
  ASSIGN_OR_RETURN(p.step, EstimateStep(r.model, r.cluster, l, r.efficiency));
  p.memory = EstimateMemory(r.model, r.cluster, p.step);
  if (r.fixed_mfu) {
    p.step_s =
        l.TokensPerStep() * p.flops.total() / (l.NumGpus() * *r.fixed_mfu * BF16Peak(r.cluster));
  } else {
    p.step_s = p.step.step_s;
  }
  p.tokens_per_s_per_gpu = l.TokensPerStep() / p.step_s / l.NumGpus();
  p.model_tflops_per_gpu = p.tokens_per_s_per_gpu * p.flops.total() / 1e12;
  p.mfu = p.tokens_per_s_per_gpu * p.flops.total() / BF16Peak(r.cluster);
  p.mfu_no_mtp = p.tokens_per_s_per_gpu * p.flops_no_mtp.total() / BF16Peak(r.cluster);
  p.gpu_hours_per_trillion = 1e12 / p.tokens_per_s_per_gpu / 3600;
  ASSIGN_OR_RETURN(p.gpu_hours, GpuHoursFor(r, r.tokens, /*use_ramp=*/true));
  p.wall_days = p.gpu_hours / l.NumGpus() / 24;
  p.cost_usd = p.gpu_hours * r.cluster.price_per_gpu_hour;
  return p;
}

absl::StatusOr<std::vector<SearchRow>> SearchLayouts(const PlanRequest& r, size_t top) {
  const ModelConfig& m = r.model;
  const int64_t gpus = r.cluster.num_gpus;
  std::vector<SearchRow> rows;
  for (int64_t pp = 1; pp <= std::min<int64_t>(gpus, m.num_hidden_layers); ++pp) {
    if (gpus % pp != 0) continue;
    const int64_t dp = gpus / pp;
    for (int64_t ep = 1; ep <= dp; ++ep) {
      if (dp % ep != 0 || m.n_routed_experts % ep != 0) continue;
      for (ScheduleKind kind :
           {ScheduleKind::k1F1B, ScheduleKind::kZB1P, ScheduleKind::kDualPipe}) {
        if (pp == 1 && kind != ScheduleKind::k1F1B) continue;
        for (int64_t mb : {1, 2, 4}) {
          for (const char* recompute : {"none", "selective", "full"}) {
            Layout l = r.layout;
            l.pp = pp, l.dp = dp, l.ep = ep, l.schedule = kind, l.micro_batch = mb;
            l.recompute = recompute;
            if (!ValidateLayout(m, l).ok()) continue;
            absl::StatusOr<StepEstimate> e = EstimateStep(m, r.cluster, l, r.efficiency);
            if (!e.ok()) continue;
            const MemoryEstimate mem = EstimateMemory(m, r.cluster, *e);
            if (!mem.Fits()) continue;
            SearchRow row;
            row.layout = l;
            row.step_s = e->step_s;
            row.tokens_per_s_per_gpu = e->tokens_per_s_per_gpu;
            row.mfu = e->tokens_per_s_per_gpu * TrainingFlopsPerToken(m, l.seq_len, true).total() /
                      BF16Peak(r.cluster);
            row.bubble_fraction = e->bubble_fraction;
            row.memory_bytes = mem.Total();
            row.gpu_hours = r.tokens / e->tokens_per_s_per_gpu / 3600;
            row.cost_usd = row.gpu_hours * r.cluster.price_per_gpu_hour;
            rows.push_back(row);
          }
        }
      }
    }
  }
  if (rows.empty()) {
    return absl::NotFoundError(absl::StrCat(
        "no layout of ", gpus, " GPUs (", r.cluster.name, ") fits this model in ",
        r.cluster.memory_gib, " GiB per GPU at global batch ", r.layout.global_batch, " x ",
        r.layout.seq_len, " tokens; try more GPUs or a smaller global batch or sequence"));
  }
  std::stable_sort(rows.begin(), rows.end(), [](const SearchRow& a, const SearchRow& b) {
    return a.tokens_per_s_per_gpu > b.tokens_per_s_per_gpu;
  });
  if (rows.size() > top) rows.resize(top);
  return rows;
}

absl::StatusOr<double> CalibrateEfficiency(const PlanRequest& r, double measured) {
  if (!(measured > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("measured throughput ", measured, "; expected > 0"));
  }
  RETURN_IF_ERROR(ValidateLayout(r.model, r.layout));
  PlanRequest q = r;
  q.fixed_mfu.reset();
  auto tps = [&](double eff) -> absl::StatusOr<double> {
    q.efficiency = eff;
    return Throughput(q, q.layout);
  };
  ASSIGN_OR_RETURN(double at_peak, tps(1.0));
  if (measured > at_peak) {
    return absl::InvalidArgumentError(absl::StrCat(
        "measured ", measured, " tokens/s/GPU exceeds what this layout reaches at 100% of peak (",
        at_peak, "); check the cluster file, the layout and the metrics' units"));
  }
  // Throughput rises with efficiency, in small steps where the best layer split changes:
  // bisect, then take whichever end of the final bracket lands closer.
  double lo = 1e-4, hi = 1.0;
  for (int i = 0; i < 40; ++i) {
    const double mid = std::sqrt(lo * hi);
    ASSIGN_OR_RETURN(double t, tps(mid));
    (t < measured ? lo : hi) = mid;
  }
  ASSIGN_OR_RETURN(double t_lo, tps(lo));
  ASSIGN_OR_RETURN(double t_hi, tps(hi));
  return std::abs(t_lo - measured) <= std::abs(t_hi - measured) ? lo : hi;
}

absl::StatusOr<double> ReadMeasuredThroughput(const std::string& path, int64_t num_gpus) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open the metrics file"));
  std::vector<double> per_gpu;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", n, ": not a JSON object"));
    }
    if (j.contains("tokens_per_s_per_gpu") && j["tokens_per_s_per_gpu"].is_number()) {
      per_gpu.push_back(j["tokens_per_s_per_gpu"].get<double>());
    } else if (j.contains("tokens_per_s") && j["tokens_per_s"].is_number()) {
      per_gpu.push_back(j["tokens_per_s"].get<double>() / num_gpus);
    } else if (j.contains("step")) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ":", n,
          ": a step line without a number under tokens_per_s; expected the "
          "trainer's metrics lines ({\"step\": ..., \"tokens\": ..., \"tokens_per_s\": ...})"));
    }  // other events (validation) carry no throughput
  }
  if (per_gpu.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no lines with tokens_per_s"));
  }
  per_gpu.erase(per_gpu.begin(), per_gpu.begin() + per_gpu.size() / 10);  // warm-up
  std::sort(per_gpu.begin(), per_gpu.end());
  const size_t n = per_gpu.size();
  return n % 2 ? per_gpu[n / 2] : (per_gpu[n / 2 - 1] + per_gpu[n / 2]) / 2;
}

}  // namespace mt::plan

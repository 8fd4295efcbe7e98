// launch/planner_cli.cc: `moetrain plan` argument handling (RunPlanCommand): reads the model
// (our YAML or a Hugging Face config.json), the cluster and the flags, then prints one plan,
// a stage table, a layout search or a calibration.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kernels/status.h"
#include "launch/planner.h"

namespace mt {
namespace {

constexpr const char* kUsage =
    R"(usage: moetrain plan --model FILE --cluster FILE (--tokens N | --stages FILE) [options]
  --model FILE          our YAML run config (model + training + parallel) or a HF config.json
  --cluster FILE        configs/clusters/*.yaml
  --tokens N            token budget, e.g. 14.8T
  --stages FILE         several stages (pre-training, context extension, post-training)
  --pp P --ep E --dp D  layout (default: the YAML's; dp = GPUs / pp)
  --schedule S          1f1b | zb1p | dualpipe
  --micro-batch M       sequences per micro-batch
  --global-batch G      sequences per optimizer step
  --seq-len S           tokens per sequence
  --precision P         bf16 | fp8
  --recompute R         none | selective | full
  --gpus N              override the cluster's size
  --efficiency X        achieved fraction of dense peak (default: fitted to DeepSeek-V3's step)
  --calibrate-from F    fit the efficiency to a measured run's metrics JSON lines
  --mfu X               take this MFU (Megatron convention, with MTP) instead of simulating
  --price X             dollars per GPU-hour (default: the cluster's)
  --search              rank the layouts that fit, fastest first
  --json                print one JSON object
)";

struct Options {
  std::map<std::string, std::string> values;  // flag -> value
  bool search = false;
  bool json = false;
};

absl::StatusOr<Options> ParseArgs(int argc, char** argv) {
  static const char* kValued[] = {
      "--model",     "--cluster",  "--tokens",      "--stages",         "--pp",      "--ep",
      "--dp",        "--schedule", "--micro-batch", "--global-batch",   "--seq-len", "--precision",
      "--recompute", "--gpus",     "--efficiency",  "--calibrate-from", "--mfu",     "--price"};
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], value;
    const size_t eq = arg.find('=');
    if (eq != std::string::npos) value = arg.substr(eq + 1), arg = arg.substr(0, eq);
    if (arg == "--search" || arg == "--json") {
      (arg == "--search" ? o.search : o.json) = true;
      continue;
    }
    bool known = false;
    for (const char* k : kValued) known = known || arg == k;
    if (!known) return absl::InvalidArgumentError(absl::StrCat("unknown argument ", arg));
    if (eq == std::string::npos) {
      if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat(arg, " needs a value"));
      value = argv[++i];
    }
    o.values[arg] = value;
  }
  return o;
}

absl::StatusOr<int64_t> IntFlag(const Options& o, const std::string& flag, int64_t fallback) {
  auto it = o.values.find(flag);
  if (it == o.values.end()) return fallback;
  int64_t v = 0;
  if (!absl::SimpleAtoi(it->second, &v) || v < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " ", it->second, ": expected a positive integer"));
  }
  return v;
}

absl::StatusOr<std::optional<double>> DoubleFlag(const Options& o, const std::string& flag) {
  auto it = o.values.find(flag);
  if (it == o.values.end()) return std::optional<double>();
  double v = 0;
  if (!absl::SimpleAtod(it->second, &v) || !(v >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " ", it->second, ": expected a number >= 0"));
  }
  return std::optional<double>(v);
}

// The model and, from our YAML, the run's layout defaults.
absl::Status LoadModel(const std::string& path, plan::PlanRequest* r, bool* has_layout) {
  if (absl::EndsWith(path, ".json")) {
    std::ifstream in(path);
    if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open the model config"));
    nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
    ASSIGN_OR_RETURN(r->model, ModelConfigFromHfJson(j, path));
    *has_layout = false;
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(Config config, LoadConfig(path));
  r->model = config.model;
  plan::Layout& l = r->layout;
  l.pp = config.parallel.pp;
  l.ep = config.parallel.ep;
  l.dp = config.parallel.dp;
  ASSIGN_OR_RETURN(l.schedule, ParseScheduleKind(config.parallel.schedule));
  l.seq_len = config.training.seq_len;
  l.micro_batch = config.training.micro_batch_size;
  l.global_batch = config.training.global_batch_size;
  l.precision = config.training.precision;
  l.recompute = config.training.recompute;
  l.moment_dtype = config.optimizer.moment_dtype;
  r->ramp = config.training.batch_ramp;
  *has_layout = true;
  return absl::OkStatus();
}

absl::Status Run(const Options& o) {
  for (const char* required : {"--model", "--cluster"}) {
    if (!o.values.count(required))
      return absl::InvalidArgumentError(absl::StrCat(required, " is required"));
  }
  if (!o.values.count("--tokens") && !o.values.count("--stages")) {
    return absl::InvalidArgumentError("--tokens N or --stages FILE is required");
  }
  plan::PlanRequest r;
  bool has_layout = false;
  RETURN_IF_ERROR(LoadModel(o.values.at("--model"), &r, &has_layout));
  ASSIGN_OR_RETURN(r.cluster, plan::LoadClusterSpec(o.values.at("--cluster")));
  ASSIGN_OR_RETURN(r.cluster.num_gpus, IntFlag(o, "--gpus", r.cluster.num_gpus));
  ASSIGN_OR_RETURN(std::optional<double> price, DoubleFlag(o, "--price"));
  if (price) r.cluster.price_per_gpu_hour = *price;

  plan::Layout& l = r.layout;
  if (!has_layout) l.seq_len = 4096, l.micro_batch = 1, l.precision = "bf16";
  const bool dp_given = o.values.count("--dp") > 0;
  ASSIGN_OR_RETURN(l.pp, IntFlag(o, "--pp", l.pp));
  ASSIGN_OR_RETURN(l.ep, IntFlag(o, "--ep", l.ep));
  if (!has_layout || (o.values.count("--pp") && !dp_given)) l.dp = r.cluster.num_gpus / l.pp;
  ASSIGN_OR_RETURN(l.dp, IntFlag(o, "--dp", l.dp));
  if (o.values.count("--schedule")) {
    ASSIGN_OR_RETURN(l.schedule, ParseScheduleKind(o.values.at("--schedule")));
  }
  ASSIGN_OR_RETURN(l.micro_batch, IntFlag(o, "--micro-batch", l.micro_batch));
  // A HF config has no batch: default to 4 pp micro-batches per pipeline (enough for DualPipe).
  if (!has_layout) l.global_batch = l.micro_batch * l.dp * 4 * l.pp;
  ASSIGN_OR_RETURN(l.global_batch, IntFlag(o, "--global-batch", l.global_batch));
  ASSIGN_OR_RETURN(l.seq_len, IntFlag(o, "--seq-len", l.seq_len));
  if (o.values.count("--precision")) l.precision = o.values.at("--precision");
  if (o.values.count("--recompute")) l.recompute = o.values.at("--recompute");
  if (l.precision == "fp32") {
    return absl::InvalidArgumentError(
        "the run's precision is fp32 (the CPU reference); plan a GPU run with --precision bf16 or "
        "fp8");
  }
  if (l.NumGpus() > r.cluster.num_gpus) {
    return absl::InvalidArgumentError(absl::StrCat("the layout needs pp x dp = ", l.NumGpus(),
                                                   " GPUs; ", r.cluster.name, " has ",
                                                   r.cluster.num_gpus));
  }
  if (o.values.count("--tokens")) {
    ASSIGN_OR_RETURN(r.tokens, ParseTokenCount(o.values.at("--tokens")));
  }
  ASSIGN_OR_RETURN(std::optional<double> efficiency, DoubleFlag(o, "--efficiency"));
  if (efficiency) r.efficiency = *efficiency;
  ASSIGN_OR_RETURN(r.fixed_mfu, DoubleFlag(o, "--mfu"));

  nlohmann::json out;
  if (o.values.count("--calibrate-from")) {
    const std::string& metrics = o.values.at("--calibrate-from");
    ASSIGN_OR_RETURN(double measured, plan::ReadMeasuredThroughput(metrics, l.NumGpus()));
    ASSIGN_OR_RETURN(r.efficiency, plan::CalibrateEfficiency(r, measured));
    out["calibrated_from"] = metrics;
    out["measured_tokens_per_s_per_gpu"] = measured;
    if (!o.json) {
      std::printf("calibrated from %s: %.1f tokens/s/GPU measured -> efficiency %.4f\n\n",
                  metrics.c_str(), measured, r.efficiency);
    }
  }
  if (o.search) {
    ASSIGN_OR_RETURN(std::vector<plan::SearchRow> rows, plan::SearchLayouts(r, 15));
    if (!o.json) {
      std::printf("moetrain plan --search on %s (%ld x %s), global batch %ld x %ld tokens, %s\n%s",
                  r.cluster.name.c_str(), static_cast<long>(r.cluster.num_gpus),
                  r.cluster.gpu.c_str(), static_cast<long>(l.global_batch),
                  static_cast<long>(l.seq_len), l.precision.c_str(),
                  plan::FormatSearch(rows).c_str());
      return absl::OkStatus();
    }
    for (const plan::SearchRow& row : rows) {
      out["layouts"].push_back({{"pp", row.layout.pp},
                                {"ep", row.layout.ep},
                                {"dp", row.layout.dp},
                                {"schedule", ScheduleKindName(row.layout.schedule)},
                                {"micro_batch", row.layout.micro_batch},
                                {"recompute", row.layout.recompute},
                                {"memory_per_gpu_bytes", row.memory_bytes},
                                {"step_time_s", row.step_s},
                                {"tokens_per_s_per_gpu", row.tokens_per_s_per_gpu},
                                {"mfu", row.mfu},
                                {"bubble_fraction", row.bubble_fraction},
                                {"gpu_hours", row.gpu_hours},
                                {"cost_usd", row.cost_usd}});
    }
    std::printf("%s\n", out.dump(2).c_str());
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(plan::PlanResult result, plan::MakePlan(r));
  std::vector<plan::StagePlan> stages;
  if (o.values.count("--stages")) {
    ASSIGN_OR_RETURN(plan::StagesFile file, plan::LoadStages(o.values.at("--stages"), l));
    ASSIGN_OR_RETURN(stages, plan::PlanStages(r, file));
  }
  if (!o.json) {
    std::printf("%s%s", plan::FormatPlan(r, result).c_str(),
                stages.empty() ? "" : plan::FormatStages(stages).c_str());
    return absl::OkStatus();
  }
  out.update(plan::PlanToJson(r, result));
  if (!stages.empty()) {
    double hours = 0, cost = 0;
    for (const plan::StagePlan& s : stages) {
      out["stages"].push_back({{"name", s.name},
                               {"tokens", s.tokens},
                               {"gpu_hours", s.gpu_hours},
                               {"cost_usd", s.cost_usd},
                               {"given", s.given},
                               {"fits", s.fits}});
      hours += s.gpu_hours, cost += s.cost_usd;
    }
    out["stages_gpu_hours"] = hours;
    out["stages_cost_usd"] = cost;
  }
  std::printf("%s\n", out.dump(2).c_str());
  return absl::OkStatus();
}

}  // namespace

int RunPlanCommand(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
      std::printf("%s", kUsage);
      return 0;
    }
  }
  absl::StatusOr<Options> options = ParseArgs(argc, argv);
  if (!options.ok()) {
    std::fprintf(stderr, "moetrain plan: %s\n%s", std::string(options.status().message()).c_str(),
                 kUsage);
    return 2;
  }
  absl::Status status = Run(*options);
  if (!status.ok()) {
    std::fprintf(stderr, "moetrain plan: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}

}  // namespace mt

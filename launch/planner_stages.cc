// launch/planner_stages.cc: a run in several stages (pre-training, context extension,
// post-training) read from YAML (format in planner.h) and costed stage by stage.
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/status.h"
#include "launch/planner.h"
#include "yaml-cpp/yaml.h"

namespace mt::plan {
namespace {

class StageReader {
 public:
  explicit StageReader(std::string source) : source_(std::move(source)) {}

  absl::Status Error(const YAML::Node& node, const std::string& key, const std::string& what,
                     const std::string& expected) const {
    const int line = node.Mark().line;
    return absl::InvalidArgumentError(
        absl::StrCat(line >= 0 ? absl::StrCat(source_, ":", line + 1) : source_, ": ", key, ": ",
                     what, "; expected ", expected));
  }
  absl::StatusOr<int64_t> Int(const YAML::Node& n, const std::string& key) const {
    int64_t v = 0;
    if (!n.IsScalar() || !YAML::convert<int64_t>::decode(n, v) || v < 1) {
      return Error(n, key, absl::StrCat("got ", Describe(n)), "a positive integer");
    }
    return v;
  }
  // Token counts and GPU-hours: a number with an optional K/M/B/T suffix.
  absl::StatusOr<double> Count(const YAML::Node& n, const std::string& key) const {
    absl::StatusOr<double> v =
        n.IsScalar() ? ParseTokenCount(n.Scalar()) : absl::InvalidArgumentError("not a scalar");
    if (!v.ok() || !(*v > 0)) {
      return Error(n, key, absl::StrCat("got ", Describe(n)),
                   "a positive number with an optional K/M/B/T suffix (e.g. 14.8T, 5K)");
    }
    return *v;
  }
  absl::StatusOr<std::string> Text(const YAML::Node& n, const std::string& key) const {
    if (!n.IsScalar()) return Error(n, key, absl::StrCat("got ", Describe(n)), "a string");
    return n.Scalar();
  }

 private:
  static std::string Describe(const YAML::Node& n) {
    return n.IsScalar() ? n.Scalar() : n.IsSequence() ? "a list" : n.IsMap() ? "a map" : "nothing";
  }
  std::string source_;
};

absl::StatusOr<CostStage> ReadStage(const StageReader& in, const YAML::Node& node, size_t index,
                                    const Layout& base) {
  const std::string at = absl::StrCat("stages[", index, "]");
  if (!node.IsMap()) return in.Error(node, at, "not a map", "{name: ..., tokens: ...}");
  static const std::vector<std::string> kKeys = {
      "name", "tokens", "steps", "gpu_hours", "seq_len",   "global_batch", "micro_batch",
      "pp",   "ep",     "dp",    "schedule",  "precision", "recompute"};
  CostStage s;
  s.layout = base;
  std::optional<int64_t> steps;
  bool pp_set = false, dp_set = false, batch_set = false;
  for (const auto& kv : node) {
    const std::string key = kv.first.Scalar(), path = absl::StrCat(at, ".", key);
    const YAML::Node& v = kv.second;
    if (key == "name") {
      ASSIGN_OR_RETURN(s.name, in.Text(v, path));
    } else if (key == "tokens") {
      ASSIGN_OR_RETURN(s.tokens, in.Count(v, path));
    } else if (key == "steps") {
      ASSIGN_OR_RETURN(steps, in.Int(v, path));
    } else if (key == "gpu_hours") {
      ASSIGN_OR_RETURN(s.given_gpu_hours, in.Count(v, path));
    } else if (key == "seq_len") {
      ASSIGN_OR_RETURN(s.layout.seq_len, in.Int(v, path));
    } else if (key == "global_batch") {
      ASSIGN_OR_RETURN(s.layout.global_batch, in.Int(v, path));
      batch_set = true;
    } else if (key == "micro_batch") {
      ASSIGN_OR_RETURN(s.layout.micro_batch, in.Int(v, path));
    } else if (key == "pp") {
      ASSIGN_OR_RETURN(s.layout.pp, in.Int(v, path));
      pp_set = true;
    } else if (key == "ep") {
      ASSIGN_OR_RETURN(s.layout.ep, in.Int(v, path));
    } else if (key == "dp") {
      ASSIGN_OR_RETURN(s.layout.dp, in.Int(v, path));
      dp_set = true;
    } else if (key == "schedule") {
      ASSIGN_OR_RETURN(std::string name, in.Text(v, path));
      absl::StatusOr<ScheduleKind> kind = ParseScheduleKind(name);
      if (!kind.ok())
        return in.Error(v, path, absl::StrCat("got ", name), "1f1b, zb1p or dualpipe");
      s.layout.schedule = *kind;
    } else if (key == "precision") {
      ASSIGN_OR_RETURN(s.layout.precision, in.Text(v, path));
    } else if (key == "recompute") {
      ASSIGN_OR_RETURN(s.layout.recompute, in.Text(v, path));
    } else {
      return in.Error(kv.first, path, "unknown key",
                      absl::StrCat("one of ", absl::StrJoin(kKeys, ", ")));
    }
  }
  if (s.name.empty()) return in.Error(node, at, "no name", "name: <what the stage is>");
  // A new pp keeps the GPU count unless dp is given too.
  if (pp_set && !dp_set && base.NumGpus() % s.layout.pp == 0)
    s.layout.dp = base.NumGpus() / s.layout.pp;
  const int sources = (s.tokens > 0) + steps.has_value() + s.given_gpu_hours.has_value();
  if (sources != 1) {
    return in.Error(node, at, "needs exactly one of tokens, steps and gpu_hours",
                    "tokens: 14.8T, or steps: 1000 (x global_batch x seq_len), or gpu_hours: 5K");
  }
  if (steps) s.tokens = static_cast<double>(*steps) * s.layout.global_batch * s.layout.seq_len;
  s.use_ramp = !steps && !batch_set;
  return s;
}

}  // namespace

absl::StatusOr<StagesFile> LoadStages(const std::string& path, const Layout& base) {
  std::ifstream file(path);
  if (!file) return absl::NotFoundError(absl::StrCat(path, ": cannot open the stages file"));
  std::stringstream text;
  text << file.rdbuf();
  YAML::Node root;
  try {
    root = YAML::Load(text.str());
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ":", e.mark.line + 1, ": not valid YAML: ", e.msg));
  }
  StageReader in(path);
  if (!root.IsMap() || !root["stages"] || !root["stages"].IsSequence()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": expected a map with a list under stages"));
  }
  StagesFile out;
  for (const auto& kv : root) {
    const std::string key = kv.first.Scalar();
    if (key == "price_per_gpu_hour") {
      double v = 0;
      if (!kv.second.IsScalar() || !YAML::convert<double>::decode(kv.second, v) || v < 0) {
        return in.Error(kv.second, key, "not a number >= 0", "US dollars per GPU-hour");
      }
      out.price_per_gpu_hour = v;
    } else if (key != "stages") {
      return in.Error(kv.first, key, "unknown key", "stages or price_per_gpu_hour");
    }
  }
  const YAML::Node list = root["stages"];
  for (size_t i = 0; i < list.size(); ++i) {
    ASSIGN_OR_RETURN(CostStage s, ReadStage(in, list[i], i, base));
    out.stages.push_back(std::move(s));
  }
  if (out.stages.empty())
    return absl::InvalidArgumentError(absl::StrCat(path, ": stages is empty"));
  return out;
}

absl::StatusOr<std::vector<StagePlan>> PlanStages(const PlanRequest& base, const StagesFile& file) {
  const double price = file.price_per_gpu_hour.value_or(base.cluster.price_per_gpu_hour);
  std::vector<StagePlan> out;
  for (const CostStage& s : file.stages) {
    StagePlan p;
    p.name = s.name;
    p.tokens = s.tokens;
    p.layout = s.layout;
    if (s.given_gpu_hours) {
      p.given = true;
      p.gpu_hours = *s.given_gpu_hours;
    } else {
      PlanRequest r = base;
      r.layout = s.layout;
      absl::Status valid = ValidateLayout(r.model, r.layout);
      if (!valid.ok()) return Annotate(valid, absl::StrCat("stage \"", s.name, "\""));
      ASSIGN_OR_RETURN(p.gpu_hours, GpuHoursFor(r, s.tokens, s.use_ramp));
      ASSIGN_OR_RETURN(StepEstimate e, EstimateStep(r.model, r.cluster, r.layout, r.efficiency));
      p.fits = EstimateMemory(r.model, r.cluster, e).Fits();
      p.tokens_per_s_per_gpu = s.tokens / p.gpu_hours / 3600;
    }
    p.cost_usd = p.gpu_hours * price;
    out.push_back(p);
  }
  return out;
}

}  // namespace mt::plan

#include "trainer/report_data.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"

namespace mt::report {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

// Checks what the report draws from a line, so that a wrong file fails with the reason.
MetricsRow ParseRow(const Json& j) {
  MetricsRow r;
  r.step = j.at("step").get<int64_t>();
  r.tokens = j.at("tokens").get<double>();
  r.loss = j.at("loss").get<double>();
  r.mtp_loss = j.at("mtp_loss").get<std::vector<double>>();
  r.balance_loss = j.at("balance_loss").get<double>();
  r.lr = j.at("lr").get<double>();
  r.grad_norm = j.at("grad_norm").get<double>();
  r.tokens_per_s = j.at("tokens_per_s").get<double>();
  r.mfu = j.at("mfu").get<double>();
  r.load_max_over_mean = j.value("expert_load_max_over_mean", 0.0);
  r.skipped_steps = j.value("skipped_steps", int64_t{0});
  r.time = j.value("time", -1.0);
  return r;
}

ExpertLoadRecord ParseExpertLoad(const Json& j) {
  ExpertLoadRecord r;
  r.step = j.at("step").get<int64_t>();
  r.tokens = j.at("tokens").get<double>();
  r.loads = j.at("loads").get<std::vector<std::vector<int64_t>>>();
  r.biases = j.at("biases").get<std::vector<std::vector<double>>>();
  if (r.loads.size() != r.biases.size())
    throw std::runtime_error(
        absl::StrCat("loads has ", r.loads.size(), " layers but biases ", r.biases.size()));
  // An empty bias list is a layer that lives on another pipeline stage than rank 0's.
  for (size_t i = 0; i < r.loads.size(); ++i)
    if (r.loads[i].size() != r.loads[0].size() ||
        (!r.biases[i].empty() && r.biases[i].size() != r.loads[i].size()))
      throw std::runtime_error(absl::StrCat("layer ", i, " has ", r.loads[i].size(), " loads and ",
                                            r.biases[i].size(), " biases, layer 0 has ",
                                            r.loads[0].size(), " loads"));
  return r;
}

// Keeps the last entry per step, in step order.
template <class T>
std::vector<T> LastPerStep(const std::vector<T>& in) {
  std::map<int64_t, T> by_step;
  for (const T& x : in) by_step[x.step] = x;
  std::vector<T> out;
  for (auto& [step, x] : by_step) out.push_back(std::move(x));
  return out;
}

void ListCheckpoints(RunData* run) {
  const RunStart* start = run->last_start();
  if (!start || !start->config.contains("checkpoint")) return;
  const std::string dir = start->config["checkpoint"].value("dir", "");
  if (dir.empty()) return;
  fs::path p(dir);
  if (p.is_relative() && !start->cwd.empty()) p = fs::path(start->cwd) / p;
  run->checkpoint_dir = p.string();
  std::error_code ec;
  if (!fs::is_directory(p, ec)) return;
  for (const auto& e : fs::directory_iterator(p, ec)) {
    const std::string name = e.path().filename().string();
    if (!e.is_directory() || name.rfind("step-", 0) != 0) continue;
    CheckpointEntry c;
    c.name = name;
    c.committed = fs::exists(e.path() / "manifest.json", ec);
    for (const auto& f : fs::recursive_directory_iterator(e.path(), ec))
      if (f.is_regular_file(ec)) c.bytes += f.file_size(ec);
    run->checkpoints.push_back(c);
  }
  std::sort(run->checkpoints.begin(), run->checkpoints.end(),
            [](const CheckpointEntry& a, const CheckpointEntry& b) { return a.name < b.name; });
}

}  // namespace

double RunData::TokensAt(int64_t step) const {
  if (rows.empty()) return 0;
  auto it = std::lower_bound(rows.begin(), rows.end(), step,
                             [](const MetricsRow& r, int64_t s) { return r.step < s; });
  if (it != rows.end() && it->step == step) return it->tokens;
  if (it == rows.begin() || it == rows.end()) {  // outside: scale by tokens per step
    const MetricsRow& r = it == rows.end() ? rows.back() : rows.front();
    return r.step > 0 ? r.tokens * static_cast<double>(step) / r.step : 0;
  }
  const MetricsRow& a = *(it - 1);
  const double t = static_cast<double>(step - a.step) / static_cast<double>(it->step - a.step);
  return a.tokens + t * (it->tokens - a.tokens);
}

absl::StatusOr<RunData> ReadRun(const std::string& path) {
  RunData run;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    run.run_dir = path;
    run.metrics_file = (fs::path(path) / "metrics.jsonl").string();
  } else {
    run.metrics_file = path;
    run.run_dir = fs::path(path).parent_path().string();
  }
  std::ifstream in(run.metrics_file);
  if (!in)
    return absl::NotFoundError(absl::StrCat(
        "cannot open ", run.metrics_file,
        fs::is_directory(path, ec) ? " (a run directory holds the logging.metrics_file of its "
                                     "run, named metrics.jsonl; or pass that file itself)"
                                   : ""));
  std::vector<MetricsRow> rows;
  std::vector<ValidationPoint> validation;
  std::vector<ExpertLoadRecord> loads;
  double segment_end = -1;
  int64_t line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (line.empty()) continue;
    try {
      const Json j = Json::parse(line);
      if (!j.is_object()) throw std::runtime_error("not a JSON object");
      const std::string event = j.value("event", "");
      if (event.empty()) {
        rows.push_back(ParseRow(j));
        if (rows.back().time >= 0) segment_end = rows.back().time;
      } else if (event == "run_start") {
        if (!run.starts.empty() && segment_end >= 0)
          run.wall_time_s += segment_end - run.starts.back().time;
        // What a process logged after the step the next one starts from is superseded
        // (it died before checkpointing it); a fresh run (0) replaces the file's past.
        const int64_t first = j.value("first_step", int64_t{-1});
        if (first >= 0) {
          auto after = [first](const auto& x) { return x.step > first; };
          std::erase_if(rows, after);
          std::erase_if(validation, after);
          std::erase_if(loads, after);
          if (first == 0) run.starts.clear();
        }
        RunStart s;
        s.time = j.at("time").get<double>();
        s.cwd = j.value("cwd", "");
        s.config = j.at("config");
        s.moe_layers = j.at("moe_layers").get<std::vector<int64_t>>();
        if (run.starts.empty()) run.wall_time_s = 0;  // the first, or a fresh run
        segment_end = -1;
        run.starts.push_back(std::move(s));
      } else if (event == "validation") {
        validation.push_back({j.at("step").get<int64_t>(), j.at("val_loss").get<double>()});
      } else if (event == "expert_load") {
        loads.push_back(ParseExpertLoad(j));
      }  // other events (skipped_step: counted in the metrics lines) are not drawn
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(
          absl::StrCat(run.metrics_file, " line ", line_no, ": ", e.what()));
    }
  }
  if (!run.starts.empty() && segment_end >= 0)
    run.wall_time_s += segment_end - run.starts.back().time;
  if (run.starts.empty()) run.wall_time_s = -1;
  run.rows = LastPerStep(rows);
  run.validation = LastPerStep(validation);
  run.expert_loads = LastPerStep(loads);
  // The heatmaps need one shape throughout and a layer name for each row.
  for (const ExpertLoadRecord& r : run.expert_loads) {
    const ExpertLoadRecord& first = run.expert_loads.front();
    if (r.loads.size() != first.loads.size() ||
        (!r.loads.empty() && r.loads[0].size() != first.loads[0].size()))
      return absl::InvalidArgumentError(absl::StrCat(
          run.metrics_file, ": the expert_load record of step ", r.step, " has ", r.loads.size(),
          " layers x ", r.loads.empty() ? 0 : r.loads[0].size(), " experts, the one of step ",
          first.step, " has ", first.loads.size(), " x ",
          first.loads.empty() ? 0 : first.loads[0].size(), " (two runs in one file?)"));
  }
  if (const RunStart* s = run.last_start();
      s && !run.expert_loads.empty() && s->moe_layers.size() != run.expert_loads[0].loads.size())
    return absl::InvalidArgumentError(absl::StrCat(
        run.metrics_file, ": run_start names ", s->moe_layers.size(),
        " MoE layers but the expert_load records have ", run.expert_loads[0].loads.size()));
  ListCheckpoints(&run);
  return run;
}

}  // namespace mt::report

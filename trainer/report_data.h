// trainer/report_data.h: what `moetrain report` knows about a run, read back from its
// metrics file (format in metrics.h) and its checkpoint directory.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace mt::report {

struct MetricsRow {  // one logging interval
  int64_t step = 0;
  double tokens = 0, loss = 0, balance_loss = 0, lr = 0, grad_norm = 0, tokens_per_s = 0, mfu = 0,
         load_max_over_mean = 0;
  std::vector<double> mtp_loss;  // [MTP module]
  int64_t skipped_steps = 0;
  double time = -1;  // Unix seconds; -1 in files written before it was logged
};

struct ValidationPoint {
  int64_t step = 0;
  double loss = 0;
};

struct ExpertLoadRecord {
  int64_t step = 0;
  double tokens = 0;
  std::vector<std::vector<int64_t>> loads;  // [MoE layer][expert]
  std::vector<std::vector<double>> biases;  // [MoE layer][expert]; [] if on another stage
};

struct RunStart {  // one process of the run (a resumed run has several)
  double time = 0;
  std::string cwd;
  nlohmann::json config;
  std::vector<int64_t> moe_layers;  // model layer index of each MoE layer
};

struct CheckpointEntry {
  std::string name;        // step-0000400
  bool committed = false;  // has its manifest.json
  uint64_t bytes = 0;
};

struct RunData {
  std::string run_dir, metrics_file;
  std::vector<RunStart> starts;  // since the last fresh start
  // Sorted by step. At each run_start, what was logged after its first_step is dropped:
  // a process that resumes from a checkpoint logs those steps again, and a fresh run
  // (first_step 0) appending to an old run's file starts the report over.
  std::vector<MetricsRow> rows;
  std::vector<ValidationPoint> validation;
  std::vector<ExpertLoadRecord> expert_loads;
  double wall_time_s = -1;     // summed over the processes; -1 if unknown
  std::string checkpoint_dir;  // as resolved; empty if the config has none
  std::vector<CheckpointEntry> checkpoints;

  const RunStart* last_start() const { return starts.empty() ? nullptr : &starts.back(); }
  // Tokens consumed at `step`, interpolated between logged steps.
  double TokensAt(int64_t step) const;
};

// `path` is a run directory holding metrics.jsonl, or a metrics file itself. Every
// malformed line is an error naming the file and line.
absl::StatusOr<RunData> ReadRun(const std::string& path);

}  // namespace mt::report

// trainer/metrics.h: what rank 0 reports each logging interval, on the terminal, as JSON
// lines (logging.metrics_file) and as TensorBoard scalars (logging.tensorboard_dir).
//
// The metrics file is what `moetrain report` reads (trainer/report_data.h). Its lines:
//   {"event": "run_start", "time", "cwd", "config", "moe_layers", "first_step"}
//       each time a process starts (first_step 0: a fresh run, else resumed after that step)
//   {"step", "tokens", "loss", "mtp_loss", ..., "time"}  each logging interval
//   {"event": "validation", "step", "val_loss"}
//   {"event": "skipped_step", "step"}
//   {"event": "expert_load", "step", "tokens", "loads", "biases"}
//       every logging.expert_load_interval steps: loads[i][e] = tokens routed to expert e of MoE
//       layer moe_layers[i] in that step's global batch; biases[i][e] its
//       e_score_correction_bias after that step's update ([] for a layer that lives on
//       another pipeline stage than rank 0's: its biases are not on the logging rank).
// "time" is Unix seconds. A resumed run appends to the same file, and so does a fresh run
// with the same metrics_file: readers keep, at each run_start, only what came before it up
// to its first_step.
#pragma once

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/status.h"
#include "nlohmann/json.hpp"
#include "trainer/config.h"
#include "trainer/tensorboard.h"

namespace mt {

struct StepMetrics {
  int64_t step = 0;
  int64_t total_steps = 0;
  double tokens = 0;             // consumed so far
  double loss = 0;               // main cross-entropy, mean over the interval
  std::vector<double> mtp_loss;  // per MTP module
  double balance_loss = 0;
  double lr = 0;
  double grad_norm = 0;
  double tokens_per_s = 0;
  double mfu = 0;  // fraction of the stated peak
  double expert_load_max_over_mean = 0;
  double eta_s = 0;
  int64_t skipped_steps = 0;
};

class MetricsLogger {
 public:
  // Empty paths disable that sink. `peak_name` says what the MFU denominator is.
  static absl::StatusOr<std::unique_ptr<MetricsLogger>> Create(const std::string& metrics_file,
                                                               const std::string& tensorboard_dir,
                                                               bool print);
  // Records the run's configuration (a "run_start" event) and learns which model layers
  // the MoE layers are and how often to record their loads. Call once, before training;
  // first_step is the step the run resumes after (0 for a fresh run).
  absl::Status LogRunStart(const Config& config, int64_t first_step);
  // Called after each applied (not skipped) step's bias update with that step's expert
  // loads [MoE layer][expert] (summed over the global batch) and the updated biases
  // [MoE layer][expert] (empty for a layer held by another pipeline stage). Accumulates
  // each layer's max/mean load for the next Log() and
  // writes an "expert_load" event every logging.expert_load_interval steps.
  absl::Status ObserveExperts(int64_t step, double tokens,
                              const std::vector<std::vector<int64_t>>& loads,
                              const std::vector<std::vector<float>>& biases);
  // One logging interval: the progress line, a metrics line, and TensorBoard scalars,
  // among them per MoE layer the mean over the interval's observed steps of max/mean load
  // and the spread (max - min) of the latest biases.
  absl::Status Log(const StepMetrics& m);
  // Other events (validation, skipped steps) go to the JSON lines file as well.
  absl::Status LogEvent(const nlohmann::json& event);

 private:
  std::ofstream jsonl_;
  std::string jsonl_path_;
  std::unique_ptr<TensorBoardWriter> tb_;
  bool print_ = true;
  std::vector<int64_t> moe_layer_ids_;  // model layer index of each MoE layer
  int64_t expert_load_interval_ = 0;
  std::vector<double> load_ratio_sum_;      // [MoE layer] sum of max/mean over steps
  int64_t load_steps_ = 0;                  // steps in load_ratio_sum_
  std::vector<std::vector<float>> biases_;  // [MoE layer][expert], the latest
};

// Model layer indices of the MoE layers, in Model::moe_layers() order: main layers first,
// then the MTP modules' (layer num_hidden_layers + k).
std::vector<int64_t> MoeLayerIds(const ModelConfig& m);

// max / mean of one layer's expert loads (0 when no token was routed).
double LoadMaxOverMean(const std::vector<int64_t>& load);

std::string FormatDuration(double seconds);  // "1h02m", "3m05s", "12s"

}  // namespace mt

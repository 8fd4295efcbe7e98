// trainer/metrics.h: what rank 0 reports each logging interval, on the terminal, as JSON
// lines (logging.metrics_file) and as TensorBoard scalars (logging.tensorboard_dir).
#pragma once

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "kernels/status.h"
#include "trainer/tensorboard.h"

namespace mt {

struct StepMetrics {
  int64_t step = 0;
  int64_t total_steps = 0;
  double tokens = 0;              // consumed so far
  double loss = 0;                // main cross-entropy, mean over the interval
  std::vector<double> mtp_loss;   // per MTP module
  double balance_loss = 0;
  double lr = 0;
  double grad_norm = 0;
  double tokens_per_s = 0;
  double mfu = 0;                 // fraction of the stated peak
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
  absl::Status Log(const StepMetrics& m);
  // Other events (validation, skipped steps) go to the JSON lines file as well.
  absl::Status LogEvent(const nlohmann::json& event);

 private:
  std::ofstream jsonl_;
  std::string jsonl_path_;
  std::unique_ptr<TensorBoardWriter> tb_;
  bool print_ = true;
};

std::string FormatDuration(double seconds);  // "1h02m", "3m05s", "12s"

}  // namespace mt

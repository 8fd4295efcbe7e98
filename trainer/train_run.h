// trainer/train_run.h: the state of one training run (data, model, optimizer, counters,
// metrics) and its checkpoint form. Internal to trainer.cc, whose loop is its only user.
//
// A run resumed from a checkpoint continues bit for bit where the uninterrupted run would
// be, so Save() records everything the loop's future depends on: parameters (plus their
// fp32 masters when the model is saved in bf16), router biases, AdamW moments and step,
// the data cursor, the skip counters, the metrics history and the partial sums of the
// current logging interval. Consumed tokens (and so every schedule) follow from the cursor.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "data/sampler.h"
#include "data/tokenizer.h"
#include "nlohmann/json.hpp"
#include "trainer/config.h"
#include "trainer/metrics.h"
#include "trainer/parallel_model.h"
#include "trainer/zero_optimizer.h"

namespace mt::train_internal {

using Clock = std::chrono::steady_clock;

// Partial sums of the current logging interval. They are checkpointed, so that a run
// resumed between two progress lines logs what the uninterrupted run logs.
struct Interval {
  double loss = 0, balance = 0, grad_norm = 0, load = 0;
  std::vector<double> mtp;  // [D]
  int64_t steps = 0;        // steps summed (skipped ones are not)
  int64_t tokens = 0;       // tokens processed since `start` (throughput only)
  Clock::time_point start = Clock::now();

  void Reset() {
    loss = balance = grad_norm = load = 0;
    std::fill(mtp.begin(), mtp.end(), 0.0);
    steps = tokens = 0;
    start = Clock::now();
  }
  nlohmann::json ToJson() const {
    return {{"loss", loss}, {"balance", balance}, {"grad_norm", grad_norm},
            {"load", load}, {"mtp", mtp},         {"steps", steps}};
  }
  void FromJson(const nlohmann::json& j) {
    loss = j.at("loss").get<double>();
    balance = j.at("balance").get<double>();
    grad_norm = j.at("grad_norm").get<double>();
    load = j.at("load").get<double>();
    mtp = j.at("mtp").get<std::vector<double>>();
    steps = j.at("steps").get<int64_t>();
  }
};

// Everything one run holds.
struct Run {
  explicit Run(const Config& c) : cfg(c) {}
  const Config& cfg;
  std::unique_ptr<data::TrainSampleSource> train;
  std::unique_ptr<data::ValidationSource> val;
  std::unique_ptr<data::Tokenizer> tokenizer;
  std::string tokenizer_path;  // what `tokenizer` was loaded from (copied into checkpoints)
  std::unique_ptr<ParallelModel> model;  // this rank's part of the model
  std::unique_ptr<ZeroAdamW> opt;
  std::unique_ptr<MetricsLogger> log;     // a silent one on ranks other than 0
  bool rank0 = true;                      // world rank 0: prints, logs and commits checkpoints
  int64_t step = 0;    // optimizer steps done (skipped ones included)
  int64_t cursor = 0;  // global samples consumed
  int64_t consecutive_skips = 0;
  int64_t skipped_total = 0;
  nlohmann::json history = nlohmann::json::array();  // {step, loss} of every progress line so far
  Interval interval;
  ObjectiveWeights Weights(double tokens) const {
    return {cfg.training.mtp_lambda.Value(tokens), cfg.training.balance_loss_alpha};
  }
  double Tokens() const { return static_cast<double>(cursor) * cfg.training.seq_len; }
};

// Opens the training and validation data and the tokenizer of `r.cfg`.
absl::Status OpenData(Run& r);
// Applies training.init_from, then checkpoint.resume (none, auto, or a step directory).
absl::Status Restore(Run& r);
// Writes the checkpoint of the run's current step under checkpoint.dir. Collective over
// the world: every rank writes the tensors it owns (its pipeline stages' part, from the
// first data-parallel replica; optimizer moments gathered from their shards) as its own
// files, and rank 0 commits the step directory (docs/parallel.md), which any layout
// resumes from (resharding by name).
absl::Status Save(Run& r);

double Seconds(Clock::time_point a, Clock::time_point b);

}  // namespace mt::train_internal

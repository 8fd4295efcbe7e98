// trainer/trainer.h: the training loop of `moetrain train`: data, model, optimizer,
// schedules, evaluation, checkpoints and progress, for one process.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "trainer/config.h"

namespace mt {

struct TrainOutcome {
  int64_t steps = 0;            // optimizer steps taken in this run (skipped ones included)
  int64_t skipped_steps = 0;
  double last_train_loss = 0;   // main loss of the last logging interval
  double val_loss = -1;         // main loss on the validation windows (-1: no val data)
  // Entropy of the unigram distribution of the same validation targets: the loss of the
  // best model that ignores context, the baseline a trained model must beat.
  double val_unigram_entropy = -1;
  std::string sample;           // generated text (empty without a tokenizer)
};

absl::StatusOr<TrainOutcome> RunTraining(const Config& config);

// Global batch (sequences) at `tokens` consumed: the ramp when configured, rounded down
// to a multiple of micro_batch_size * dp.
int64_t GlobalBatchAt(const Config& config, double tokens);

}  // namespace mt

// trainer/trainer.h: the training loop of `moetrain train`: data, model, optimizer,
// schedules, evaluation, checkpoints and progress, for one process.
//
// A run resumed from a checkpoint continues bit for bit where the uninterrupted run would
// be: the checkpoint holds the parameters (and their fp32 masters when the model is saved
// in bf16), the AdamW moments and step, the router biases, the data cursor, the skip
// counters, the metrics history and the partial sums of the current logging interval.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/sampler.h"
#include "trainer/config.h"
#include "trainer/model.h"

namespace mt {

struct TrainOutcome {
  int64_t steps = 0;  // optimizer steps taken in this run (skipped ones included)
  int64_t skipped_steps = 0;
  double last_train_loss = 0;  // main loss of the last logging interval
  double val_loss = -1;        // main loss on the validation windows (-1: no val data)
  // Entropy of the unigram distribution of the same validation targets: the loss of the
  // best model that ignores context, the baseline a trained model must beat.
  double val_unigram_entropy = -1;
  std::string sample;  // generated text (empty without a tokenizer)
};

absl::StatusOr<TrainOutcome> RunTraining(const Config& config);

// Global batch (sequences) at `tokens` consumed: the ramp when configured, rounded down
// to a multiple of micro_batch_size * dp.
int64_t GlobalBatchAt(const Config& config, double tokens);

// What the forward and backward passes of one optimizer step produce.
struct GlobalBatchResult {
  Losses losses;                            // means over the micro-batches
  std::vector<std::vector<int64_t>> loads;  // [MoE layers][experts], summed over the batch
};

// The forward and backward passes of one optimizer step over global samples
// [cursor, cursor + global_batch), in micro-batches of `micro_batch` sequences: gradients of
// the mean loss accumulate into the model's (the caller zeroes them first), and the expert
// loads are summed over every micro-batch, since the bias update is defined on the loads of
// the whole global batch. global_batch must be a multiple of micro_batch.
GlobalBatchResult ForwardBackwardGlobalBatch(Model& model, const data::TrainSampleSource& samples,
                                             int64_t cursor, int64_t global_batch,
                                             int64_t micro_batch, const ObjectiveWeights& w);

// Whether training.fault_inject_nan_step/_count force a non-finite step at `step` (1-based).
bool FaultInjectedAt(const TrainingConfig& t, int64_t step);

}  // namespace mt

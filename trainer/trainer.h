// trainer/trainer.h: the training loop of `moetrain train`: data, model, optimizer,
// schedules, evaluation, checkpoints and progress, on one process or on every rank of an
// MPI job (parallel: {pp, ep, dp}; trainer/parallel_model.h).
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
#include "trainer/parallel_model.h"

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
  bool rank0 = true;   // world rank 0, the one that reports
};

// Starts MPI when an MPI launcher started the process, builds the layout's process groups
// and trains. On a multi-rank job a failure on any rank ends the whole job (MPI_Abort) with
// a message naming the rank.
absl::StatusOr<TrainOutcome> RunTraining(const Config& config);

// Global batch (sequences) at `tokens` consumed: the ramp when configured, rounded down
// to a multiple of micro_batch_size * dp.
int64_t GlobalBatchAt(const Config& config, double tokens);

// Whether training.fault_inject_nan_step/_count force a non-finite step at `step` (1-based).
bool FaultInjectedAt(const TrainingConfig& t, int64_t step);

}  // namespace mt

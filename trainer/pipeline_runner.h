// trainer/pipeline_runner.h: executes one rank's action list of a pipeline schedule
// (parallel/pipeline_schedule.h) over the model chunks this rank holds.
//
// Activations go forward and their gradients backward point to point over the PP group,
// tagged by (micro-batch, direction); receives block before the action that needs them,
// sends are non-blocking and complete before the step ends (the schedule's order is proven
// deadlock-free by ValidateSchedule). With one stage the schedule is F0 B0 F1 B1 ..., the
// single-process loop.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "parallel/communicator.h"
#include "parallel/pipeline_schedule.h"
#include "trainer/model_chunk.h"

namespace mt {

// The PP group's message tags, one scheme for both training paths (the device path's
// trainer/device_pipeline.cc too): a step's activations and gradients by (micro-batch,
// direction), then the stage copies' gradient sums and validation's forward chain.
inline int PipelineTag(int micro_batch, bool forward) {
  return micro_batch * 2 + (forward ? 0 : 1);
}
constexpr int kPipelineReplicaTag = 30000;
constexpr int kPipelineEvalTag = 30001;

struct PipelineRun {
  const PipelineSchedule* schedule = nullptr;
  int rank = 0;                          // in the PP group
  std::vector<ModelChunk*> chunks;       // [schedule->num_chunks]
  Communicator* pp = nullptr;            // the PP group
  std::function<MicroBatch(int)> batch;  // the tokens of micro-batch i
  ObjectiveWeights weights;
  double grad_scale = 1;  // gradients are of grad_scale x each micro-batch's loss
  int64_t hidden = 0;     // H: activations are [B*S, H]
};

// Runs the forward and backward passes of every micro-batch this rank's actions name.
// Adds loss_scale x each micro-batch's losses into *losses (main and MTP on the last stage,
// balance on every stage) and the expert loads into loads[MoE layer][E].
absl::Status RunPipeline(const PipelineRun& run, double loss_scale, Losses* losses,
                         std::vector<std::vector<int64_t>>* loads);

// sum += scale x l, loss by loss (how a step's micro-batch losses are averaged; the device
// step, trainer/device_train.cc, averages the same way).
void AddLosses(const Losses& l, double scale, Losses* sum);

}  // namespace mt

// trainer/device_pipeline.h: pipeline parallelism on the device path (training.device,
// trainer/device_train.h): one rank's action list of the CPU path's schedule
// (parallel/pipeline_schedule.h: any of one chunk per rank, 1F1B or ZB1P's split backward
// of DeviceModel::BackwardInput and BackwardWeight) over its DeviceModel stage, the stage
// copies' gradient sum, and validation's forward chain, as trainer/pipeline_runner.cc and
// parallel_model.cc do them on the module model.
//
// Activations go forward and their gradients backward over the PP group's communicator for
// the backend's buffers: NCCL on CUDA, straight from device memory; MPI on the CPU backend,
// whose device tensors are host tensors. Over NCCL the runner's sends are held back and go
// out with its next receive as one group (parallel/p2p_group.h); the trainer checks its
// schedule with ValidateGroupedRendezvous, which proves that order free of deadlock too.
#pragma once

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "parallel/communicator.h"
#include "parallel/pipeline_schedule.h"
#include "trainer/device_model.h"

namespace mt::train_internal {

struct DevicePipelineRun {
  const PipelineSchedule* schedule = nullptr;  // one chunk per rank (1F1B, ZB1P)
  int rank = 0;                                // in the PP group
  DeviceModel* model = nullptr;                // this rank's stage
  Communicator* pp = nullptr;                  // the PP group, the backend's buffers
  std::function<const int32_t*(int)> tokens;   // micro-batch i's tokens [B, S + 1]
  int64_t B = 0, S = 0;
  ObjectiveWeights weights;
  double grad_scale = 1;  // gradients are of grad_scale x each micro-batch's loss
};

// Runs the forward and backward passes of every micro-batch this rank's actions name.
// Adds loss_scale x each micro-batch's losses into *losses in micro-batch order (main and
// MTP on the last stage, balance on every stage) and the expert loads into
// loads[MoE layer][E].
absl::Status RunDevicePipeline(const DevicePipelineRun& run, double loss_scale, Losses* losses,
                               std::vector<std::vector<int64_t>>* loads);

// Per other pipeline rank, the trainable parameters both hold (the embedding with MTP), in
// name order: the same list on both ranks.
using StageCopies = std::vector<std::pair<int, std::vector<DeviceParam*>>>;
StageCopies FindStageCopies(const DeviceModel& model, int pp);
// Adds the other ranks' gradients of each copy to this rank's (a + b on both: the same
// bits), as ParallelModel::SumReplicatedGradients.
absl::Status SumStageCopies(const StageCopies& copies, Backend& be, Communicator& pp);

// Validation's forward of one micro-batch through the stages: receives the previous
// stage's output, runs this stage, sends its output on. Losses as DeviceModel::TakeLosses.
absl::StatusOr<Losses> EvaluateStage(DeviceModel& model, Communicator* pp, const int32_t* tokens,
                                     int64_t B, int64_t S, const ObjectiveWeights& w);

}  // namespace mt::train_internal

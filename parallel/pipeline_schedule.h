// parallel/pipeline_schedule.h: pipeline-parallel schedules as per-rank action lists, generated
// once and then executed by the trainer (or timed by the simulator below).
//
// Model: the layers are cut into `num_ranks` contiguous stages (stage 0 holds the embedding,
// the last stage the head and MTP). A rank runs one model chunk (1F1B, ZB1P) or two (DualPipe:
// chunk 0 = stage r, fed from rank 0; chunk 1 = stage PP-1-r, fed from the last rank, so both
// pipeline ends hold an embedding and a head). Micro-batch i flows through chunk
// ChunkOfMicroBatch(i) on every rank. The executor follows each rank's list in order:
//   kRecv*   post the receive of what the next compute action needs (its input activations
//            or output gradient) and complete it before that action starts;
//   kSend*   post the send of what the previous compute action produced; complete it before
//            the step ends. With non-blocking sends no list order can deadlock, because
//            ValidateSchedule proves the dependency order acyclic.
// MPI matching should use a tag built from (micro_batch, chunk, forward/backward).
//
// Backward is either one action (kBackward) or split ZeroBubble-style into kBackwardInput
// (input gradient, on the critical path) and a later kBackwardWeight (weight gradient) for
// the same micro-batch and chunk. kForwardBackward is DualPipe's overlapped pair: a forward
// of one micro-batch and a full backward of another, run together so that each half's
// all-to-all hides behind the other half's computation.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mt {

enum class PipelineOp {
  kForward,
  kBackward,         // input and weight gradients together
  kBackwardInput,    // input gradient only; kBackwardWeight follows later
  kBackwardWeight,   // weight gradient of an earlier kBackwardInput
  kForwardBackward,  // forward of (micro_batch, chunk) overlapped with a full backward of
                     // (bwd_micro_batch, bwd_chunk)
  kRecvForward,      // activations of (micro_batch, chunk) from `peer`
  kSendForward,
  kRecvBackward,  // output gradient of (micro_batch, chunk) from `peer`
  kSendBackward,
};

enum class ScheduleKind { k1F1B, kZB1P, kDualPipe };

struct PipelineAction {
  PipelineOp op = PipelineOp::kForward;
  int micro_batch = 0;       // in [0, num_micro_batches)
  int chunk = 0;             // model chunk on this rank: 0, or 0/1 for DualPipe
  int bwd_micro_batch = -1;  // kForwardBackward: the backward half
  int bwd_chunk = -1;
  int peer = -1;  // send/recv: the other pipeline rank
};

struct PipelineSchedule {
  ScheduleKind kind = ScheduleKind::k1F1B;
  int num_ranks = 1;                                 // PP; also the number of model stages
  int num_micro_batches = 1;                         // per optimizer step on one pipeline
  int num_chunks = 1;                                // model chunks per rank (2 for DualPipe)
  std::vector<std::vector<PipelineAction>> actions;  // [num_ranks][...] in execution order

  // The model stage that chunk `chunk` of `rank` runs, and its inverse.
  int StageOf(int rank, int chunk) const;
  int RankOf(int stage, int chunk) const;
  // The chunk a micro-batch flows through (DualPipe: first half 0, second half 1).
  int ChunkOfMicroBatch(int micro_batch) const;
};

const char* ScheduleKindName(ScheduleKind kind);  // "1f1b", "zb1p", "dualpipe"
absl::StatusOr<ScheduleKind> ParseScheduleKind(const std::string& name);
std::string PipelineActionName(const PipelineAction& action);  // "F3.1", "B0", "F2&B5.1"
// "pipeline schedule (1f1b, pp=4, m=8)": how the validators' messages name a schedule.
std::string PipelineScheduleName(const PipelineSchedule& schedule);
inline bool IsPipelineSend(PipelineOp op) {
  return op == PipelineOp::kSendForward || op == PipelineOp::kSendBackward;
}
inline bool IsPipelineRecv(PipelineOp op) {
  return op == PipelineOp::kRecvForward || op == PipelineOp::kRecvBackward;
}

// Generators. Errors (one message each) for pp < 1, m < 1, and for DualPipe pp odd, m odd
// or m < 2*pp (its steady phase needs both directions full).
absl::StatusOr<PipelineSchedule> Make1F1BSchedule(int pp, int num_micro_batches);
// ZB-H1 (Qi et al., "Zero Bubble Pipeline Parallelism"): 1F1B order with backward split;
// stage i defers i weight-gradient passes, which fill the cool-down bubbles while keeping
// at most pp micro-batches of activations per rank.
absl::StatusOr<PipelineSchedule> MakeZB1PSchedule(int pp, int num_micro_batches);
// DualPipe (DeepSeek-V3 report §3.2.1; deepseek-ai/DualPipe): micro-batches enter from both
// ends; eight phases per rank (warm-up forwards, zero-bubble backward/weight interleaving,
// the overlapped F&B steady state, cool-down with deferred weight passes).
absl::StatusOr<PipelineSchedule> MakeDualPipeSchedule(int pp, int num_micro_batches);
absl::StatusOr<PipelineSchedule> MakePipelineSchedule(ScheduleKind kind, int pp,
                                                      int num_micro_batches);

// Checks a schedule: every (micro-batch, stage) gets exactly one forward and one backward
// (or one input backward followed by one weight backward) on the rank that owns it, after
// its forward; every send has its matching receive before the consumer; the order is free of
// deadlock (timed with unit costs); the activations held per rank stay within the schedule's
// bound (1F1B and ZB1P: pp; DualPipe: pp + 1, in units of one micro-batch through one
// chunk). The message names the rank, the action index and what was wrong.
absl::Status ValidateSchedule(const PipelineSchedule& schedule);

// Checks that the schedule also runs over NCCL as NcclCommunicator drives point to point
// (parallel/p2p_batch.h). NCCL has no tags, so the k-th send from rank a to rank b must be
// what b's k-th receive from a expects; and an NCCL send completes only when received, so
// each rank's sends go out in one group with its next receive (or with the step's final
// waits) and the rank waits for all of the group. The message names the mismatched pair,
// or each stuck rank and the peer's action it waits for.
absl::Status ValidateGroupedRendezvous(const PipelineSchedule& schedule);

// Per rank, the most (micro-batch, chunk) activation sets held at once: counted from a
// forward until that micro-batch's last backward action on that chunk.
std::vector<int> PeakActivationsInFlight(const PipelineSchedule& schedule);

// ---- Simulation -------------------------------------------------------------------------

// Seconds (or any unit) one micro-batch takes through one stage.
struct StageCost {
  double forward = 0;          // F alone, including its exposed communication
  double backward = 0;         // full B alone (input + weight gradients)
  double backward_weight = 0;  // W, the part of `backward` that kBackwardWeight runs
  // Parts of `forward` / `backward` that are communication (MoE all-to-all); an overlapped
  // F&B pair hides them behind the other half's computation.
  double forward_comm = 0;
  double backward_comm = 0;
};

struct PipelineCosts {
  std::vector<StageCost> stages;  // [num_stages]
  double p2p = 0;  // from the end of a producer to its consumer on another rank being able to start
  // An F&B pair of F on stage a and B on stage b takes `forward_backward` when >= 0 (uniform
  // studies); otherwise max(computation of both halves, communication of both halves).
  double forward_backward = -1;

  static PipelineCosts Uniform(int num_stages, double forward, double backward,
                               double backward_weight, double forward_backward = -1);
};

struct PipelineTimeline {
  double makespan = 0;
  std::vector<double> busy;         // [rank] time spent in compute actions
  std::vector<double> bubble;       // [rank] makespan - busy
  std::vector<int> peak_in_flight;  // [rank], as PeakActivationsInFlight
  // [rank][action index] start and end times (send/recv markers take no time).
  std::vector<std::vector<double>> start;
  std::vector<std::vector<double>> end;

  double MaxBubble() const;
  double MeanBubble() const;
};

// Times each rank's list in order: a compute action starts when the rank is free and its
// inputs exist (a forward needs the same micro-batch's forward on the previous stage, a
// backward its own forward and the next stage's input backward; cross-rank edges add
// `costs.p2p`). Errors when the order deadlocks or the costs do not cover the stages.
absl::StatusOr<PipelineTimeline> SimulateSchedule(const PipelineSchedule& schedule,
                                                  const PipelineCosts& costs);

// Closed-form bubbles per rank (perf.md §4, DualPipe README), with B the full backward and W
// its weight part. The simulator reproduces them exactly when stages are uniform and, for
// ZB1P, W <= F and W <= B - W; for DualPipe, F = B - W = W and B <= F&B <= F + B.
double BubbleFormula1F1B(int pp, double forward, double backward);
double BubbleFormulaZB1P(int pp, double forward, double backward, double backward_weight);
double BubbleFormulaDualPipe(int pp, double forward_backward, double backward,
                             double backward_weight);

}  // namespace mt

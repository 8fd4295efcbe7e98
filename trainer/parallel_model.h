// trainer/parallel_model.h: what one rank of a training run holds and does in a step: its
// pipeline chunks (one, or two under DualPipe), the parameters they register, the
// expert-parallel dispatcher and the schedule executor (design.md "Parallel layout").
//
// Every run goes through here, a single process being pp = ep = dp = 1 with local process
// groups, so "a layout equals one process" compares one code path with itself.
//
// Gradient flow of one step: every micro-batch's gradients are of 1/(all micro-batches of
// the global batch) x its loss, so summing over data-parallel replicas gives the mean;
// copies of a parameter on several pipeline ranks (the MTP embedding, DualPipe's mirrored
// stages) are summed here, the replicas over DP/expert-DP in zero_optimizer.h. Losses and
// expert loads are summed over the whole world, so every rank sees the same figures and
// makes the same bias update.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "data/sampler.h"
#include "parallel/communicator_groups.h"
#include "parallel/expert_dispatch.h"
#include "parallel/pipeline_schedule.h"
#include "parallel/topology.h"
#include "trainer/config.h"
#include "trainer/model_chunk.h"

namespace mt {

// What the forward and backward passes of one optimizer step produce.
struct GlobalBatchResult {
  Losses losses;                            // means over the micro-batches
  std::vector<std::vector<int64_t>> loads;  // [MoE layers][experts], summed over the batch
};

// The layout spec of `cfg` for Topology::Create (parallel/ knows nothing of models).
LayoutSpec LayoutOf(const Config& cfg, int64_t global_batch);

// The tokens [n, S + 1] of DP rank `dp_rank`'s share (n samples) of global samples
// [cursor, cursor + global_batch): what ParallelModel::ForwardBackward trains on, and the
// device step (trainer/device_train.h).
absl::StatusOr<std::vector<int32_t>> LocalBatchTokens(const data::TrainSampleSource& samples,
                                                      int64_t cursor, int64_t global_batch, int dp,
                                                      int dp_rank);

// The step's global figures from each rank's part (collective over `world`): the losses and
// expert loads every rank added for its samples, summed.
absl::Status SumOverRanks(Communicator& world, GlobalBatchResult* out);

class ParallelModel {
 public:
  // `topo` and `groups` (not owned) must outlive the model.
  static absl::StatusOr<std::unique_ptr<ParallelModel>> Create(const Config& cfg,
                                                               Precision precision,
                                                               const Topology& topo,
                                                               ProcessGroups* groups);
  ~ParallelModel();

  const ModelConfig& config() const { return m_; }
  const Topology& topology() const { return topo_; }
  ProcessGroups& groups() { return *groups_; }
  ParamStore& params() { return *params_; }
  // Every MoE layer of the model in order; null where another pipeline stage holds it.
  const std::vector<Moe*>& moe_layers() const { return moe_by_index_; }
  // Whether this rank's copy of p counts in the gradient norm (the lowest pipeline rank
  // holding it), and whether this rank writes it into checkpoints (that copy, on the first
  // of its data-parallel replicas).
  bool CountsInNorm(const Param& p) const;
  bool WritesToCheckpoint(const Param& p) const;

  // Forward and backward of global samples [cursor, cursor + G): this rank's DP share, in
  // micro-batches of `micro_batch`, through the pipeline schedule. Zeroes the gradients
  // first. Losses and loads are global (summed over the world), the same on every rank.
  absl::StatusOr<GlobalBatchResult> ForwardBackward(const data::TrainSampleSource& samples,
                                                    int64_t cursor, int64_t global_batch,
                                                    int64_t micro_batch, const ObjectiveWeights& w);
  // Mean losses over validation windows [0, windows) in batches of micro_batch (forward
  // only; the batches are spread over the DP replicas). Collective over the world.
  absl::StatusOr<Losses> Evaluate(const data::ValidationSource& val, int64_t windows,
                                  int64_t micro_batch, const ObjectiveWeights& w);
  // Activation bytes one [B, S] micro-batch leaves in this rank's first chunk after its
  // forward (collective over the EP group when experts are distributed).
  int64_t MeasureActivationBytes(int64_t B, int64_t S);
  // The chunk holding the whole model (pp = 1, experts local), for generation; else null.
  ModelChunk* whole_model();

 private:
  ParallelModel(const Config& cfg, const Topology& topo, ProcessGroups* groups);
  absl::StatusOr<const PipelineSchedule*> Schedule(int num_micro_batches);
  // Sums the gradients of parameters that several pipeline ranks hold.
  absl::Status SumReplicatedGradients();

  const Config& cfg_;
  ModelConfig m_;
  Topology topo_;
  ProcessGroups* groups_;
  ScheduleKind kind_ = ScheduleKind::k1F1B;
  int num_chunks_ = 1;
  std::unique_ptr<PrecisionPolicy> precision_;
  std::unique_ptr<ParamStore> params_;
  std::unique_ptr<ExpertDispatcher> dispatcher_;  // null when ep = 1
  std::vector<std::unique_ptr<ModelChunk>> chunks_;
  std::vector<Moe*> moe_by_index_;
  std::map<int, PipelineSchedule> schedules_;  // by micro-batches per step
  std::unordered_map<const Param*, bool> counts_in_norm_;
  // Per other pipeline rank, the parameters both hold, in name order (the same on both).
  std::vector<std::pair<int, std::vector<Param*>>> replicated_;
};

}  // namespace mt

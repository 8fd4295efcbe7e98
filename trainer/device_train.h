// trainer/device_train.h: the training step on a Backend (training.device, issue 8): which
// path a run takes, and the loop's device side. Internal to trainer.cc.
//
// On the device path the run still builds its ParallelModel and ZeroAdamW as on the CPU
// path: they are the host mirror that Restore() fills, that checkpoints are written from
// and that generation runs on. DeviceTrainer then copies the restored parameters and AdamW
// moments onto the backend and runs every step there: the same samples, micro-batches,
// loss averaging, gradient norm (summed in ZeroAdamW's order), clipping, AdamW and bias
// update as the CPU path, so on CpuBackend (MOETRAIN_DEVICE_BACKEND=cpu) a run is bit for
// bit the CPU path's (tests/trainer/device_train_test.sh). Before a checkpoint or
// generation SyncToHost() copies parameters (and moments) back into the mirror.
//
// Data parallelism (parallel.dp > 1, one process per device): every rank holds its
// pipeline stage's device model and runs its share of each global batch; the gradients
// are reduce-scattered over the DP group, each rank updates its shard of the flat
// parameter buffer with its shard of AdamW's moments, and the shards are all-gathered
// back (ZeRO-1, as ZeroAdamW). Expert parallelism (parallel.ep > 1, inside
// DP): each rank holds its EP rank's routed experts, every MoE layer exchanges tokens over
// the EP group (device_moe_ep.cc), and the experts' region of the flat buffers is reduced
// over the expert-DP group instead (ZeroAdamW's second part). On the CPU backend the
// collectives are the run's MPI communicators; on CUDA NCCL communicators over the DP, EP,
// expert-DP and PP groups, on the compute stream. Pipeline parallelism (parallel.pp > 1,
// schedule 1f1b): each rank holds the CPU path's stage of the model and runs the CPU
// path's 1F1B action list (trainer/device_pipeline.h), activations and gradients moving
// over the PP group's communicator for device buffers; the embedding's copy on the last
// stage (MTP) has its gradient summed with the first stage's, and counts in the norm on the
// first only.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/sampler.h"
#include "kernels/backend.h"
#include "parallel/communicator.h"
#include "trainer/config.h"
#include "trainer/device_model.h"
#include "trainer/device_pipeline.h"
#include "trainer/parallel_model.h"
#include "trainer/train_run.h"

namespace mt::train_internal {

// The path training.device picks for this run.
struct DeviceChoice {
  bool device_path = false;  // DeviceModel over a Backend; else the module model
  bool cpu_backend = false;  // the device path on CpuBackend (MOETRAIN_DEVICE_BACKEND=cpu)
  std::string why;           // for the "[moetrain] device: ..." line
};

// Decides training.device for a run of `world_size` processes. The environment variable
// MOETRAIN_DEVICE_BACKEND=cpu puts the device path on CpuBackend (tests run it without a
// GPU; "cuda" or unset: CudaBackend). training.device cuda that cannot run is one error
// naming the key and everything missing (no CUDA build, no visible GPU, the layout,
// precision or moment dtype); auto then falls back to cpu and says why.
absl::StatusOr<DeviceChoice> ChooseDevice(const Config& cfg, int world_size);

class DeviceTrainer {
 public:
  // After Restore(r): the device model of r.model's parameters, with r.opt's moments,
  // on the backend `choice` names (CUDA: the device of `local_rank`).
  static absl::StatusOr<std::unique_ptr<DeviceTrainer>> Create(Run& r, const DeviceChoice& choice,
                                                               int local_rank);
  ~DeviceTrainer();

  Backend& backend() const { return *backend_; }
  bool on_gpu() const;
  // "cuda (NVIDIA H200)" or "the device path on the CPU backend", then with pipeline stages
  // the PP group's communicator ("..., pipeline stages over nccl:pp"): for the run's header.
  std::string Describe() const;
  // CUDA's name of the device ("NVIDIA H200"); empty on the CPU backend.
  const std::string& device_name() const { return device_name_; }

  // ParallelModel::ForwardBackward's contract: zeroes the gradients, runs this rank's
  // micro-batches of the global batch, returns the mean losses and summed expert loads of
  // the whole batch (all ranks).
  absl::StatusOr<GlobalBatchResult> ForwardBackward(const data::TrainSampleSource& samples,
                                                    int64_t cursor, int64_t global_batch,
                                                    int64_t micro_batch, const ObjectiveWeights& w);
  // The global gradient norm, summed as ZeroAdamW::ReduceGradients sums it (dense
  // parameters, then routed experts, each element once over the pipeline stages), so
  // clipping scales by the same factor. With DP, first reduce-scatters the gradients
  // (collective).
  absl::StatusOr<double> GradNorm();
  // Fault injection (training.fault_inject_nan_step): a NaN in one gradient.
  void InjectNan();
  // Clipping, AdamW at lr and the bias update with speed gamma; advances r.opt's step
  // counter as ZeroAdamW::Step does, so checkpoints record the same optimizer_step.
  // With DP, then all-gathers the parameters (collective).
  absl::Status Step(double lr, double norm, const std::vector<std::vector<int64_t>>& loads,
                    double gamma);
  // Every MoE layer's router bias [E], in ParallelModel::moe_layers() order.
  std::vector<std::vector<float>> Biases() const;
  // ParallelModel::Evaluate's mean losses over validation windows [0, windows) (collective).
  absl::StatusOr<Losses> Evaluate(const data::ValidationSource& val, int64_t windows,
                                  int64_t micro_batch, const ObjectiveWeights& w);
  // Parameters into the host mirror (r.model's ParamStore) and, with moments, the AdamW
  // moments into r.opt: before Save() (with; collective) and generation (without).
  absl::Status SyncToHost(bool moments);

 private:
  explicit DeviceTrainer(Run& r) : r_(r) {}
  // The communicator of DeviceParams' region 0 (dense: DP) or 1 (experts: expert-DP), over
  // the backend's buffers or host ones.
  Communicator* RegionComm(size_t region, bool device) const;

  Run& r_;
  Communicator* world_ = nullptr;             // host scalars: losses, loads, the norm
  Communicator* pp_ = nullptr;                // host buffers over the PP group: its size, rank
  Communicator* pp_device_ = nullptr;         // the backend's buffers: activations, gradients
  Communicator* dp_ = nullptr;                // host buffers over the DP group: norms, moments
  Communicator* dp_device_ = nullptr;         // the backend's buffers over the DP group
  Communicator* expert_dp_ = nullptr;         // host buffers over the expert-DP group: moments
  Communicator* expert_dp_device_ = nullptr;  // the backend's buffers over it
  DeviceExpertGroup ep_group_;                // the EP group: counts (host), rows (device)
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Communicator> nccl_dp_;  // dp_device_ on CUDA: uses backend_'s stream
  std::unique_ptr<Communicator> nccl_ep_, nccl_expert_dp_, nccl_pp_;  // EP, expert-DP, PP
  std::unique_ptr<Communicator> emulated_pp_;  // MOETRAIN_EMULATE_NCCL_P2P=1 on the CPU backend
  std::string device_name_;
  std::unique_ptr<DeviceModel> model_;      // destroyed before backend_
  std::vector<DeviceParam*> trainable_;     // trainable: dense, then routed experts
  std::vector<DeviceParam*> norm_order_;    // those of trainable_ this rank counts in the norm
  std::vector<const DeviceParam*> skip_;    // those it does not (another stage's copy)
  std::vector<const DeviceParam*> biases_;  // per MoE layer of the model; null: another stage's
  StageCopies stage_copies_;                // parameters other pipeline ranks hold too
  std::map<int64_t, PipelineSchedule> schedules_;  // 1F1B by micro-batches per step
};

}  // namespace mt::train_internal

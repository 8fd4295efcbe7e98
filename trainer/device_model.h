// trainer/device_model.h: the whole DeepseekV3 model and its training step on a Backend
// (kernels/backend.h): the GPU training step, and on the CPU backend its test.
//
// It mirrors Model (trainer/model.h): embed -> decoder layers -> norm -> head, the MTP
// modules, the balance loss and the expert loads, with the same losses and gradients
// (tests/trainer/device_model_test.cc checks them, on the CPU backend to the last bits).
// Parameters are copied from a Model's ParamStore at construction and stay on the device;
// Download() copies them (and the gradients) back, for checkpoints and comparisons. The
// optimizer step (global-norm clipping, AdamW with fp32 or bf16 moments, the aux-loss-free
// bias update) runs on the device too, so a training step moves only tokens in and a few
// scalars out.
//
// Every training.precision (fp32; bf16; fp8, DeepSeek-V3's recipe: E4M3 Linear GEMMs with
// fine-grained scales; FP32 master weights and accumulation, as trainer/precision.h), the
// whole model on each rank, or with pipeline parallelism one stage of it (the CPU path's
// split, trainer/pipeline_stages.h: its decoder layers, the embedding on the first stage,
// model.norm, lm_head and the MTP modules on the last): one process, or ZeRO-1 data
// parallelism, with expert parallelism inside it (each rank holds its EP rank's routed
// experts and exchanges tokens). A stage runs micro-batches one pass at a time (Forward,
// Backward or its halves BackwardInput and BackwardWeight, TakeLosses by micro-batch id),
// so a pipeline schedule can hold several in flight and defer weight gradients as
// zero-bubble schedules do (trainer/device_pipeline.h). Float build only.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"

#include "kernels/backend.h"
#include "trainer/device_layers.h"
#include "trainer/model.h"
#include "trainer/pipeline_stages.h"

namespace mt {
inline namespace MT_REAL_NS {

class DeviceModel {
 public:
  // The device copy of pipeline stage `stage` of `num_stages` (MakeStageSpec) of model `m`,
  // whose parameters are `params` (a Model's, or a ParallelModel's holding that stage) at
  // `precision`; `params` and
  // `backend` must outlive this (Download writes into `params`). `opt` says how AdamW's
  // moments are stored, and with dp_size > 1 that this is data-parallel rank dp_rank: it
  // keeps and updates the moments of its shard of the flat trainable buffer only (ZeRO-1;
  // DeviceParams), and the caller moves the gradients and parameters between the ranks
  // (trainer/device_train.h).
  // With `ep` (size > 1: expert parallelism) `params` holds this EP rank's routed experts
  // only, and every MoE layer exchanges tokens over the group (ep must outlive this).
  DeviceModel(const ModelConfig& m, Precision precision, ParamStore* params, Backend* backend,
              const DeviceOptimizerLayout& opt = {}, const DeviceExpertGroup& ep = {},
              int stage = 0, int num_stages = 1);
  DeviceModel(Model* model, Backend* backend)
      : DeviceModel(model->config(), model->precision().precision(), &model->params(), backend) {}
  ~DeviceModel();

  const ModelConfig& config() const { return m_; }
  Backend& backend() const { return *be_; }
  // Every parameter with its gradient, in the ParamStore's order.
  std::vector<DeviceParam*> params() const { return params_->All(); }
  // The flat buffers and this rank's shard of them (DeviceParams).
  DeviceParams& flat() const { return *params_; }
  const StageSpec& stage() const { return stage_; }

  // One pipeline stage's passes of micro-batch `id` (ModelChunk's):
  // tokens [B, S+1] on the host; x_in [B*S, H] on the device, the previous stage's output
  // (ignored on the first stage). Returns this stage's output [B*S, H] (undefined on the
  // last stage, which runs the heads' backward at once when `backward`). Gradients are of
  // grad_scale x the loss. Backward takes dy [B*S, H], the gradient of the output (ignored
  // on the last stage), and returns the gradient of x_in (undefined on the first stage).
  // TakeLosses waits for micro-batch `id`'s scalars (after its Backward, when it has one):
  // main and MTP losses on the last stage, the stage's balance losses, and its MoE layers'
  // loads into loads[model MoE index][E] (+=; resized to every MoE layer of the model).
  Tensor Forward(int id, const int32_t* tokens, int64_t B, int64_t S, const Tensor& x_in,
                 const ObjectiveWeights& w, double grad_scale, bool backward);
  Tensor Backward(int id, const Tensor& dy);
  // Backward in two halves, as ModelChunk's (zero-bubble schedules run the second later):
  // BackwardInput returns the gradient of x_in and takes the weight gradients of the MTP
  // modules, the heads and the norms; the decoder layers' Linear, router and expert weight
  // gradients and the embedding's (first stage) wait for BackwardWeight, their operands
  // held until then. Backward is the two at once, to the same bits.
  Tensor BackwardInput(int id, const Tensor& dy);
  void BackwardWeight(int id);
  Losses TakeLosses(int id, std::vector<std::vector<int64_t>>* loads);

  // Model::ForwardBackward's contract (one stage holding the whole model): tokens [B, S+1]
  // on the host; gradients of grad_scale x the loss accumulate on the device;
  // loads[moe layer][E] +=.
  Losses ForwardBackward(const int32_t* tokens, int64_t B, int64_t S, const ObjectiveWeights& w,
                         double grad_scale, std::vector<std::vector<int64_t>>* loads);
  Losses Evaluate(const int32_t* tokens, int64_t B, int64_t S, const ObjectiveWeights& w);

  void ZeroGrads();
  // One rank: sqrt(sum of squared gradients) over the trainable parameters
  // (AdamW::GradNorm), or over `order`, whose parameters' sums are added in its order
  // (ZeroAdamW's, for one that mirrors it); GradSumSquares is the sum before the root.
  double GradNorm();
  double GradNorm(const std::vector<DeviceParam*>& order);
  double GradSumSquares(const std::vector<DeviceParam*>& order);
  // Data-parallel: the sum of squares of this rank's reduced gradient shard (the norm is
  // the square root of its sum over the ranks), leaving out the elements of `skip` (copies
  // another pipeline rank counts).
  double ShardSumSquares(const std::vector<const DeviceParam*>& skip = {});
  // On this rank's shard (every trainable element with one rank): AdamW::ClipGradients,
  // then AdamW::Step at learning rate lr (optimizer step `step`, 1-based); then, on every
  // rank, UpdateExpertBiases with speed gamma from the step's (global) loads.
  void OptimizerStep(const OptimizerConfig& opt, double lr, int64_t step, double norm,
                     const std::vector<std::vector<int64_t>>& loads, double gamma);

  // AdamW's moments by parameter name, full host tensors (ZeroAdamW's checkpoint form):
  // this rank's shard of them onto the device (a missing name: InvalidArgument naming it).
  absl::Status LoadMoments(const std::map<std::string, const Tensor*>& m,
                           const std::map<std::string, const Tensor*>& v);
  // This rank's shard of the moments, host copies [shard_size] each (FP32 or BF16).
  void MomentShards(Tensor* m, Tensor* v) const;

  // Parameter values (and with grads, gradients) back into the Model's ParamStore.
  void Download(bool grads) const;

 private:
  struct Mtp;
  struct Stash;
  struct Pending;
  DeviceBatch Batch(int64_t B, int64_t S);
  // split: the decoder layers queue their weight gradients in the stash.
  Tensor BackwardInput(int id, const Tensor& dy, bool split);
  // Cross-entropy through the shared head in row chunks; *loss_sum (F64) += the summed
  // loss; with dh, dh [T,H] = d(coeff x mean loss)/dh and the head's gradient accumulates.
  void HeadLoss(const DeviceBatch& b, const Tensor& h, const Tensor& labels, int64_t count,
                double coeff, double* loss_sum, Tensor* dh) const;
  Tensor Embed(const DeviceBatch& b, const Tensor& ids) const;

  ModelConfig m_;
  StageSpec stage_;
  Precision precision_;  // training.precision (DeviceBatch::precision)
  Backend* be_;
  std::unique_ptr<DeviceParams> params_;
  DeviceExpertGroup ep_;
  DeviceParam* embed_ = nullptr;  // [V, H] on stages with the embedding
  DeviceParam* head_ = nullptr;   // [V, H] on the last stage
  mutable KeptBf16 head_bf16_;    // bf16 and fp8: the head is a BF16 GEMM
  std::vector<std::unique_ptr<DLayer>> layers_;
  DNorm final_norm_;
  std::vector<std::unique_ptr<Mtp>> mtp_;
  std::vector<DMoe*> moe_layers_;  // main layers' then MTP modules', as Model::moe_layers()
  std::vector<int> moe_indices_;   // [moe_layers_] their indices among the model's MoE layers
  int num_moe_ = 0;                // MoE layers of the whole model
  std::map<int, std::unique_ptr<Stash>> stash_;      // by micro-batch, Forward to Backward(Weight)
  std::map<int, std::unique_ptr<Pending>> pending_;  // by micro-batch, to TakeLosses
  Tensor rope_cos_, rope_sin_;                       // [S, dr/2] F64
  int64_t rope_len_ = 0;
};

}  // namespace MT_REAL_NS
}  // namespace mt

// trainer/model_chunk.h: the part of the DeepseekV3 model one pipeline stage runs, with the
// objective's pieces that live there (design.md "Explicit forward and backward").
//
//   first stage:  tokens -> embed -> its decoder layers -> x         (sent to the next stage)
//   middle:       x -> its decoder layers -> x
//   last stage:   x -> its decoder layers -> model.norm (= h0) -> lm_head -> cross-entropy,
//                 and the MTP modules (which embed with the shared embedding and predict
//                 through the shared head): losses, and with backward the heads' gradients
//
// A chunk holds several micro-batches in flight, each under an id, so a pipeline schedule
// can run forwards ahead of backwards; Forward stashes what BackwardInput needs and
// BackwardInput what BackwardWeight needs (input and weight gradients split, as zero-bubble
// schedules and DualPipe want). The single-process Model is one chunk holding every stage.
//
// Every stage reads the micro-batch's tokens itself (the last stage needs the labels and the
// MTP modules' inputs), so only activations and their gradients cross stages.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "trainer/decoder_layer.h"
#include "trainer/pipeline_stages.h"

namespace mt {

class ExpertDispatcher;

inline namespace MT_REAL_NS {

struct ObjectiveWeights {
  double mtp_lambda = 0.3;
  double balance_alpha = 0.0001;
};

struct Losses {
  double total = 0;
  double main = 0;          // mean next-token cross-entropy
  std::vector<double> mtp;  // [D] mean cross-entropy of each MTP module
  double balance = 0;       // sum over MoE layers of mean_b sum_i f_i P_i (unscaled)
  int64_t tokens = 0;       // positions in the main loss
};

// One micro-batch as every stage sees it.
struct MicroBatch {
  const int32_t* tokens = nullptr;  // [B, S + 1]
  int64_t B = 0;
  int64_t S = 0;
};

class ModelChunk {
 public:
  // Registers the stage's parameters in `ps` (the embedding is shared when two chunks of
  // one rank both hold it). `dispatcher` (not owned, may be null) exchanges the MoE layers'
  // tokens over the expert-parallel group; null = every expert is local.
  ModelChunk(ParamStore& ps, const ModelConfig& m, const StageSpec& stage,
             ExpertDispatcher* dispatcher = nullptr);
  ~ModelChunk();

  const StageSpec& stage() const { return stage_; }
  // This chunk's MoE layers and their indices in the model's MoE order (pipeline_stages.h).
  const std::vector<Moe*>& moe_layers() const { return moe_layers_; }
  const std::vector<int>& moe_indices() const { return moe_indices_; }

  // Forward of micro-batch `id`. x_in [B*S, H] is the previous stage's output (ignored on
  // the first stage). Returns this stage's output [B*S, H], or an undefined tensor on the
  // last stage, which sets losses->main, ->mtp and ->tokens. Every stage adds its MoE
  // layers' balance losses to losses->balance and their loads to loads[moe index][E]
  // (loads may be null). With `backward`, activations are stashed for BackwardInput and the
  // last stage runs the heads' backward at once: gradients are of grad_scale x the loss.
  Tensor Forward(int id, const MicroBatch& mb, const Tensor& x_in, const ObjectiveWeights& w,
                 double grad_scale, bool backward, Losses* losses,
                 std::vector<std::vector<int64_t>>* loads);
  // dy [B*S, H]: gradient of this stage's output (ignored on the last stage). Returns the
  // gradient of x_in (undefined on the first stage). Weight gradients of the MTP modules
  // and heads are taken here too; the decoder layers' and the embedding's wait for
  // BackwardWeight.
  Tensor BackwardInput(int id, const Tensor& dy);
  void BackwardWeight(int id);

  // Bytes the stash of the last forward held at its peak (trainer/activation_memory.h).
  int64_t activation_bytes() const { return activation_bytes_; }

  // Next-token logits [V] after the single sequence tokens[S]; the chunk must hold every
  // stage (generation).
  std::vector<float> NextTokenLogits(const int32_t* tokens, int64_t S);

 private:
  struct MtpModule;
  struct Stash;
  const RopeTables& Rope(int64_t S);

  ModelConfig m_;
  StageSpec stage_;
  const PrecisionPolicy* precision_;
  Param* embed_ = nullptr;  // [V, H] on stages with the embedding
  Param* head_ = nullptr;   // [V, H] on the last stage
  std::vector<std::unique_ptr<DecoderLayer>> layers_;
  RmsNorm final_norm_;
  std::vector<std::unique_ptr<MtpModule>> mtp_;
  std::vector<Moe*> moe_layers_;
  std::vector<int> moe_indices_;
  std::unique_ptr<RopeTables> rope_;
  std::map<int, std::unique_ptr<Stash>> stash_;
  int64_t activation_bytes_ = 0;
};

}  // namespace MT_REAL_NS
}  // namespace mt

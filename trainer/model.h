// trainer/model.h: the whole DeepseekV3 model and DeepSeek-V3's training objective.
//
//   main:  embed -> decoder layers -> model.norm (= h0) -> lm_head -> cross-entropy
//   MTP k: h'_k = eh_proj([enorm(embed(t[i+k])); hnorm(h_{k-1}[i])]) -> decoder layer -> h_k
//          -> shared_head.norm -> lm_head (shared) -> cross-entropy on t[i+k+1]
//   loss = L_main + (lambda/D) sum_k L_mtp_k + alpha * sum_{MoE layers} mean_b sum_i f_i P_i
//
// Fixed-length convention for MTP (design.md): module k sees all S positions, its input
// token past the end of the window is 0, and its last k positions are left out of the loss,
// the balance loss and the expert loads. Embedding and head are shared by the main model
// and every MTP module (one tensor each, gradients summed).
//
// The single-process model is one ModelChunk (model_chunk.h) holding every pipeline stage;
// the multi-rank trainer builds the chunks of its stages itself.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "trainer/config.h"
#include "trainer/model_chunk.h"

namespace mt {
inline namespace MT_REAL_NS {

class Model {
 public:
  // `precision` is training.precision (trainer/precision.h); the double build takes fp32 only.
  Model(const ModelConfig& m, uint64_t seed, Precision precision = Precision::kFp32);
  ~Model();

  const ModelConfig& config() const { return m_; }
  const PrecisionPolicy& precision() const { return *precision_; }
  ParamStore& params() { return *params_; }
  // MoE layers in a fixed order (main layers, then MTP modules): the bias update and the
  // load statistics index them the same way.
  const std::vector<Moe*>& moe_layers() const { return chunk_->moe_layers(); }

  // One micro-batch: tokens [B, S+1]. Accumulates d(grad_scale * loss)/d(params) into the
  // gradients and adds each MoE layer's expert loads into loads[layer][E].
  Losses ForwardBackward(const int32_t* tokens, int64_t B, int64_t S, const ObjectiveWeights& w,
                         double grad_scale, std::vector<std::vector<int64_t>>* loads);
  // The same losses without gradients (validation, `eval`).
  Losses Evaluate(const int32_t* tokens, int64_t B, int64_t S, const ObjectiveWeights& w);
  // Next-token logits [V] after the single sequence tokens[S] (generation; no MTP).
  std::vector<float> NextTokenLogits(const int32_t* tokens, int64_t S);

  // Bytes the Saved structs of the last micro-batch held at their peak, right after its
  // forward (trainer/activation_memory.h): the activation memory of one micro-batch.
  int64_t activation_bytes() const { return chunk_->activation_bytes(); }
  // The same for a [B, S] micro-batch, measured by one forward pass (no gradients, no change
  // to the model). Routing does not change the figure: every token reaches K experts.
  int64_t MeasureActivationBytes(int64_t B, int64_t S);

 private:
  Losses Run(const int32_t* tokens, int64_t B, int64_t S, const ObjectiveWeights& w,
             double grad_scale, bool backward, std::vector<std::vector<int64_t>>* loads);

  ModelConfig m_;
  std::unique_ptr<PrecisionPolicy> precision_;  // every Linear points at it
  std::unique_ptr<ParamStore> params_;
  std::unique_ptr<ModelChunk> chunk_;  // every stage
};

}  // namespace MT_REAL_NS
}  // namespace mt

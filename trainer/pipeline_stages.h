// trainer/pipeline_stages.h: how the DeepseekV3 model is cut into pipeline stages, and which
// stages hold each parameter (design.md "Parallel layout").
//
// Stage s of pp holds the main decoder layers [s*L/pp, (s+1)*L/pp) (as even as integer
// division allows); stage 0 also holds the embedding, the last stage model.norm, lm_head
// and the MTP modules. The MTP modules embed their shifted tokens with the *shared*
// embedding, so with MTP the last stage holds a copy of model.embed_tokens.weight as well
// and the two copies' gradients are summed (Megatron does the same for tied embeddings).
// With pp = 1 the one stage holds everything, which is how the single-process Model is built.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "trainer/config.h"

namespace mt {

struct StageSpec {
  int stage = 0;
  int num_stages = 1;
  int64_t first_layer = 0;  // main decoder layers [first_layer, end_layer)
  int64_t end_layer = 0;

  bool first() const { return stage == 0; }
  bool last() const { return stage == num_stages - 1; }
  // Whether this stage holds the embedding (stage 0, and the last stage when there is MTP).
  bool has_embedding(const ModelConfig& m) const {
    return first() || (last() && m.num_nextn_predict_layers > 0);
  }
};

StageSpec MakeStageSpec(const ModelConfig& m, int stage, int num_stages);

// The stages holding parameter `name` (a Hugging Face name of the model's ParamStore),
// ascending. Every parameter is on exactly one stage except the embedding with MTP.
std::vector<int> StagesHoldingParam(const ModelConfig& m, int num_stages, const std::string& name);

// Index of main layer `layer` among the model's MoE layers (main layers first, then the MTP
// modules' layers): the order of loads[layer][expert] everywhere. -1 for a dense layer.
int MoeLayerIndex(const ModelConfig& m, int64_t layer);

}  // namespace mt

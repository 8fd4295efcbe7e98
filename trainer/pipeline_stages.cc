#include "trainer/pipeline_stages.h"

#include <cstdlib>

namespace mt {

StageSpec MakeStageSpec(const ModelConfig& m, int stage, int num_stages) {
  StageSpec s;
  s.stage = stage;
  s.num_stages = num_stages;
  s.first_layer = m.num_hidden_layers * stage / num_stages;
  s.end_layer = m.num_hidden_layers * (stage + 1) / num_stages;
  return s;
}

std::vector<int> StagesHoldingParam(const ModelConfig& m, int num_stages, const std::string& name) {
  const int last = num_stages - 1;
  if (name == "model.embed_tokens.weight") {
    if (m.num_nextn_predict_layers > 0 && last != 0) return {0, last};
    return {0};
  }
  static const std::string kLayers = "model.layers.";
  if (name.compare(0, kLayers.size(), kLayers) == 0) {
    const int64_t layer = std::strtoll(name.c_str() + kLayers.size(), nullptr, 10);
    if (layer >= m.num_hidden_layers) return {last};  // an MTP module
    for (int s = 0; s < num_stages; ++s) {
      const StageSpec spec = MakeStageSpec(m, s, num_stages);
      if (layer >= spec.first_layer && layer < spec.end_layer) return {s};
    }
  }
  return {last};  // model.norm.weight, lm_head.weight
}

int MoeLayerIndex(const ModelConfig& m, int64_t layer) {
  if (!m.IsMoeLayer(layer)) return -1;
  int index = 0;
  for (int64_t l = 0; l < layer; ++l) index += m.IsMoeLayer(l);
  return index;
}

}  // namespace mt

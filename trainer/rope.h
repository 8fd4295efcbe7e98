// trainer/rope.h: rotary tables and the attention softmax scale for MLA, as Hugging Face's
// DeepseekV3 computes them (plain RoPE, or YaRN when `rope_scaling` is set).
#pragma once

#include <cstdint>
#include <vector>

#include "trainer/config.h"

namespace mt {

struct RopeTables {
  int64_t seq_len = 0;
  int64_t half = 0;          // qk_rope_head_dim / 2
  std::vector<double> cos;   // [seq_len, half], YaRN attention factor folded in
  std::vector<double> sin;   // [seq_len, half]
};

// inv_freq[i] for i in [0, qk_rope_head_dim/2), YaRN-blended when configured.
std::vector<double> RopeInverseFrequencies(const ModelConfig& m);
RopeTables MakeRopeTables(const ModelConfig& m, int64_t seq_len);
// (qk_nope + qk_rope)^-0.5, times mscale^2 under YaRN with mscale_all_dim.
double AttentionSoftmaxScale(const ModelConfig& m);

}  // namespace mt

// tests/trainer/tiny_model.h: the tiny DeepseekV3 and the random tokens that the
// model-level tests share (gradient checks in double, the device model against the module
// model in float).
#pragma once

#include <cstdint>
#include <vector>

#include "trainer/config.h"
#include "trainer/rng.h"

namespace mt::testing_tiny {

// Every feature of the architecture at widths of a few dozen: q LoRA, expert groups, a
// shared expert, a dense first layer, MTP depth 2.
inline ModelConfig TinyConfig() {
  ModelConfig m;
  m.vocab_size = 37;
  m.hidden_size = 16;
  m.intermediate_size = 24;
  m.moe_intermediate_size = 8;
  m.num_hidden_layers = 2;
  m.num_attention_heads = 2;
  m.num_key_value_heads = 2;
  m.n_routed_experts = 8;
  m.n_shared_experts = 1;
  m.num_experts_per_tok = 2;
  m.n_group = 4;
  m.topk_group = 2;
  m.first_k_dense_replace = 1;
  m.q_lora_rank = 8;
  m.kv_lora_rank = 8;
  m.qk_nope_head_dim = 4;
  m.qk_rope_head_dim = 4;
  m.v_head_dim = 6;
  m.num_nextn_predict_layers = 2;
  m.routed_scaling_factor = 2.5;
  m.initializer_range = 0.3;  // large enough that every path carries signal
  return m;
}

inline std::vector<int32_t> RandomTokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::vector<int32_t> t(n);
  for (int64_t i = 0; i < n; ++i) t[i] = static_cast<int32_t>(RandomBits(seed, 7, i) % vocab);
  return t;
}

}  // namespace mt::testing_tiny

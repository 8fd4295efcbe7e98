// launch/planner_model.cc: parameter counts and per-layer MACs (see planner_model.h).
#include "launch/planner_model.h"

namespace mt::plan {

int64_t NumMoeLayers(const ModelConfig& m) {
  int64_t n = 0;
  for (int64_t i = 0; i < m.num_hidden_layers; ++i) n += m.IsMoeLayer(i) ? 1 : 0;
  return n;
}

int64_t NumDenseLayers(const ModelConfig& m) { return m.num_hidden_layers - NumMoeLayers(m); }

bool MtpLayersAreMoe(const ModelConfig& m) { return m.IsMoeLayer(m.num_hidden_layers); }

double AttentionParams(const ModelConfig& m) {
  const double h = m.hidden_size, H = m.num_attention_heads;
  const double q_head = m.qk_nope_head_dim + m.qk_rope_head_dim;
  double p = 0;
  if (m.q_lora_rank > 0) {
    p += m.q_lora_rank * h + m.q_lora_rank + H * q_head * m.q_lora_rank;  // q_a, q_a_norm, q_b
  } else {
    p += H * q_head * h;  // q_proj
  }
  p += (m.kv_lora_rank + m.qk_rope_head_dim) * h + m.kv_lora_rank;  // kv_a_proj_with_mqa, norm
  p += H * (m.qk_nope_head_dim + m.v_head_dim) * m.kv_lora_rank;    // kv_b_proj
  p += h * H * m.v_head_dim;                                        // o_proj
  return p + 2 * h;  // input_layernorm, post_attention_layernorm
}

double DenseMlpParams(const ModelConfig& m) { return 3.0 * m.hidden_size * m.intermediate_size; }

double RouterParams(const ModelConfig& m) {
  return static_cast<double>(m.n_routed_experts) * m.hidden_size + m.n_routed_experts;
}

double RoutedExpertParams(const ModelConfig& m) {
  return 3.0 * m.hidden_size * m.moe_intermediate_size * m.n_routed_experts;
}

double SharedExpertParams(const ModelConfig& m) {
  return 3.0 * m.hidden_size * m.moe_intermediate_size * m.n_shared_experts;
}

double MtpGlueParams(const ModelConfig& m) {
  const double h = m.hidden_size;
  return 3 * h + 2 * h * h;  // enorm, hnorm, shared_head.norm; eh_proj [h, 2h]
}

double ParamCounts::Total() const {
  return embedding + head + attention + dense_mlp + router + routed_experts + shared_experts;
}

double ParamCounts::Active() const {
  return embedding + head + attention + dense_mlp + router + active_routed + shared_experts;
}

double ParamCounts::ActiveNonEmbedding() const { return Active() - embedding - head; }

ParamCounts CountParameters(const ModelConfig& m) {
  ParamCounts c;
  const double h = m.hidden_size, V = m.vocab_size;
  const double moe = NumMoeLayers(m), dense = NumDenseLayers(m);
  c.embedding = V * h;
  c.head = (m.tie_word_embeddings ? 0 : V * h) + h;
  c.attention = AttentionParams(m) * m.num_hidden_layers;
  c.dense_mlp = DenseMlpParams(m) * dense;
  c.router = RouterParams(m) * moe;
  c.routed_experts = RoutedExpertParams(m) * moe;
  c.shared_experts = SharedExpertParams(m) * moe;
  const double expert = RoutedExpertParams(m) / m.n_routed_experts;
  c.active_routed = expert * m.num_experts_per_tok * moe;
  // One MTP module: its glue plus one decoder layer of the same kind as the last main layer.
  const bool mtp_moe = MtpLayersAreMoe(m);
  const double layer_total =
      AttentionParams(m) + (mtp_moe
                                ? RouterParams(m) + RoutedExpertParams(m) + SharedExpertParams(m)
                                : DenseMlpParams(m));
  const double layer_active =
      AttentionParams(m) +
      (mtp_moe ? RouterParams(m) + expert * m.num_experts_per_tok + SharedExpertParams(m)
               : DenseMlpParams(m));
  c.mtp = m.num_nextn_predict_layers * (MtpGlueParams(m) + layer_total);
  c.mtp_active = m.num_nextn_predict_layers * (MtpGlueParams(m) + layer_active);
  return c;
}

double AttentionProjectionMacs(const ModelConfig& m) {
  const double h = m.hidden_size, H = m.num_attention_heads;
  const double q_head = m.qk_nope_head_dim + m.qk_rope_head_dim;
  double macs = 0;
  if (m.q_lora_rank > 0) {
    macs += m.q_lora_rank * (h + H * q_head + 1);
  } else {
    macs += h * H * q_head;
  }
  macs += m.kv_lora_rank * (h + H * (m.qk_nope_head_dim + m.v_head_dim) + 1);
  macs += h * m.qk_rope_head_dim + H * m.v_head_dim * h;
  return macs;
}

double AttentionCoreMacs(const ModelConfig& m, int64_t seq_len) {
  const double H = m.num_attention_heads;
  const double qk = H * (m.qk_nope_head_dim + m.qk_rope_head_dim) / 2.0;
  const double pv = H * m.v_head_dim / 2.0;
  return static_cast<double>(seq_len) * (qk + pv);
}

double DenseMlpMacs(const ModelConfig& m) { return DenseMlpParams(m); }

double MoeMlpMacs(const ModelConfig& m) {
  const double per_expert = 3.0 * m.hidden_size * m.moe_intermediate_size;
  return per_expert * (m.num_experts_per_tok + m.n_shared_experts);
}

double MtpGlueMacs(const ModelConfig& m) { return MtpGlueParams(m); }

double LogitsMacs(const ModelConfig& m) {
  return static_cast<double>(m.hidden_size) * m.vocab_size;
}

}  // namespace mt::plan

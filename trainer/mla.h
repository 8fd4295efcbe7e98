// trainer/mla.h: Multi-head Latent Attention (DeepSeek-V2/V3), forward and backward.
//
// Queries go through an optional low-rank bottleneck (q_lora_rank); keys and values are
// rebuilt per head from one compressed latent (kv_lora_rank) plus a single rotary key
// (qk_rope_head_dim) shared by all heads. Math and tensor names follow Hugging Face's
// modeling_deepseek_v3.py (reference/ecosystem.md §1.5).
#pragma once

#include <string>

#include "trainer/config.h"
#include "trainer/layers.h"
#include "trainer/rope.h"

namespace mt {
inline namespace MT_REAL_NS {

class Mla {
 public:
  // What Forward keeps for backward (one micro-batch). T = B*S tokens.
  struct Saved {
    // Linear inputs for Wgrad are StoredActivations (trainer/precision.h).
    StoredActivation x;  // [T, H]
    Tensor qa, qa_rstd;  // [T, r_q], [T]      (q LoRA only)
    StoredActivation qa_n;  // [T, r_q]
    Tensor latent, latent_rstd;  // [T, r_kv], [T]
    StoredActivation latent_n;   // [T, r_kv]
    Tensor q;            // [T, N, dn+dr] after RoPE
    Tensor k;            // [T, N, dn+dr] after RoPE
    Tensor v;            // [T, N, dv]
    Tensor probs;        // [B, N, S, S]
    StoredActivation o;  // [T, N*dv] attention output
    // Output gradients kept by BackwardInput for BackwardWeight.
    Tensor d_out, d_q, d_qa, d_kv, d_ckv;
  };

  Mla() = default;
  Mla(ParamStore& ps, const std::string& prefix, const ModelConfig& m);

  // x [B*S, H] -> [B*S, H]
  Tensor Forward(const Tensor& x, int64_t B, int64_t S, const RopeTables& rope, Saved* s) const;
  // dy [B*S, H] -> dx [B*S, H]
  Tensor BackwardInput(const Tensor& dy, int64_t B, int64_t S, const RopeTables& rope,
                       Saved* s) const;
  void BackwardWeight(Saved* s) const;

 private:
  int64_t H_, N_, dn_, dr_, dv_, rq_, rkv_;
  double scale_;
  Linear q_a_, q_b_, q_;  // q_a_/q_b_ with LoRA, q_ without
  RmsNorm q_a_norm_, kv_a_norm_;
  Linear kv_a_, kv_b_, o_;
};

}  // namespace MT_REAL_NS
}  // namespace mt

// trainer/decoder_layer.h: one DeepseekV3 decoder layer (pre-norm residual blocks):
//   x1 = x + MLA(input_layernorm(x));  y = x1 + FFN(post_attention_layernorm(x1))
// where FFN is the dense SwiGLU MLP for layer < first_k_dense_replace, DeepSeekMoE after.
// Used for the main layers and inside each MTP module.
#pragma once

#include <memory>
#include <string>

#include "trainer/mla.h"
#include "trainer/moe.h"

namespace mt {
inline namespace MT_REAL_NS {

// Per-layer statistics the objective needs, accumulated over a micro-batch.
struct MoeStats {
  double balance_loss = 0;      // sum over calls of mean_b sum_i f_i P_i
  std::vector<int64_t> load;    // [E] tokens routed to each expert (valid positions)
};

class DecoderLayer {
 public:
  struct Saved {
    Tensor x, a_rstd, x1, b_rstd;  // [T, H] layer input and x1, their norms' rstd [T]
    Mla::Saved attn;
    SwigluMlp::Saved mlp;
    Moe::Saved moe;
  };

  // `dispatcher` (may be null): the expert-parallel token exchange of an MoE layer (moe.h).
  DecoderLayer(ParamStore& ps, int64_t index, const ModelConfig& m,
               ExpertDispatcher* dispatcher = nullptr);

  bool is_moe() const { return moe_ != nullptr; }
  Moe* moe() const { return moe_.get(); }

  // x [B*S, H] -> [B*S, H]; `valid` positions per sequence count for MoE statistics.
  Tensor Forward(const Tensor& x, int64_t B, int64_t S, int64_t valid, const RopeTables& rope,
                 Saved* s, MoeStats* stats) const;
  Tensor BackwardInput(const Tensor& dy, int64_t B, int64_t S, const RopeTables& rope,
                       double balance_grad_scale, Saved* s) const;
  void BackwardWeight(Saved* s) const;

 private:
  RmsNorm input_norm_, post_norm_;
  Mla attn_;
  std::unique_ptr<SwigluMlp> mlp_;
  std::unique_ptr<Moe> moe_;
};

}  // namespace MT_REAL_NS
}  // namespace mt

#include "trainer/decoder_layer.h"

namespace mt {
inline namespace MT_REAL_NS {

DecoderLayer::DecoderLayer(ParamStore& ps, int64_t index, const ModelConfig& m,
                           ExpertDispatcher* dispatcher) {
  const std::string p = "model.layers." + std::to_string(index) + ".";
  input_norm_ = RmsNorm(ps, p + "input_layernorm.weight", m.hidden_size, m.rms_norm_eps);
  attn_ = Mla(ps, p + "self_attn.", m);
  post_norm_ = RmsNorm(ps, p + "post_attention_layernorm.weight", m.hidden_size, m.rms_norm_eps);
  // HF: MoE iff layer_idx >= first_k_dense_replace (MTP layers included, since L >= k).
  if (m.IsMoeLayer(index))
    moe_ = std::make_unique<Moe>(ps, p + "mlp.", m, dispatcher);
  else
    mlp_ = std::make_unique<SwigluMlp>(ps, p + "mlp.", m.hidden_size, m.intermediate_size);
}

Tensor DecoderLayer::Forward(const Tensor& x, int64_t B, int64_t S, int64_t valid,
                             const RopeTables& rope, Saved* s, MoeStats* stats) const {
  s->x = x;
  // The norm outputs are not kept: the sublayers keep what their backward needs of them.
  s->x1 = attn_.Forward(input_norm_.Forward(x, &s->a_rstd), B, S, rope, &s->attn);
  ops::Add(x.data<Real>(), s->x1.data<Real>(), x.numel());
  const Tensor b = post_norm_.Forward(s->x1, &s->b_rstd);
  Tensor y = moe_ ? moe_->Forward(b, B, S, valid, &s->moe, &stats->balance_loss, stats->load.data())
                  : mlp_->Forward(b, &s->mlp);
  ops::Add(s->x1.data<Real>(), y.data<Real>(), y.numel());
  return y;
}

Tensor DecoderLayer::BackwardInput(const Tensor& dy, int64_t B, int64_t S, const RopeTables& rope,
                                   double balance_grad_scale, Saved* s) const {
  Tensor db = moe_ ? moe_->BackwardInput(dy, balance_grad_scale, &s->moe)
                   : mlp_->BackwardInput(dy, &s->mlp);
  Tensor dx1 = post_norm_.Backward(db, s->x1, s->b_rstd);
  ops::Add(dy.data<Real>(), dx1.data<Real>(), dx1.numel());  // residual
  Tensor da = attn_.BackwardInput(dx1, B, S, rope, &s->attn);
  Tensor dx = input_norm_.Backward(da, s->x, s->a_rstd);
  ops::Add(dx1.data<Real>(), dx.data<Real>(), dx.numel());  // residual
  return dx;
}

void DecoderLayer::BackwardWeight(Saved* s) const {
  attn_.BackwardWeight(&s->attn);
  if (moe_)
    moe_->BackwardWeight(&s->moe);
  else
    mlp_->BackwardWeight(&s->mlp);
  *s = Saved{};
}

}  // namespace MT_REAL_NS
}  // namespace mt

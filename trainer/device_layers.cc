// trainer/device_layers.cc: Linear, RMSNorm, SwiGLU MLP and decoder layer on a Backend
// (device_layers.h); the parameters' flat buffers are in device_params.cc, MLA and MoE in
// device_mla.cc, device_moe.cc and device_moe_ep.cc.
#include "trainer/device_layers.h"

#include <type_traits>

#include "kernels/status.h"
#include "trainer/rope.h"

namespace mt {
inline namespace MT_REAL_NS {

static_assert(std::is_same_v<Real, float>, "the device model is float only (real.h)");

// ---- Linear and RMSNorm ---------------------------------------------------------------

DAct DLinear::Store(const DeviceBatch& b, const Tensor& x) const {
  DAct a;
  if (b.fp8())
    a.q = b.be->QuantizeFp8(x.data<float>(), x.dim(0), in);
  else
    a.values = x;
  return a;
}

const Tensor& KeptBf16::Of(const DeviceBatch& b, const Tensor& values) {
  return Kept::Of(b, [&] { return b.be->Bf16Weight(values.data<float>(), values.numel()); });
}

const DLinear::Fp8Weights& DLinear::Fp8(const DeviceBatch& b) const {
  return fp8_cache.Of(b, [&] {
    Fp8Weights q;
    q.w = b.be->QuantizeWeightFp8(p->value.data<float>(), out, in);
    q.wt = b.be->TransposeWeightFp8(q.w);
    return q;
  });
}

Tensor DLinear::Forward(const DeviceBatch& b, const DAct& x) const {
  Backend& be = *b.be;
  const float* w = p->value.data<float>();
  if (b.fp8()) {
    const DAct q = x.quantized() ? x : Store(b, x.values);
    Tensor y = be.Empty({q.q.rows, out});  // [T, out]
    be.Fp8LinearForward(q.q, Fp8(b).w, y.data<float>());
    return y;
  }
  const int64_t T = x.values.dim(0);
  Tensor y = be.Empty({T, out});  // [T, out]
  if (b.round_bf16())
    be.LinearForwardBf16(x.values.data<float>(), bf16_cache.Of(b, p->value), y.data<float>(), T, in,
                         out);
  else
    be.LinearForward(x.values.data<float>(), w, y.data<float>(), T, in, out);
  return y;
}

void DLinear::BackwardInput(const DeviceBatch& b, const Tensor& dy, Tensor* dx,
                            bool accumulate) const {
  Backend& be = *b.be;
  const int64_t T = dy.dim(0);
  if (!dx->defined()) *dx = be.Empty({T, in});  // [T, in]
  const float* w = p->value.data<float>();
  if (b.fp8())
    be.Fp8LinearBackwardInput(dy.data<float>(), Fp8(b).wt, dx->data<float>(), T, accumulate);
  else if (b.round_bf16())
    be.LinearBackwardInputBf16(dy.data<float>(), bf16_cache.Of(b, p->value), dx->data<float>(), T,
                               in, out, accumulate);
  else
    be.LinearBackwardInput(dy.data<float>(), w, dx->data<float>(), T, in, out, accumulate);
}

void DLinear::BackwardWeight(const DeviceBatch& b, const Tensor& dy, const DAct& x) const {
  b.WeightGrad([b, this, dy, x] {
    Backend& be = *b.be;
    const int64_t T = dy.dim(0);
    float* dw = p->grad.data<float>();
    if (b.fp8()) {
      be.Fp8LinearBackwardWeight(dy.data<float>(), x.quantized() ? &x.q : nullptr,
                                 x.quantized() ? nullptr : x.values.data<float>(), dw, T, in, out);
    } else if (b.round_bf16()) {
      be.LinearBackwardWeightBf16(dy.data<float>(), x.values.data<float>(), dw, T, in, out);
    } else {
      be.LinearBackwardWeight(dy.data<float>(), x.values.data<float>(), dw, T, in, out);
    }
  });
}

Tensor DNorm::Forward(const DeviceBatch& b, const Tensor& x, Tensor* rstd) const {
  const int64_t T = x.numel() / dim;
  Tensor y = b.be->Empty(x.shape());
  *rstd = b.be->Empty({T});
  b.be->RmsNormForward(x.data<float>(), p->value.data<float>(), y.data<float>(),
                       rstd->data<float>(), T, dim, eps);
  return y;
}

DAct DNorm::Store(const DeviceBatch& b, const Tensor& x, Tensor* rstd) const {
  if (!b.fp8()) return DAct{Forward(b, x, rstd), {}};
  const int64_t T = x.numel() / dim;
  *rstd = b.be->Empty({T});
  DAct a;
  a.q = b.be->RmsNormQuantizeFp8(x.data<float>(), p->value.data<float>(), rstd->data<float>(), T,
                                 dim, eps);
  return a;
}

Tensor DNorm::Backward(const DeviceBatch& b, const Tensor& dy, const Tensor& x,
                       const Tensor& rstd) const {
  const int64_t T = x.numel() / dim;
  Tensor dx = b.be->Empty(x.shape());
  b.be->RmsNormBackward(dy.data<float>(), x.data<float>(), p->value.data<float>(),
                        rstd.data<float>(), dx.data<float>(), p->grad.data<float>(), T, dim);
  return dx;
}

// ---- SwiGLU MLP -------------------------------------------------------------------------

Tensor SwigluForwardKeep(const DeviceBatch& b, const Tensor& g, const Tensor& u, SwigluIn* in,
                         Tensor* keep_h) {
  Backend& be = *b.be;
  Tensor h = be.Empty(g.shape());  // from the exact g, u, before they are stored
  be.SwigluForward(g.data<float>(), u.data<float>(), h.data<float>(), h.numel());
  if (b.fp8()) {
    in->gq = be.QuantizeFp8(g.data<float>(), g.dim(0), g.dim(1));
    in->uq = be.QuantizeFp8(u.data<float>(), u.dim(0), u.dim(1));
    return h;
  }
  in->g = g;
  in->u = u;
  if (b.round_bf16()) {
    be.RoundBf16(in->g.data<float>(), in->g.data<float>(), g.numel());
    be.RoundBf16(in->u.data<float>(), in->u.data<float>(), u.numel());
  } else {
    *keep_h = h;
  }
  return h;
}

Tensor SwigluBackwardRecompute(const DeviceBatch& b, const Tensor& dh, const SwigluIn& in,
                               Tensor* h, Tensor* du) {
  Backend& be = *b.be;
  Tensor g = in.g, u = in.u;
  if (in.gq.data.defined()) {  // fp8: the E4M3 copies' values
    g = be.Empty(dh.shape());
    u = be.Empty(dh.shape());
    be.DequantizeFp8(in.gq, g.data<float>());
    be.DequantizeFp8(in.uq, u.data<float>());
  }
  Tensor dg = be.Empty(dh.shape());
  *du = be.Empty(dh.shape());
  be.SwigluBackward(dh.data<float>(), g.data<float>(), u.data<float>(), dg.data<float>(),
                    du->data<float>(), dh.numel());
  if (!h->defined()) {
    *h = be.Empty(g.shape());
    be.SwigluForward(g.data<float>(), u.data<float>(), h->data<float>(), h->numel());
  }
  return dg;
}

Tensor DMlp::Forward(const DeviceBatch& b, const DAct& x, Saved* s) const {
  s->x = x;
  const Tensor g = gate.Forward(b, s->x);  // [T, F]
  const Tensor u = up.Forward(b, s->x);    // [T, F]
  const Tensor h = SwigluForwardKeep(b, g, u, &s->in, &s->h);
  return down.Forward(b, h);  // [T, H]
}

Tensor DMlp::Backward(const DeviceBatch& b, const Tensor& dy, Saved* s) const {
  Tensor dh;  // [T, F]
  down.BackwardInput(b, dy, &dh, false);
  Tensor du;
  const Tensor dg = SwigluBackwardRecompute(b, dh, s->in, &s->h, &du);
  down.BackwardWeight(b, dy, DAct{s->h, {}});
  Tensor dx;  // [T, H]
  gate.Backward(b, dg, s->x, &dx, false);
  up.Backward(b, du, s->x, &dx, true);
  *s = Saved{};
  return dx;
}

// ---- decoder layer ----------------------------------------------------------------------

Tensor DLayer::Forward(const DeviceBatch& b, const Tensor& x, int64_t valid, Saved* s,
                       int64_t* load, double* balance) const {
  Backend& be = *b.be;
  s->x = x;
  s->x1 = attn.Forward(b, input_norm.Store(b, x, &s->a_rstd), &s->attn);
  be.Add(x.data<float>(), s->x1.data<float>(), x.numel());  // residual
  // The router reads the MoE's input in FP32 (a BF16 GEMM), so only the dense MLP takes it
  // quantised.
  Tensor y =
      moe ? moe->Forward(b, post_norm.Forward(b, s->x1, &s->b_rstd), valid, &s->moe, load, balance)
          : mlp->Forward(b, post_norm.Store(b, s->x1, &s->b_rstd), &s->mlp);
  be.Add(s->x1.data<float>(), y.data<float>(), y.numel());  // residual
  return y;
}

Tensor DLayer::Backward(const DeviceBatch& b, const Tensor& dy, int64_t valid,
                        double balance_scale, Saved* s) const {
  Backend& be = *b.be;
  const Tensor dn = moe ? moe->Backward(b, dy, valid, balance_scale, &s->moe)
                        : mlp->Backward(b, dy, &s->mlp);
  Tensor dx1 = post_norm.Backward(b, dn, s->x1, s->b_rstd);
  be.Add(dy.data<float>(), dx1.data<float>(), dx1.numel());  // residual
  const Tensor da = attn.Backward(b, dx1, &s->attn);
  Tensor dx = input_norm.Backward(b, da, s->x, s->a_rstd);
  be.Add(dx1.data<float>(), dx.data<float>(), dx.numel());  // residual
  *s = Saved{};
  return dx;
}

namespace {

DLinear MakeLinear(DeviceParams& ps, const std::string& name) {
  DLinear l;
  l.p = ps.Get(name);
  l.out = l.p->value.dim(0);
  l.in = l.p->value.dim(1);
  return l;
}

DNorm MakeNorm(DeviceParams& ps, const std::string& name, double eps) {
  DNorm n;
  n.p = ps.Get(name);
  n.dim = n.p->value.dim(0);
  n.eps = eps;
  return n;
}

DMlp MakeMlp(DeviceParams& ps, const std::string& prefix) {
  return {MakeLinear(ps, prefix + "gate_proj.weight"), MakeLinear(ps, prefix + "up_proj.weight"),
          MakeLinear(ps, prefix + "down_proj.weight")};
}

}  // namespace

std::unique_ptr<DLayer> MakeDeviceLayer(DeviceParams& ps, int64_t index, const ModelConfig& m,
                                        const DeviceExpertGroup* ep) {
  const std::string p = "model.layers." + std::to_string(index) + ".";
  auto layer = std::make_unique<DLayer>();
  layer->input_norm = MakeNorm(ps, p + "input_layernorm.weight", m.rms_norm_eps);
  layer->post_norm = MakeNorm(ps, p + "post_attention_layernorm.weight", m.rms_norm_eps);

  DMla& a = layer->attn;
  a.H = m.hidden_size;
  a.N = m.num_attention_heads;
  a.dn = m.qk_nope_head_dim;
  a.dr = m.qk_rope_head_dim;
  a.dv = m.v_head_dim;
  a.rq = m.q_lora_rank;
  a.rkv = m.kv_lora_rank;
  a.scale = AttentionSoftmaxScale(m);
  const std::string pa = p + "self_attn.";
  constexpr double kLatentNormEps = 1e-6;  // trainer/mla.cc: HF's latent norms ignore the config
  if (a.rq > 0) {
    a.q_a = MakeLinear(ps, pa + "q_a_proj.weight");
    a.q_a_norm = MakeNorm(ps, pa + "q_a_layernorm.weight", kLatentNormEps);
    a.q_b = MakeLinear(ps, pa + "q_b_proj.weight");
  } else {
    a.q = MakeLinear(ps, pa + "q_proj.weight");
  }
  a.kv_a = MakeLinear(ps, pa + "kv_a_proj_with_mqa.weight");
  a.kv_a_norm = MakeNorm(ps, pa + "kv_a_layernorm.weight", kLatentNormEps);
  a.kv_b = MakeLinear(ps, pa + "kv_b_proj.weight");
  a.o = MakeLinear(ps, pa + "o_proj.weight");

  if (!m.IsMoeLayer(index)) {
    layer->mlp = std::make_unique<DMlp>(MakeMlp(ps, p + "mlp."));
    return layer;
  }
  auto moe = std::make_unique<DMoe>();
  moe->H = m.hidden_size;
  moe->E = m.n_routed_experts;
  moe->K = m.num_experts_per_tok;
  moe->F = m.moe_intermediate_size;
  moe->n_group = m.n_group;
  moe->topk_group = m.topk_group;
  moe->scaling = m.routed_scaling_factor;
  moe->norm_topk = m.norm_topk_prob;
  moe->has_shared = m.n_shared_experts > 0;
  moe->router = ps.Get(p + "mlp.gate.weight");
  moe->bias = ps.Get(p + "mlp.gate.e_score_correction_bias");
  // This rank's experts: all, or its EP rank's contiguous share (parallel/topology.h).
  const int ep_size = ep ? ep->size : 1, ep_rank = ep ? ep->rank : 0;
  MT_CHECK(ep_size >= 1 && moe->E % ep_size == 0 && ep_rank >= 0 && ep_rank < ep_size,
           "device model: ", moe->E, " experts over EP rank ", ep_rank, " of ", ep_size);
  moe->ep = ep;
  moe->E_local = moe->E / ep_size;
  const int64_t first = ep_rank * moe->E_local;
  auto names = [&](const char* proj) {
    std::vector<std::string> n;
    for (int64_t e = first; e < first + moe->E_local; ++e)
      n.push_back(p + "mlp.experts." + std::to_string(e) + "." + proj + ".weight");
    return n;
  };
  ps.Stack(names("gate_proj"), &moe->gate_w, &moe->gate_g);
  ps.Stack(names("up_proj"), &moe->up_w, &moe->up_g);
  ps.Stack(names("down_proj"), &moe->down_w, &moe->down_g);
  if (moe->has_shared) moe->shared = MakeMlp(ps, p + "mlp.shared_experts.");
  layer->moe = std::move(moe);
  return layer;
}

}  // namespace MT_REAL_NS
}  // namespace mt

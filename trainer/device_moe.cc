// trainer/device_moe.cc: DeepSeekMoE on a Backend (device_layers.h): the router, the
// balance statistics, and the routed experts as three grouped GEMMs over the tokens
// permuted by expert (trainer/moe.cc runs one GEMM per expert over gathered rows instead;
// each expert's rows and order of accumulation are the same).
#include "trainer/device_layers.h"

namespace mt {
inline namespace MT_REAL_NS {

RouteShape DMoe::Shape(const DeviceBatch& b, int64_t valid) const {
  RouteShape r;
  r.tokens = b.T();
  r.experts = E;
  r.top_k = K;
  r.n_group = n_group;
  r.topk_group = topk_group;
  r.norm_topk = norm_topk;
  r.scaling = scaling;
  r.seq_len = b.S;
  r.valid = valid;
  return r;
}

Tensor DMoe::Forward(const DeviceBatch& b, const Tensor& x, int64_t valid, Saved* s, int64_t* load,
                     double* balance) const {
  Backend& be = *b.be;
  const int64_t T = b.T(), P = T * K;
  const RouteShape shape = Shape(b, valid);
  s->x = x;  // [T, H]
  s->scores = be.Empty({T, E});
  be.LinearForward(x.data<float>(), router->value.data<float>(), s->scores.data<float>(), T, H, E);
  s->topk = be.Empty({T, K}, DType::kI32);
  s->weight = be.Empty({T, K});
  be.RouterForward(s->scores.data<float>(), bias->value.data<float>(), s->scores.data<float>(),
                   s->topk.data<int32_t>(), s->weight.data<float>(), load, shape);

  s->src_token = be.Empty({P}, DType::kI32);
  s->slot_pos = be.Empty({P}, DType::kI32);
  s->offsets = be.Empty({E + 1}, DType::kI32);
  const int32_t* offsets = s->offsets.data<int32_t>();
  be.MoePlanBuild(s->topk.data<int32_t>(), T, K, E,
                  {s->src_token.data<int32_t>(), s->slot_pos.data<int32_t>(),
                   s->offsets.data<int32_t>()});
  s->xp = be.Empty({P, H});
  be.PermuteRows(x.data<float>(), s->xp.data<float>(), s->src_token.data<int32_t>(), P, H);
  s->g = be.Empty({P, F});
  s->u = be.Empty({P, F});
  s->h = be.Empty({P, F});
  s->ye = be.Empty({P, H});
  be.GroupedLinearForward(s->xp.data<float>(), gate_w.data<float>(), s->g.data<float>(), offsets,
                          P, E, H, F);
  be.GroupedLinearForward(s->xp.data<float>(), up_w.data<float>(), s->u.data<float>(), offsets, P,
                          E, H, F);
  be.SwigluForward(s->g.data<float>(), s->u.data<float>(), s->h.data<float>(), P * F);
  be.GroupedLinearForward(s->h.data<float>(), down_w.data<float>(), s->ye.data<float>(), offsets,
                          P, E, F, H);

  Tensor y = be.Empty({T, H});
  be.Combine(s->ye.data<float>(), s->weight.data<float>(), s->slot_pos.data<int32_t>(),
             y.data<float>(), T, K, H);
  if (has_shared) {
    const Tensor sh = shared.Forward(b, x, &s->shared);
    be.Add(sh.data<float>(), y.data<float>(), T * H);
  }
  s->f = be.Empty({b.B, E}, DType::kF64);
  be.BalanceForward(s->scores.data<float>(), s->topk.data<int32_t>(), s->f.data<double>(), balance,
                    shape);
  return y;
}

Tensor DMoe::Backward(const DeviceBatch& b, const Tensor& dy, int64_t valid, double balance_scale,
                      Saved* s) const {
  Backend& be = *b.be;
  const int64_t T = b.T(), P = T * K;
  const int32_t* offsets = s->offsets.data<int32_t>();
  Tensor dx = has_shared ? shared.Backward(b, dy, &s->shared) : be.Empty({T, H});

  // The combine: each slot's share of dy, and d loss / d gate weight.
  Tensor dye = be.Empty({P, H});
  Tensor dweight = be.Empty({T, K}, DType::kF64);
  be.CombineBackward(dy.data<float>(), s->ye.data<float>(), s->weight.data<float>(),
                     s->slot_pos.data<int32_t>(), dye.data<float>(), dweight.data<double>(), T, K,
                     H);
  // The experts, all at once.
  Tensor dh = be.Empty({P, F}), dg = be.Empty({P, F}), du = be.Empty({P, F});
  be.GroupedLinearBackwardInput(dye.data<float>(), down_w.data<float>(), dh.data<float>(), offsets,
                                P, E, F, H, false);
  be.GroupedLinearBackwardWeight(dye.data<float>(), s->h.data<float>(), down_g.data<float>(),
                                 offsets, P, E, F, H);
  be.SwigluBackward(dh.data<float>(), s->g.data<float>(), s->u.data<float>(), dg.data<float>(),
                    du.data<float>(), P * F);
  Tensor dxp = be.Empty({P, H});
  be.GroupedLinearBackwardInput(dg.data<float>(), gate_w.data<float>(), dxp.data<float>(), offsets,
                                P, E, H, F, false);
  be.GroupedLinearBackwardInput(du.data<float>(), up_w.data<float>(), dxp.data<float>(), offsets,
                                P, E, H, F, true);
  be.GroupedLinearBackwardWeight(dg.data<float>(), s->xp.data<float>(), gate_g.data<float>(),
                                 offsets, P, E, H, F);
  be.GroupedLinearBackwardWeight(du.data<float>(), s->xp.data<float>(), up_g.data<float>(),
                                 offsets, P, E, H, F);
  be.UnpermuteAdd(dxp.data<float>(), s->slot_pos.data<int32_t>(), dx.data<float>(), T, K, H);

  // The router: gate weights and balance loss back to the logits, then its GEMM.
  Tensor d_logits = be.Empty({T, E});
  be.RouterBackward(s->scores.data<float>(), s->topk.data<int32_t>(), dweight.data<double>(),
                    s->f.data<double>(), balance_scale, d_logits.data<float>(), Shape(b, valid));
  be.LinearBackwardInput(d_logits.data<float>(), router->value.data<float>(), dx.data<float>(), T,
                         H, E, true);
  be.LinearBackwardWeight(d_logits.data<float>(), s->x.data<float>(), router->grad.data<float>(),
                          T, H, E);
  *s = Saved{};
  return dx;
}

}  // namespace MT_REAL_NS
}  // namespace mt

// trainer/device_moe.cc: DeepSeekMoE on a Backend (device_layers.h): the router, the
// balance statistics, and the routed experts as three grouped GEMMs over the tokens
// permuted by expert (trainer/moe.cc runs one GEMM per expert over gathered rows instead;
// each expert's rows and order of accumulation are the same).
#include "kernels/status.h"
#include "trainer/device_layers.h"

namespace mt {
inline namespace MT_REAL_NS {

DAct GroupedGemms::Store(const Tensor& x) const {
  DAct a;
  if (fp8())
    a.q = be->QuantizeFp8(x.data<float>(), x.dim(0), x.dim(1));
  else
    a.values = x;
  return a;
}

void GroupedGemms::Forward(const DAct& x, const ExpertWeight& w, Tensor* y, const int32_t* offsets,
                           int64_t rows, int64_t E, int64_t K, int64_t N) const {
  if (fp8()) {
    const DAct q = x.quantized() ? x : Store(x.values);
    be->GroupedFp8Forward(q.q, *w.fp8, y->data<float>(), offsets);
  } else if (bf16()) {
    be->GroupedLinearForwardBf16(x.values.data<float>(), *w.bf16, y->data<float>(), offsets, rows,
                                 E, K, N);
  } else {
    be->GroupedLinearForward(x.values.data<float>(), w.values->data<float>(), y->data<float>(),
                             offsets, rows, E, K, N);
  }
}

void GroupedGemms::BackwardInput(const Tensor& dy, const ExpertWeight& w, Tensor* dx,
                                 const int32_t* offsets, int64_t rows, int64_t E, int64_t K,
                                 int64_t N, bool accumulate) const {
  if (fp8())
    be->GroupedFp8BackwardInput(dy.data<float>(), *w.fp8, dx->data<float>(), offsets, rows,
                                accumulate);
  else if (bf16())
    be->GroupedLinearBackwardInputBf16(dy.data<float>(), *w.bf16, dx->data<float>(), offsets, rows,
                                       E, K, N, accumulate);
  else
    be->GroupedLinearBackwardInput(dy.data<float>(), w.values->data<float>(), dx->data<float>(),
                                   offsets, rows, E, K, N, accumulate);
}

void GroupedGemms::BackwardWeight(const Tensor& dy, const DAct& x, Tensor* dw,
                                  const int32_t* offsets, int64_t rows, int64_t E, int64_t K,
                                  int64_t N) const {
  if (fp8())
    be->GroupedFp8BackwardWeight(dy.data<float>(), x.quantized() ? &x.q : nullptr,
                                 x.quantized() ? nullptr : x.values.data<float>(),
                                 dw->data<float>(), offsets, rows, E, K, N);
  else if (bf16())
    be->GroupedLinearBackwardWeightBf16(dy.data<float>(), x.values.data<float>(), dw->data<float>(),
                                        offsets, rows, E, K, N);
  else
    be->GroupedLinearBackwardWeight(dy.data<float>(), x.values.data<float>(), dw->data<float>(),
                                    offsets, rows, E, K, N);
}

const DMoe::Fp8Experts& DMoe::Fp8(const DeviceBatch& b) const {
  return fp8_cache.Of(b, [&] {
    Fp8Experts q;
    q.gate = b.be->QuantizeExpertsFp8(gate_w.data<float>(), E_local, F, H);
    q.up = b.be->QuantizeExpertsFp8(up_w.data<float>(), E_local, F, H);
    q.down = b.be->QuantizeExpertsFp8(down_w.data<float>(), E_local, H, F);
    return q;
  });
}

DMoe::Weights DMoe::KeptWeights(const DeviceBatch& b) const {
  Weights w;
  if (b.fp8()) {
    const Fp8Experts& q = Fp8(b);
    w.gate = {&gate_w, &q.gate, nullptr};
    w.up = {&up_w, &q.up, nullptr};
    w.down = {&down_w, &q.down, nullptr};
  } else if (b.round_bf16()) {
    w.gate = {&gate_w, nullptr, &gate_bf16.Of(b, gate_w)};
    w.up = {&up_w, nullptr, &up_bf16.Of(b, up_w)};
    w.down = {&down_w, nullptr, &down_bf16.Of(b, down_w)};
  } else {
    w.gate = {&gate_w};
    w.up = {&up_w};
    w.down = {&down_w};
  }
  return w;
}

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
  // The router is one of the recipe's BF16 GEMMs (trainer/moe.cc).
  if (b.round_bf16())
    be.LinearForwardBf16(x.data<float>(), router_bf16.Of(b, router->value), s->scores.data<float>(),
                         T, H, E);
  else
    be.LinearForward(x.data<float>(), router->value.data<float>(), s->scores.data<float>(), T, H, E);
  s->topk = be.Empty({T, K}, DType::kI32);
  s->weight = be.Empty({T, K});
  be.RouterForward(s->scores.data<float>(), bias->value.data<float>(), s->scores.data<float>(),
                   s->topk.data<int32_t>(), s->weight.data<float>(), load, shape);

  s->src_token = be.Empty({P}, DType::kI32);
  s->slot_pos = be.Empty({P}, DType::kI32);
  s->offsets = be.Empty({E + 1}, DType::kI32);
  be.MoePlanBuild(
      s->topk.data<int32_t>(), T, K, E,
      {s->src_token.data<int32_t>(), s->slot_pos.data<int32_t>(), s->offsets.data<int32_t>()});
  Tensor xp;  // [T*K,H] the rows by expert; under EP the dispatch gathers its own
  if (parallel()) {
    StartDispatchEp(b, x, s);
  } else {
    xp = be.Empty({P, H});
    be.PermuteRows(x.data<float>(), xp.data<float>(), s->src_token.data<int32_t>(), P, H);
  }
  // The shared expert needs none of the routed experts' work: under EP it runs while the
  // dispatch moves (on a GPU the exchange is on the comm stream).
  Tensor sh;  // [T,H]
  if (has_shared) sh = shared.Forward(b, x, &s->shared);
  if (parallel())
    ExpertsForwardEp(b, s);
  else
    ExpertsForward(b, xp, s);

  Tensor y = be.Empty({T, H});
  be.Combine(s->ye.data<float>(), s->weight.data<float>(), s->slot_pos.data<int32_t>(),
             y.data<float>(), T, K, H);
  if (has_shared) be.Add(sh.data<float>(), y.data<float>(), T * H);
  s->f = be.Empty({b.B, E}, DType::kF64);
  be.BalanceForward(s->scores.data<float>(), s->topk.data<int32_t>(), s->f.data<double>(), balance,
                    shape);
  return y;
}

Tensor DMoe::Backward(const DeviceBatch& b, const Tensor& dy, int64_t valid, double balance_scale,
                      Saved* s) const {
  Backend& be = *b.be;
  const int64_t T = b.T(), P = T * K;
  // The combine: each slot's share of dy, and d loss / d gate weight.
  Tensor dye = be.Empty({P, H});
  Tensor dweight = be.Empty({T, K}, DType::kF64);
  be.CombineBackward(dy.data<float>(), s->ye.data<float>(), s->weight.data<float>(),
                     s->slot_pos.data<int32_t>(), dye.data<float>(), dweight.data<double>(), T, K,
                     H);
  // Under EP the slots' gradients move to their experts' ranks while the shared expert's
  // backward runs, as in the forward.
  if (parallel()) StartCombineBackwardEp(b, dye, s);
  Tensor dx = has_shared ? shared.Backward(b, dy, &s->shared) : be.Empty({T, H});
  if (parallel()) {
    // As the dispatcher's backward sums it (parallel/expert_dispatch.h): a token's rows per
    // expert host, those per host in rank order, then onto the shared expert's gradient.
    const Tensor routed = ExpertsBackwardEp(b, s);  // [T,H]
    be.Add(routed.data<float>(), dx.data<float>(), T * H);
  } else {
    const Tensor dxp = ExpertsBackward(b, dye, s);
    be.UnpermuteAdd(dxp.data<float>(), s->slot_pos.data<int32_t>(), dx.data<float>(), T, K, H);
  }

  // The router: gate weights and balance loss back to the logits, then its GEMM.
  Tensor d_logits = be.Empty({T, E});
  be.RouterBackward(s->scores.data<float>(), s->topk.data<int32_t>(), dweight.data<double>(),
                    s->f.data<double>(), balance_scale, d_logits.data<float>(), Shape(b, valid));
  const float* dl = d_logits.data<float>();
  if (b.round_bf16())
    be.LinearBackwardInputBf16(dl, router_bf16.Of(b, router->value), dx.data<float>(), T, H, E,
                               true);
  else
    be.LinearBackwardInput(dl, router->value.data<float>(), dx.data<float>(), T, H, E, true);
  b.WeightGrad([b, this, d_logits, x = s->x, T] {
    const float* dl = d_logits.data<float>();
    float* dw = router->grad.data<float>();
    if (b.round_bf16())
      b.be->LinearBackwardWeightBf16(dl, x.data<float>(), dw, T, H, E);
    else
      b.be->LinearBackwardWeight(dl, x.data<float>(), dw, T, H, E);
  });
  *s = Saved{};
  return dx;
}

void DMoe::ExpertsForward(const DeviceBatch& b, const Tensor& xp, Saved* s) const {
  Backend& be = *b.be;
  MT_CHECK(E_local == E, "MoE: ", E_local, " local experts of ", E, " without an EP group");
  const int64_t P = xp.dim(0);
  const int32_t* offsets = s->offsets.data<int32_t>();
  const GroupedGemms gg{b.be, b.precision};
  s->xp = gg.Store(xp);
  Tensor g = be.Empty({P, F}), u = be.Empty({P, F});
  s->ye = be.Empty({P, H});
  const Weights w = KeptWeights(b);
  gg.Forward(s->xp, w.gate, &g, offsets, P, E, H, F);
  gg.Forward(s->xp, w.up, &u, offsets, P, E, H, F);
  const Tensor h = SwigluForwardKeep(b, g, u, &s->in, &s->h);
  gg.Forward(DAct{h, {}}, w.down, &s->ye, offsets, P, E, F, H);
  // fp8: each expert's output as the BF16 combine delivers it (trainer/precision.h).
  if (b.fp8()) be.RoundBf16(s->ye.data<float>(), s->ye.data<float>(), P * H);
}

Tensor DMoe::ExpertsBackward(const DeviceBatch& b, const Tensor& dye, Saved* s) const {
  Backend& be = *b.be;
  const int64_t P = dye.dim(0);
  const int32_t* offsets = s->offsets.data<int32_t>();
  const GroupedGemms gg{b.be, b.precision};
  Tensor dh = be.Empty({P, F});
  const Weights w = KeptWeights(b);
  gg.BackwardInput(dye, w.down, &dh, offsets, P, E, F, H, false);
  Tensor du;
  const Tensor dg = SwigluBackwardRecompute(b, dh, s->in, &s->h, &du);
  Tensor dxp = be.Empty({P, H});
  gg.BackwardInput(dg, w.gate, &dxp, offsets, P, E, H, F, false);
  gg.BackwardInput(du, w.up, &dxp, offsets, P, E, H, F, true);
  // The weight gradients hold the plan's offsets themselves: *s goes with the backward.
  b.WeightGrad([gg, this, dye, dg, du, h = s->h, xp = s->xp, off = s->offsets, P] {
    const int32_t* o = off.data<int32_t>();
    gg.BackwardWeight(dye, DAct{h, {}}, &down_g, o, P, E, F, H);
    gg.BackwardWeight(dg, xp, &gate_g, o, P, E, H, F);
    gg.BackwardWeight(du, xp, &up_g, o, P, E, H, F);
  });
  return dxp;
}

}  // namespace MT_REAL_NS
}  // namespace mt

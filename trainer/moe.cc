#include "trainer/moe.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "kernels/moe_route.h"

namespace mt {
inline namespace MT_REAL_NS {

Moe::Moe(ParamStore& ps, const std::string& p, const ModelConfig& m, ExpertDispatcher* dispatcher)
    : H_(m.hidden_size),
      E_(m.n_routed_experts),
      K_(m.num_experts_per_tok),
      n_group_(m.n_group),
      topk_group_(m.topk_group),
      scaling_(m.routed_scaling_factor),
      norm_topk_(m.norm_topk_prob),
      dispatcher_(dispatcher),
      has_shared_(m.n_shared_experts > 0) {
  gate_ = ps.Add(p + "gate.weight", {E_, H_}, Init::kNormal);
  bias_ = ps.Add(p + "gate.e_score_correction_bias", {E_}, Init::kZeros, false,
                 /*trainable=*/false);
  precision_ = &ps.precision();
  int64_t local = E_;
  if (dispatcher_) {
    first_expert_ = dispatcher_->first_local_expert();
    local = dispatcher_->num_local_experts();
  }
  experts_.reserve(local);
  for (int64_t e = first_expert_; e < first_expert_ + local; ++e)
    experts_.emplace_back(ps, p + "experts." + std::to_string(e) + ".", H_, m.moe_intermediate_size,
                          /*expert=*/true);
  if (has_shared_)
    shared_ =
        SwigluMlp(ps, p + "shared_experts.", H_, m.n_shared_experts * m.moe_intermediate_size);
}

// Group-limited top-k on score + bias (kernels/moe_route.h).
void Moe::Route(const Real* scores, int32_t* topk) const {
  GroupLimitedTopK(scores, bias_->value.data<Real>(), E_, K_, n_group_, topk_group_, topk);
}

Tensor Moe::Forward(const Tensor& x, int64_t B, int64_t S, int64_t valid, Saved* s,
                    double* balance_loss, int64_t* load) const {
  const int64_t T = B * S;
  s->x = precision_->StoreBf16Operand(x);
  s->B = B;
  s->S = S;
  s->valid = valid;
  // Router: HF runs it in fp32; DeepSeek-V3's FP8 recipe keeps it a BF16 GEMM (precision.h).
  s->scores = NewMatrix(T, E_);
  Real* sc = s->scores.data<Real>();
  precision_->Bf16LinearForward(s->x, gate_->value.data<Real>(), sc, T, H_, E_);
  for (int64_t i = 0; i < T * E_; ++i) sc[i] = Real(1) / (Real(1) + std::exp(-sc[i]));

  s->topk.assign(T * K_, 0);
  s->weight.assign(T * K_, 0);
  s->slots.assign(E_, {});
  for (int64_t t = 0; t < T; ++t) {
    int32_t* idx = &s->topk[t * K_];
    Route(sc + t * E_, idx);
    GateWeights(sc + t * E_, idx, K_, norm_topk_, scaling_, &s->weight[t * K_]);
    for (int64_t k = 0; k < K_; ++k) s->slots[idx[k]].push_back(t * K_ + k);
  }

  Tensor y = NewMatrix(T, H_);
  if (dispatcher_)
    ExpertsForwardParallel(x, s, &y);
  else
    ExpertsForward(x, s, &y);
  if (has_shared_) ops::Add(shared_.Forward(x, &s->shared).data<Real>(), y.data<Real>(), T * H_);

  // Loads and the sequence-wise balance loss over valid positions (eqs. 17-20).
  s->f.assign(B * E_, 0.0);
  *balance_loss += BalanceStats(sc, s->topk.data(), B, S, valid, E_, K_, s->f.data(), load);
  return y;
}

Tensor Moe::BackwardInput(const Tensor& dy, double balance_grad_scale, Saved* s) const {
  const int64_t B = s->B, S = s->S, T = B * S, valid = s->valid;
  const Real* sc = s->scores.data<Real>();
  Tensor dx = has_shared_ ? shared_.BackwardInput(dy, &s->shared) : NewMatrix(T, H_);

  // d(loss)/d(gate weight) per (token, slot), and the experts' input gradients.
  std::vector<double> dw(T * K_, 0.0);
  if (dispatcher_)
    ExpertsBackwardParallel(dy, s, &dx, &dw);
  else
    ExpertsBackward(dy, s, &dx, &dw);

  // Back through the gate weights and the balance loss to the router's logits.
  s->d_logits = NewMatrix(T, E_);
  Real* dl = s->d_logits.data<Real>();
  RouterLogitGrad(sc, s->topk.data(), dw.data(), s->f.data(), B, S, valid, E_, K_, norm_topk_,
                  scaling_, balance_grad_scale, dl);
  precision_->Bf16LinearBackwardInput(dl, gate_->value.data<Real>(), dx.data<Real>(), T, H_, E_,
                                      /*accumulate=*/true);
  return dx;
}

void Moe::BackwardWeight(Saved* s) const {
  precision_->Bf16LinearBackwardWeight(s->d_logits.data<Real>(), s->x, gate_->grad.data<Real>(),
                                       s->B * s->S, H_, E_);
  if (dispatcher_) {
    BackwardWeightParallel(s);
  } else {
    for (size_t e = 0; e < experts_.size(); ++e)
      if (!s->slots[e].empty()) experts_[e].BackwardWeight(&s->experts[e]);
  }
  if (has_shared_) shared_.BackwardWeight(&s->shared);
  *s = Saved{};
}

// Every expert local: gather each expert's tokens, run, scatter back weighted.
void Moe::ExpertsForward(const Tensor& x, Saved* s, Tensor* y_out) const {
  Tensor& y = *y_out;
  s->expert_out.assign(E_, Tensor());
  s->experts.assign(E_, {});
  for (int64_t e = 0; e < E_; ++e) {
    const auto& slots = s->slots[e];
    if (slots.empty()) continue;
    Tensor xe = NewMatrix(static_cast<int64_t>(slots.size()), H_);
    for (size_t j = 0; j < slots.size(); ++j)
      std::memcpy(xe.data<Real>() + j * H_, x.data<Real>() + (slots[j] / K_) * H_,
                  H_ * sizeof(Real));
    s->expert_out[e] = experts_[e].Forward(xe, &s->experts[e]);
    // fp8: the output as the BF16 combine would deliver it (precision.h), on every layout.
    if (precision_->bf16_expert_outputs()) precision_->RoundToBf16(&s->expert_out[e]);
    const Real* ye = s->expert_out[e].data<Real>();
    for (size_t j = 0; j < slots.size(); ++j)
      ops::Axpy(s->weight[slots[j]], ye + j * H_, y.data<Real>() + (slots[j] / K_) * H_, H_);
  }
}

void Moe::ExpertsBackward(const Tensor& dy, Saved* s, Tensor* dx_out,
                          std::vector<double>* dw_out) const {
  Tensor& dx = *dx_out;
  std::vector<double>& dw = *dw_out;
  for (int64_t e = 0; e < E_; ++e) {
    const auto& slots = s->slots[e];
    if (slots.empty()) continue;
    const int64_t Te = static_cast<int64_t>(slots.size());
    Tensor dye = NewMatrix(Te, H_);
    const Real* ye = s->expert_out[e].data<Real>();
    for (int64_t j = 0; j < Te; ++j) {
      const Real* g = dy.data<Real>() + (slots[j] / K_) * H_;
      double dot = 0;
      for (int64_t c = 0; c < H_; ++c) dot += static_cast<double>(g[c]) * ye[j * H_ + c];
      dw[slots[j]] = dot;
      Real w = s->weight[slots[j]];
      for (int64_t c = 0; c < H_; ++c) dye.data<Real>()[j * H_ + c] = w * g[c];
    }
    Tensor dxe = experts_[e].BackwardInput(dye, &s->experts[e]);
    for (int64_t j = 0; j < Te; ++j)
      ops::Add(dxe.data<Real>() + j * H_, dx.data<Real>() + (slots[j] / K_) * H_, H_);
  }
}

}  // namespace MT_REAL_NS
}  // namespace mt

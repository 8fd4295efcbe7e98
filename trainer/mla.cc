#include "trainer/mla.h"

#include <cstring>

namespace mt {
inline namespace MT_REAL_NS {

// HF builds q_a_layernorm and kv_a_layernorm without an eps argument, so they always use
// the default 1e-6 whatever rms_norm_eps says (this matters for Moonlight's 1e-5).
constexpr double kLatentNormEps = 1e-6;

Mla::Mla(ParamStore& ps, const std::string& p, const ModelConfig& m)
    : H_(m.hidden_size),
      N_(m.num_attention_heads),
      dn_(m.qk_nope_head_dim),
      dr_(m.qk_rope_head_dim),
      dv_(m.v_head_dim),
      rq_(m.q_lora_rank),
      rkv_(m.kv_lora_rank),
      scale_(AttentionSoftmaxScale(m)) {
  const int64_t dqk = dn_ + dr_;
  if (rq_ > 0) {
    q_a_ = Linear(ps, p + "q_a_proj.weight", H_, rq_);
    q_a_norm_ = RmsNorm(ps, p + "q_a_layernorm.weight", rq_, kLatentNormEps);
    q_b_ = Linear(ps, p + "q_b_proj.weight", rq_, N_ * dqk);
  } else {
    q_ = Linear(ps, p + "q_proj.weight", H_, N_ * dqk);
  }
  kv_a_ = Linear(ps, p + "kv_a_proj_with_mqa.weight", H_, rkv_ + dr_);
  kv_a_norm_ = RmsNorm(ps, p + "kv_a_layernorm.weight", rkv_, kLatentNormEps);
  kv_b_ = Linear(ps, p + "kv_b_proj.weight", rkv_, N_ * (dn_ + dv_));
  o_ = Linear(ps, p + "o_proj.weight", N_ * dv_, H_);
}

Tensor Mla::Forward(const Tensor& x, int64_t B, int64_t S, const RopeTables& rope, Saved* s) const {
  const int64_t T = B * S, dqk = dn_ + dr_;
  const PrecisionPolicy& precision = o_.precision();
  s->x = kv_a_.Store(x);  // one copy serves q_a (or q) and kv_a
  // Queries: [T, N*(dn+dr)], per head [nope | rope].
  if (rq_ > 0) {
    s->qa = q_a_.Forward(s->x);
    s->qa_n = q_b_.Store(q_a_norm_.Forward(s->qa, &s->qa_rstd));
    s->q = q_b_.Forward(s->qa_n);
  } else {
    s->q = q_.Forward(s->x);
  }
  ops::RopeForward(s->q.data<Real>(), B, S, N_, dqk, dn_, dr_, rope.cos.data(), rope.sin.data());

  // Compressed KV: [T, r_kv + dr] = [latent | k_rope].
  Tensor ckv = kv_a_.Forward(s->x);
  s->latent = NewMatrix(T, rkv_);
  Tensor k_rope = NewMatrix(T, dr_);  // [T, 1, dr]
  const Real* c = ckv.data<Real>();
  for (int64_t t = 0; t < T; ++t) {
    std::memcpy(s->latent.data<Real>() + t * rkv_, c + t * (rkv_ + dr_), rkv_ * sizeof(Real));
    std::memcpy(k_rope.data<Real>() + t * dr_, c + t * (rkv_ + dr_) + rkv_, dr_ * sizeof(Real));
  }
  ops::RopeForward(k_rope.data<Real>(), B, S, 1, dr_, 0, dr_, rope.cos.data(), rope.sin.data());
  s->latent_n = kv_b_.Store(kv_a_norm_.Forward(s->latent, &s->latent_rstd));
  Tensor kv = kv_b_.Forward(s->latent_n);  // [T, N*(dn+dv)], per head [k_nope | v]

  s->k = Tensor({T, N_, dqk}, kRealDType);
  s->v = Tensor({T, N_, dv_}, kRealDType);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < N_; ++h) {
      const Real* src = kv.data<Real>() + (t * N_ + h) * (dn_ + dv_);
      Real* kd = s->k.data<Real>() + (t * N_ + h) * dqk;
      std::memcpy(kd, src, dn_ * sizeof(Real));
      std::memcpy(kd + dn_, k_rope.data<Real>() + t * dr_, dr_ * sizeof(Real));
      std::memcpy(s->v.data<Real>() + (t * N_ + h) * dv_, src + dn_, dv_ * sizeof(Real));
    }
  }
  // The attention core is a BF16 operator in bf16/fp8: its GEMM operands are rounded.
  precision.RoundToBf16(&s->q);
  precision.RoundToBf16(&s->k);
  precision.RoundToBf16(&s->v);
  s->probs = Tensor({B, N_, S, S}, kRealDType);
  Tensor o = NewMatrix(T, N_ * dv_);
  ops::AttentionForward(s->q.data<Real>(), s->k.data<Real>(), s->v.data<Real>(), o.data<Real>(),
                        s->probs.data<Real>(), B, S, N_, dqk, dv_, scale_);
  s->o = precision.StoreAttentionOutput(o);
  return o_.Forward(o);
}

Tensor Mla::BackwardInput(const Tensor& dy, int64_t B, int64_t S, const RopeTables& rope,
                          Saved* s) const {
  const int64_t T = B * S, dqk = dn_ + dr_;
  s->d_out = dy;
  Tensor d_o = o_.BackwardInput(dy);  // [T, N*dv]
  o_.precision().RoundToBf16(&d_o);    // an attention-core operand
  Tensor dq({T, N_, dqk}, kRealDType), dk({T, N_, dqk}, kRealDType), dv({T, N_, dv_}, kRealDType);
  ops::AttentionBackward(d_o.data<Real>(), s->q.data<Real>(), s->k.data<Real>(), s->v.data<Real>(),
                         s->probs.data<Real>(), dq.data<Real>(), dk.data<Real>(), dv.data<Real>(),
                         B, S, N_, dqk, dv_, scale_);
  ops::RopeBackward(dq.data<Real>(), B, S, N_, dqk, dn_, dr_, rope.cos.data(), rope.sin.data());
  s->d_q = dq.View({T, N_ * dqk});

  // Split dK into the per-head k_nope part (-> kv_b) and the shared rotary key (summed).
  s->d_kv = NewMatrix(T, N_ * (dn_ + dv_));
  Tensor dk_rope = NewMatrix(T, dr_);
  for (int64_t t = 0; t < T; ++t) {
    Real* kr = dk_rope.data<Real>() + t * dr_;
    for (int64_t h = 0; h < N_; ++h) {
      const Real* dks = dk.data<Real>() + (t * N_ + h) * dqk;
      Real* dst = s->d_kv.data<Real>() + (t * N_ + h) * (dn_ + dv_);
      std::memcpy(dst, dks, dn_ * sizeof(Real));
      std::memcpy(dst + dn_, dv.data<Real>() + (t * N_ + h) * dv_, dv_ * sizeof(Real));
      for (int64_t j = 0; j < dr_; ++j) kr[j] += dks[dn_ + j];
    }
  }
  ops::RopeBackward(dk_rope.data<Real>(), B, S, 1, dr_, 0, dr_, rope.cos.data(), rope.sin.data());
  Tensor d_latent_n = kv_b_.BackwardInput(s->d_kv);
  Tensor d_latent = kv_a_norm_.Backward(d_latent_n, s->latent, s->latent_rstd);
  s->d_ckv = NewMatrix(T, rkv_ + dr_);
  for (int64_t t = 0; t < T; ++t) {
    Real* dst = s->d_ckv.data<Real>() + t * (rkv_ + dr_);
    std::memcpy(dst, d_latent.data<Real>() + t * rkv_, rkv_ * sizeof(Real));
    std::memcpy(dst + rkv_, dk_rope.data<Real>() + t * dr_, dr_ * sizeof(Real));
  }
  Tensor dx = kv_a_.BackwardInput(s->d_ckv);
  if (rq_ > 0) {
    Tensor d_qa_n = q_b_.BackwardInput(s->d_q);
    s->d_qa = q_a_norm_.Backward(d_qa_n, s->qa, s->qa_rstd);
    q_a_.BackwardInput(s->d_qa.data<Real>(), dx.data<Real>(), T, /*accumulate=*/true);
  } else {
    q_.BackwardInput(s->d_q.data<Real>(), dx.data<Real>(), T, /*accumulate=*/true);
  }
  return dx;
}

void Mla::BackwardWeight(Saved* s) const {
  o_.BackwardWeight(s->d_out, s->o);
  kv_b_.BackwardWeight(s->d_kv, s->latent_n);
  kv_a_.BackwardWeight(s->d_ckv, s->x);
  if (rq_ > 0) {
    q_b_.BackwardWeight(s->d_q, s->qa_n);
    q_a_.BackwardWeight(s->d_qa, s->x);
  } else {
    q_.BackwardWeight(s->d_q, s->x);
  }
  *s = Saved{};  // the micro-batch is done with this layer: free its activations
}

}  // namespace MT_REAL_NS
}  // namespace mt

// trainer/device_mla.cc: multi-head latent attention on a Backend (device_layers.h), the
// steps of trainer/mla.cc with the per-token copies as strided 2D copies.
#include "trainer/device_layers.h"

namespace mt {
inline namespace MT_REAL_NS {

Tensor DMla::Forward(const DeviceBatch& b, const DAct& x, Saved* s) const {
  Backend& be = *b.be;
  const int64_t T = b.T(), dqk = dn + dr, B = b.B, S = b.S;
  s->x = x;  // [T, H]: one copy serves q_a (or q) and kv_a
  // Queries [T, N*dqk], per head [nope | rope].
  if (rq > 0) {
    s->qa = q_a.Forward(b, s->x);                                           // [T, rq]
    s->qa_n = q_a_norm.Store(b, s->qa, &s->qa_rstd);                        // [T, rq]
    s->q = q_b.Forward(b, s->qa_n);
  } else {
    s->q = q.Forward(b, s->x);
  }
  be.RopeForward(s->q.data<float>(), B, S, N, dqk, dn, dr, b.cos, b.sin);

  // Compressed KV [T, rkv + dr] = [latent | k_rope].
  const Tensor ckv = kv_a.Forward(b, s->x);
  s->latent = be.Empty({T, rkv});
  Tensor k_rope = be.Empty({T, dr});  // [T, 1, dr]: one rotary key for all heads
  be.Copy2D(ckv.data<float>(), rkv + dr, s->latent.data<float>(), rkv, T, rkv);
  be.Copy2D(ckv.data<float>() + rkv, rkv + dr, k_rope.data<float>(), dr, T, dr);
  be.RopeForward(k_rope.data<float>(), B, S, 1, dr, 0, dr, b.cos, b.sin);
  s->latent_n = kv_a_norm.Store(b, s->latent, &s->latent_rstd);  // [T, rkv]
  const Tensor kv = kv_b.Forward(b, s->latent_n);  // [T*N, dn + dv], per head [k_nope | v]

  s->k = be.Empty({T, N, dqk});
  s->v = be.Empty({T, N, dv});
  be.Copy2D(kv.data<float>(), dn + dv, s->k.data<float>(), dqk, T * N, dn);
  be.Broadcast2D(k_rope.data<float>(), dr, s->k.data<float>() + dn, N * dqk, dqk, N, T, dr);
  be.Copy2D(kv.data<float>() + dn, dn + dv, s->v.data<float>(), dv, T * N, dv);

  if (b.round_bf16()) {  // the attention core is a BF16 operator: its operands are rounded
    for (Tensor* t : {&s->q, &s->k, &s->v}) be.RoundBf16(t->data<float>(), t->data<float>(), t->numel());
  }
  s->o = be.Empty({T, N * dv});
  // The BF16 variants let a GPU backend run the core in BF16 (cuDNN's fused SDPA); on the
  // CPU they are the FP32 ops on the rounded operands.
  if (b.round_bf16()) {
    be.AttentionForwardBf16(s->q.data<float>(), s->k.data<float>(), s->v.data<float>(),
                            s->o.data<float>(), &s->attn, B, S, N, dqk, dv, scale);
  } else {
    be.AttentionForward(s->q.data<float>(), s->k.data<float>(), s->v.data<float>(),
                        s->o.data<float>(), &s->attn, B, S, N, dqk, dv, scale);
  }
  return o.Forward(b, s->o);  // [T, H]
}

Tensor DMla::Backward(const DeviceBatch& b, const Tensor& dy, Saved* s) const {
  Backend& be = *b.be;
  const int64_t T = b.T(), dqk = dn + dr, B = b.B, S = b.S;
  Tensor d_o;  // [T, N*dv]
  o.BackwardInput(b, dy, &d_o, false);
  // o_proj's Wgrad input: the attention output as kept, in fp8 the recipe's E5M6 with
  // power-of-two 1x128 scales (trainer/precision.h), else the values (rounded by a BF16
  // GEMM).
  DAct o_kept{s->o, {}};
  if (b.fp8()) {
    o_kept.values = be.Empty(s->o.shape());
    be.RoundE5M6(s->o.data<float>(), o_kept.values.data<float>(), T, N * dv);
  }
  o.BackwardWeight(b, dy, o_kept);
  if (b.round_bf16()) be.RoundBf16(d_o.data<float>(), d_o.data<float>(), d_o.numel());  // core
  Tensor dq = be.Empty({T, N * dqk}), dk = be.Empty({T, N, dqk}), dvt = be.Empty({T, N, dv});
  if (b.round_bf16()) {
    be.AttentionBackwardBf16(d_o.data<float>(), s->q.data<float>(), s->k.data<float>(),
                             s->v.data<float>(), s->o.data<float>(), s->attn, dq.data<float>(),
                             dk.data<float>(), dvt.data<float>(), B, S, N, dqk, dv, scale);
  } else {
    be.AttentionBackward(d_o.data<float>(), s->q.data<float>(), s->k.data<float>(),
                         s->v.data<float>(), s->o.data<float>(), s->attn, dq.data<float>(),
                         dk.data<float>(), dvt.data<float>(), B, S, N, dqk, dv, scale);
  }
  be.RopeBackward(dq.data<float>(), B, S, N, dqk, dn, dr, b.cos, b.sin);

  // dK splits into each head's k_nope part (-> kv_b) and the shared rotary key, summed
  // over the heads in head order (as trainer/mla.cc).
  Tensor d_kv = be.Empty({T, N * (dn + dv)});
  be.Copy2D(dk.data<float>(), dqk, d_kv.data<float>(), dn + dv, T * N, dn);
  be.Copy2D(dvt.data<float>(), dv, d_kv.data<float>() + dn, dn + dv, T * N, dv);
  Tensor dk_rope = be.Empty({T, dr});
  be.SumRepeats2D(dk.data<float>() + dn, N * dqk, dqk, N, dk_rope.data<float>(), dr, T, dr);
  be.RopeBackward(dk_rope.data<float>(), B, S, 1, dr, 0, dr, b.cos, b.sin);

  Tensor d_latent_n;  // [T, rkv]
  kv_b.Backward(b, d_kv, s->latent_n, &d_latent_n, false);
  const Tensor d_latent = kv_a_norm.Backward(b, d_latent_n, s->latent, s->latent_rstd);
  Tensor d_ckv = be.Empty({T, rkv + dr});
  be.Copy2D(d_latent.data<float>(), rkv, d_ckv.data<float>(), rkv + dr, T, rkv);
  be.Copy2D(dk_rope.data<float>(), dr, d_ckv.data<float>() + rkv, rkv + dr, T, dr);
  Tensor dx;  // [T, H]
  kv_a.Backward(b, d_ckv, s->x, &dx, false);
  if (rq > 0) {
    Tensor d_qa_n;  // [T, rq]
    q_b.Backward(b, dq, s->qa_n, &d_qa_n, false);
    const Tensor d_qa = q_a_norm.Backward(b, d_qa_n, s->qa, s->qa_rstd);
    q_a.Backward(b, d_qa, s->x, &dx, true);
  } else {
    q.Backward(b, dq, s->x, &dx, true);
  }
  *s = Saved{};
  return dx;
}

}  // namespace MT_REAL_NS
}  // namespace mt

// trainer/activation_memory.cc: what each module's Saved struct holds, field by field.
#include "trainer/activation_memory.h"

namespace mt {
inline namespace MT_REAL_NS {

void CountSaved(const SwigluMlp::Saved& s, ActivationCounter* c) {
  for (const StoredActivation* a : {&s.x, &s.g, &s.u, &s.h}) c->Add(*a);
  for (const Tensor* t : {&s.dy, &s.dg, &s.du}) c->Add(*t);
}

void CountSaved(const Mla::Saved& s, ActivationCounter* c) {
  for (const StoredActivation* a : {&s.x, &s.qa_n, &s.latent_n, &s.o}) c->Add(*a);
  for (const Tensor* t : {&s.qa, &s.qa_rstd, &s.latent, &s.latent_rstd, &s.q, &s.k, &s.v, &s.probs,
                          &s.d_out, &s.d_q, &s.d_qa, &s.d_kv, &s.d_ckv})
    c->Add(*t);
}

void CountSaved(const Moe::Saved& s, ActivationCounter* c) {
  c->Add(s.x);
  c->Add(s.scores);
  c->Add(s.topk);
  c->Add(s.weight);
  c->Add(s.slots);
  for (const Tensor& t : s.expert_out) c->Add(t);
  for (const SwigluMlp::Saved& e : s.experts) CountSaved(e, c);
  CountSaved(s.shared, c);
  c->Add(s.d_logits);
  c->Add(s.f);
}

void CountSaved(const DecoderLayer::Saved& s, ActivationCounter* c) {
  for (const Tensor* t : {&s.x, &s.a_rstd, &s.x1, &s.b_rstd}) c->Add(*t);
  CountSaved(s.attn, c);
  CountSaved(s.mlp, c);
  CountSaved(s.moe, c);
}

}  // namespace MT_REAL_NS
}  // namespace mt

#include "trainer/model.h"

#include <algorithm>
#include <cstring>

#include "trainer/activation_memory.h"

namespace mt {
inline namespace MT_REAL_NS {

struct Model::MtpModule {
  struct Saved {
    Tensor e, e_rstd;       // [T, H] embedded shifted tokens, enorm's rstd [T]
    Tensor h_rstd;          // [T] hnorm's rstd
    StoredActivation cat;   // [T, 2H] = [enorm(e) | hnorm(h_{k-1})], eh_proj's input
    DecoderLayer::Saved layer;
    Tensor out, out_rstd;            // [T, H] h_k, shared_head.norm's rstd [T]
    std::vector<int32_t> input_ids;  // [T]
  };
  MtpModule(ParamStore& ps, int64_t index, const ModelConfig& m)
      : enorm(ps, Prefix(index) + "enorm.weight", m.hidden_size, m.rms_norm_eps),
        hnorm(ps, Prefix(index) + "hnorm.weight", m.hidden_size, m.rms_norm_eps),
        eh_proj(ps, Prefix(index) + "eh_proj.weight", 2 * m.hidden_size, m.hidden_size),
        layer(ps, index, m),
        head_norm(ps, Prefix(index) + "shared_head.norm.weight", m.hidden_size, m.rms_norm_eps) {}
  static std::string Prefix(int64_t index) { return "model.layers." + std::to_string(index) + "."; }

  RmsNorm enorm, hnorm;
  Linear eh_proj;
  DecoderLayer layer;
  RmsNorm head_norm;
  Saved saved;
};

Model::Model(const ModelConfig& m, uint64_t seed, Precision precision)
    : m_(m),
      precision_(std::make_unique<PrecisionPolicy>(precision)),
      params_(std::make_unique<ParamStore>(seed, m.initializer_range)) {
  ParamStore& ps = *params_;
  ps.set_precision(precision_.get());
  embed_ = ps.Add("model.embed_tokens.weight", {m.vocab_size, m.hidden_size}, Init::kNormal);
  for (int64_t i = 0; i < m.num_hidden_layers; ++i)
    layers_.push_back(std::make_unique<DecoderLayer>(ps, i, m));
  final_norm_ = RmsNorm(ps, "model.norm.weight", m.hidden_size, m.rms_norm_eps);
  head_ = ps.Add("lm_head.weight", {m.vocab_size, m.hidden_size}, Init::kNormal);
  for (int64_t k = 0; k < m.num_nextn_predict_layers; ++k)
    mtp_.push_back(std::make_unique<MtpModule>(ps, m.num_hidden_layers + k, m));
  for (auto& l : layers_)
    if (l->is_moe()) moe_layers_.push_back(l->moe());
  for (auto& t : mtp_)
    if (t->layer.is_moe()) moe_layers_.push_back(t->layer.moe());
}

Model::~Model() = default;

const RopeTables& Model::Rope(int64_t S) {
  if (!rope_ || rope_->seq_len < S) rope_ = std::make_unique<RopeTables>(MakeRopeTables(m_, S));
  return *rope_;
}

namespace {

// The embedding is a BF16 operator in bf16/fp8: its rows come out BF16-rounded.
Tensor Embed(const Param* table, const std::vector<int32_t>& ids, int64_t H,
             const PrecisionPolicy& precision) {
  Tensor x = NewMatrix(static_cast<int64_t>(ids.size()), H);
  ops::EmbeddingForward(ids.data(), table->value.data<Real>(), x.data<Real>(),
                        static_cast<int64_t>(ids.size()), H);
  precision.RoundToBf16(&x);
  return x;
}

// Cross-entropy through the (shared) head, in row chunks so no full [T, V] logits tensor
// is ever held. h [T, H] is the normed hidden state, labels [T] (< 0 = left out). Returns
// the summed loss; with dh != nullptr, dh = d(coeff * mean loss)/dh and the head's
// gradient accumulates. The head is a BF16 GEMM in bf16/fp8: h, the weight and the logits'
// gradient are rounded to BF16, accumulation and the softmax stay FP32.
double HeadLoss(Param* head, const Tensor& h_in, const std::vector<int32_t>& labels,
                double coeff, Tensor* dh, const PrecisionPolicy& precision) {
  constexpr int64_t kChunk = 256;
  const int64_t T = h_in.dim(0), H = h_in.dim(1), V = head->value.dim(0);
  int64_t count = 0;
  for (int32_t l : labels) count += l >= 0;
  if (count == 0) return 0;
  const Real scale = static_cast<Real>(coeff / count);
  const Tensor h = precision.Bf16Operand(h_in), w = precision.Bf16Operand(head->value);
  Tensor logits = NewMatrix(std::min(kChunk, T), V);
  double loss = 0;
  for (int64_t r0 = 0; r0 < T; r0 += kChunk) {
    const int64_t rows = std::min(kChunk, T - r0);
    const Real* hr = h.data<Real>() + r0 * H;
    ops::LinearForward(hr, w.data<Real>(), logits.data<Real>(), rows, H, V);
    loss += ops::CrossEntropyForwardBackward(logits.data<Real>(), labels.data() + r0, rows, V,
                                             scale, static_cast<Real*>(nullptr));
    if (dh) {
      precision.RoundToBf16(logits.data<Real>(), rows * V);
      ops::LinearBackwardInput(logits.data<Real>(), w.data<Real>(),
                               dh->data<Real>() + r0 * H, rows, H, V, /*accumulate=*/false);
      ops::LinearBackwardWeight(logits.data<Real>(), hr, head->grad.data<Real>(), rows, H, V);
    }
  }
  return loss / count;
}

}  // namespace

Losses Model::Run(const int32_t* tokens, int64_t B, int64_t S, const ObjectiveWeights& w,
                  double grad_scale, bool backward, std::vector<std::vector<int64_t>>* loads) {
  const int64_t T = B * S, H = m_.hidden_size, D = static_cast<int64_t>(mtp_.size());
  const RopeTables& rope = Rope(S);
  const double mtp_coeff = D > 0 ? w.mtp_lambda / D : 0.0;
  std::vector<MoeStats> stats(moe_layers_.size());
  for (auto& st : stats) st.load.assign(m_.n_routed_experts, 0);

  // ---- forward: main model
  std::vector<int32_t> ids(T), labels(T);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < S; ++i) {
      ids[b * S + i] = tokens[b * (S + 1) + i];
      labels[b * S + i] = tokens[b * (S + 1) + i + 1];
    }
  std::vector<DecoderLayer::Saved> saved(layers_.size());
  Tensor x = Embed(embed_, ids, H, *precision_);
  size_t moe_i = 0;
  for (size_t l = 0; l < layers_.size(); ++l) {
    MoeStats* st = layers_[l]->is_moe() ? &stats[moe_i++] : nullptr;
    x = layers_[l]->Forward(x, B, S, S, rope, &saved[l], st);
  }
  Tensor final_rstd;
  Tensor h0 = final_norm_.Forward(x, &final_rstd);
  Losses out;
  out.tokens = T;
  Tensor dh0 = backward ? NewMatrix(T, H) : Tensor();
  out.main = HeadLoss(head_, h0, labels, grad_scale, backward ? &dh0 : nullptr, *precision_);

  // ---- forward: MTP modules, each with its own head loss (backward of the head at once)
  std::vector<Tensor> dh_out(D);  // gradient w.r.t. each module's output h_k from its head
  Tensor h_prev = h0;
  for (int64_t k = 1; k <= D; ++k) {
    MtpModule& mod = *mtp_[k - 1];
    auto& s = mod.saved;
    s.input_ids.assign(T, 0);
    std::vector<int32_t> mtp_labels(T, -1);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < S; ++i) {
        if (i + k <= S) s.input_ids[b * S + i] = tokens[b * (S + 1) + i + k];
        if (i + k + 1 <= S) mtp_labels[b * S + i] = tokens[b * (S + 1) + i + k + 1];
      }
    s.e = Embed(embed_, s.input_ids, H, *precision_);
    const Tensor e_n = mod.enorm.Forward(s.e, &s.e_rstd);
    const Tensor h_n = mod.hnorm.Forward(h_prev, &s.h_rstd);
    Tensor cat = NewMatrix(T, 2 * H);
    for (int64_t t = 0; t < T; ++t) {
      std::memcpy(cat.data<Real>() + t * 2 * H, e_n.data<Real>() + t * H, H * sizeof(Real));
      std::memcpy(cat.data<Real>() + t * 2 * H + H, h_n.data<Real>() + t * H, H * sizeof(Real));
    }
    s.cat = mod.eh_proj.Store(cat);
    Tensor xin = mod.eh_proj.Forward(s.cat);
    MoeStats* st = mod.layer.is_moe() ? &stats[moe_i++] : nullptr;
    s.out = mod.layer.Forward(xin, B, S, S - k, rope, &s.layer, st);
    const Tensor out_n = mod.head_norm.Forward(s.out, &s.out_rstd);
    Tensor d_out_n = backward ? NewMatrix(T, H) : Tensor();
    out.mtp.push_back(HeadLoss(head_, out_n, mtp_labels, grad_scale * mtp_coeff,
                               backward ? &d_out_n : nullptr, *precision_));
    if (backward) dh_out[k - 1] = mod.head_norm.Backward(d_out_n, s.out, s.out_rstd);
    h_prev = s.out;
  }

  // The peak of this micro-batch's activation memory: every Saved struct is full.
  ActivationCounter held;
  for (const auto& s : saved) CountSaved(s, &held);
  for (const auto& t : mtp_) {
    const MtpModule::Saved& s = t->saved;
    for (const Tensor* x : {&s.e, &s.e_rstd, &s.h_rstd, &s.out, &s.out_rstd}) held.Add(*x);
    held.Add(s.cat);
    CountSaved(s.layer, &held);
    held.Add(s.input_ids);
  }
  activation_bytes_ = held.total();

  for (const MoeStats& st : stats) out.balance += st.balance_loss;
  out.total = out.main + w.balance_alpha * out.balance;
  for (double l : out.mtp) out.total += mtp_coeff * l;
  if (loads) {
    loads->resize(stats.size());
    for (size_t i = 0; i < stats.size(); ++i) {
      (*loads)[i].resize(m_.n_routed_experts, 0);
      for (int64_t e = 0; e < m_.n_routed_experts; ++e) (*loads)[i][e] += stats[i].load[e];
    }
  }
  if (!backward) {
    for (auto& t : mtp_) t->saved = {};
    return out;
  }

  // ---- backward: MTP modules last to first; each passes a gradient to h_{k-1}
  const double bal_scale = grad_scale * w.balance_alpha;
  Tensor dh_next;  // d loss / d h_k from module k+1
  for (int64_t k = D; k >= 1; --k) {
    MtpModule& mod = *mtp_[k - 1];
    auto& s = mod.saved;
    Tensor dh = dh_out[k - 1];
    if (dh_next.defined()) ops::Add(dh_next.data<Real>(), dh.data<Real>(), dh.numel());
    Tensor dxin = mod.layer.BackwardInput(dh, B, S, rope, bal_scale, &s.layer);
    mod.layer.BackwardWeight(&s.layer);
    Tensor dcat = mod.eh_proj.BackwardInput(dxin);
    mod.eh_proj.BackwardWeight(dxin, s.cat);
    Tensor de_n = NewMatrix(T, H), dh_n = NewMatrix(T, H);
    for (int64_t t = 0; t < T; ++t) {
      std::memcpy(de_n.data<Real>() + t * H, dcat.data<Real>() + t * 2 * H, H * sizeof(Real));
      std::memcpy(dh_n.data<Real>() + t * H, dcat.data<Real>() + t * 2 * H + H, H * sizeof(Real));
    }
    Tensor de = mod.enorm.Backward(de_n, s.e, s.e_rstd);
    ops::EmbeddingBackward(s.input_ids.data(), de.data<Real>(), embed_->grad.data<Real>(), T, H);
    const Tensor& h_in = k == 1 ? h0 : mtp_[k - 2]->saved.out;
    dh_next = mod.hnorm.Backward(dh_n, h_in, s.h_rstd);
    s = {};
  }
  if (dh_next.defined()) ops::Add(dh_next.data<Real>(), dh0.data<Real>(), dh0.numel());

  // ---- backward: main model
  Tensor dx = final_norm_.Backward(dh0, x, final_rstd);
  for (size_t l = layers_.size(); l-- > 0;) {
    dx = layers_[l]->BackwardInput(dx, B, S, rope, bal_scale, &saved[l]);
    layers_[l]->BackwardWeight(&saved[l]);
  }
  ops::EmbeddingBackward(ids.data(), dx.data<Real>(), embed_->grad.data<Real>(), T, H);
  return out;
}

Losses Model::ForwardBackward(const int32_t* tokens, int64_t B, int64_t S,
                              const ObjectiveWeights& w, double grad_scale,
                              std::vector<std::vector<int64_t>>* loads) {
  return Run(tokens, B, S, w, grad_scale, /*backward=*/true, loads);
}

Losses Model::Evaluate(const int32_t* tokens, int64_t B, int64_t S, const ObjectiveWeights& w) {
  return Run(tokens, B, S, w, 0.0, /*backward=*/false, nullptr);
}

int64_t Model::MeasureActivationBytes(int64_t B, int64_t S) {
  const std::vector<int32_t> tokens(static_cast<size_t>(B * (S + 1)), 0);
  Evaluate(tokens.data(), B, S, ObjectiveWeights{});
  return activation_bytes_;
}

std::vector<float> Model::NextTokenLogits(const int32_t* tokens, int64_t S) {
  const int64_t H = m_.hidden_size, V = m_.vocab_size;
  const RopeTables& rope = Rope(S);
  std::vector<int32_t> ids(tokens, tokens + S);
  Tensor x = Embed(embed_, ids, H, *precision_);
  MoeStats scratch;
  scratch.load.assign(m_.n_routed_experts, 0);
  for (auto& layer : layers_) {
    DecoderLayer::Saved s;
    x = layer->Forward(x, 1, S, S, rope, &s, &scratch);
  }
  Tensor rstd;
  Tensor h = final_norm_.Forward(x, &rstd);
  std::vector<Real> logits(V);
  const Tensor last = precision_->Bf16Operand(h.View({S, H}));
  const Tensor w = precision_->Bf16Operand(head_->value);
  ops::LinearForward(last.data<Real>() + (S - 1) * H, w.data<Real>(), logits.data(), 1, H, V);
  return std::vector<float>(logits.begin(), logits.end());
}

}  // namespace MT_REAL_NS
}  // namespace mt

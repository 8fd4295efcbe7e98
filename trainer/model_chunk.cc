#include "trainer/model_chunk.h"

#include <algorithm>
#include <cstring>

#include "trainer/activation_memory.h"

namespace mt {
inline namespace MT_REAL_NS {

struct ModelChunk::MtpModule {
  struct Saved {
    Tensor e, e_rstd;      // [T, H] embedded shifted tokens, enorm's rstd [T]
    Tensor h_rstd;         // [T] hnorm's rstd
    StoredActivation cat;  // [T, 2H] = [enorm(e) | hnorm(h_{k-1})], eh_proj's input
    DecoderLayer::Saved layer;
    Tensor out, out_rstd;            // [T, H] h_k, shared_head.norm's rstd [T]
    std::vector<int32_t> input_ids;  // [T]
    Tensor d_out;                    // [T, H] d loss / d h_k from this module's head
  };
  MtpModule(ParamStore& ps, int64_t index, const ModelConfig& m, ExpertDispatcher* dispatcher)
      : enorm(ps, Prefix(index) + "enorm.weight", m.hidden_size, m.rms_norm_eps),
        hnorm(ps, Prefix(index) + "hnorm.weight", m.hidden_size, m.rms_norm_eps),
        eh_proj(ps, Prefix(index) + "eh_proj.weight", 2 * m.hidden_size, m.hidden_size),
        layer(ps, index, m, dispatcher),
        head_norm(ps, Prefix(index) + "shared_head.norm.weight", m.hidden_size, m.rms_norm_eps) {}
  static std::string Prefix(int64_t index) { return "model.layers." + std::to_string(index) + "."; }

  RmsNorm enorm, hnorm;
  Linear eh_proj;
  DecoderLayer layer;
  RmsNorm head_norm;
};

// What one micro-batch leaves between its forward and its backward passes.
struct ModelChunk::Stash {
  int64_t B = 0, S = 0;
  double grad_scale = 0, balance_alpha = 0;
  std::vector<int32_t> ids;                 // [T] first stage: the embedded tokens
  std::vector<DecoderLayer::Saved> layers;  // [this stage's layers]
  Tensor x_last, final_rstd, h0, dh0;       // last stage: model.norm's input, rstd, output,
                                            // and d loss / d h0 from the main head
  std::vector<MtpModule::Saved> mtp;        // [D] last stage
  Tensor dx_embed;                          // [T, H] first stage: the embedding's gradient
};

ModelChunk::ModelChunk(ParamStore& ps, const ModelConfig& m, const StageSpec& stage,
                       ExpertDispatcher* dispatcher)
    : m_(m), stage_(stage), precision_(&ps.precision()) {
  if (stage.has_embedding(m))
    embed_ =
        ps.AddShared("model.embed_tokens.weight", {m.vocab_size, m.hidden_size}, Init::kNormal);
  for (int64_t i = stage.first_layer; i < stage.end_layer; ++i) {
    layers_.push_back(std::make_unique<DecoderLayer>(ps, i, m, dispatcher));
    if (layers_.back()->is_moe()) {
      moe_layers_.push_back(layers_.back()->moe());
      moe_indices_.push_back(MoeLayerIndex(m, i));
    }
  }
  if (stage.last()) {
    final_norm_ = RmsNorm(ps, "model.norm.weight", m.hidden_size, m.rms_norm_eps);
    head_ = ps.Add("lm_head.weight", {m.vocab_size, m.hidden_size}, Init::kNormal);
    for (int64_t k = 0; k < m.num_nextn_predict_layers; ++k) {
      const int64_t index = m.num_hidden_layers + k;
      mtp_.push_back(std::make_unique<MtpModule>(ps, index, m, dispatcher));
      if (mtp_.back()->layer.is_moe()) {
        moe_layers_.push_back(mtp_.back()->layer.moe());
        moe_indices_.push_back(MoeLayerIndex(m, index));
      }
    }
  }
}

ModelChunk::~ModelChunk() = default;

const RopeTables& ModelChunk::Rope(int64_t S) {
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
double HeadLoss(Param* head, const Tensor& h_in, const std::vector<int32_t>& labels, double coeff,
                Tensor* dh, const PrecisionPolicy& precision) {
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
      ops::LinearBackwardInput(logits.data<Real>(), w.data<Real>(), dh->data<Real>() + r0 * H, rows,
                               H, V, /*accumulate=*/false);
      ops::LinearBackwardWeight(logits.data<Real>(), hr, head->grad.data<Real>(), rows, H, V);
    }
  }
  return loss / count;
}

}  // namespace

Tensor ModelChunk::Forward(int id, const MicroBatch& mb, const Tensor& x_in,
                           const ObjectiveWeights& w, double grad_scale, bool backward,
                           Losses* losses, std::vector<std::vector<int64_t>>* loads) {
  const int64_t B = mb.B, S = mb.S, T = B * S, H = m_.hidden_size;
  const int64_t D = static_cast<int64_t>(mtp_.size());
  const int32_t* tokens = mb.tokens;  // [B, S + 1]
  const RopeTables& rope = Rope(S);
  auto owned = std::make_unique<Stash>();
  Stash& st = *owned;
  st.B = B;
  st.S = S;
  st.grad_scale = grad_scale;
  st.balance_alpha = w.balance_alpha;
  std::vector<MoeStats> stats(moe_layers_.size());
  for (auto& s : stats) s.load.assign(m_.n_routed_experts, 0);

  // ---- decoder layers of this stage
  Tensor x;
  if (stage_.first()) {
    st.ids.resize(T);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < S; ++i) st.ids[b * S + i] = tokens[b * (S + 1) + i];
    x = Embed(embed_, st.ids, H, *precision_);
  } else {
    x = x_in;
  }
  st.layers.resize(layers_.size());
  size_t moe_i = 0;
  for (size_t l = 0; l < layers_.size(); ++l) {
    MoeStats* s = layers_[l]->is_moe() ? &stats[moe_i++] : nullptr;
    x = layers_[l]->Forward(x, B, S, S, rope, &st.layers[l], s);
  }

  Tensor out;
  if (!stage_.last()) {
    out = x;
  } else {
    // ---- main head
    const double mtp_coeff = D > 0 ? w.mtp_lambda / D : 0.0;
    std::vector<int32_t> labels(T);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < S; ++i) labels[b * S + i] = tokens[b * (S + 1) + i + 1];
    st.x_last = x;
    st.h0 = final_norm_.Forward(x, &st.final_rstd);
    losses->tokens = T;
    if (backward) st.dh0 = NewMatrix(T, H);
    losses->main =
        HeadLoss(head_, st.h0, labels, grad_scale, backward ? &st.dh0 : nullptr, *precision_);

    // ---- MTP modules, each with its own head loss (backward of the head at once)
    losses->mtp.assign(D, 0.0);
    st.mtp.resize(D);
    Tensor h_prev = st.h0;
    for (int64_t k = 1; k <= D; ++k) {
      MtpModule& mod = *mtp_[k - 1];
      auto& s = st.mtp[k - 1];
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
      MoeStats* ms = mod.layer.is_moe() ? &stats[moe_i++] : nullptr;
      s.out = mod.layer.Forward(xin, B, S, S - k, rope, &s.layer, ms);
      const Tensor out_n = mod.head_norm.Forward(s.out, &s.out_rstd);
      Tensor d_out_n = backward ? NewMatrix(T, H) : Tensor();
      losses->mtp[k - 1] = HeadLoss(head_, out_n, mtp_labels, grad_scale * mtp_coeff,
                                    backward ? &d_out_n : nullptr, *precision_);
      if (backward) s.d_out = mod.head_norm.Backward(d_out_n, s.out, s.out_rstd);
      h_prev = s.out;
    }
  }

  // The peak of this micro-batch's activation memory: every Saved struct is full.
  ActivationCounter held;
  for (const auto& s : st.layers) CountSaved(s, &held);
  for (const auto& s : st.mtp) {
    for (const Tensor* t : {&s.e, &s.e_rstd, &s.h_rstd, &s.out, &s.out_rstd}) held.Add(*t);
    held.Add(s.cat);
    CountSaved(s.layer, &held);
    held.Add(s.input_ids);
  }
  activation_bytes_ = held.total();

  for (size_t i = 0; i < stats.size(); ++i) {
    losses->balance += stats[i].balance_loss;
    if (!loads) continue;
    auto& l = (*loads)[moe_indices_[i]];
    l.resize(m_.n_routed_experts, 0);
    for (int64_t e = 0; e < m_.n_routed_experts; ++e) l[e] += stats[i].load[e];
  }
  if (backward) stash_[id] = std::move(owned);
  return out;
}

Tensor ModelChunk::BackwardInput(int id, const Tensor& dy) {
  auto it = stash_.find(id);
  MT_CHECK(it != stash_.end(), "BackwardInput of micro-batch ", id, " without its forward");
  Stash& st = *it->second;
  const int64_t B = st.B, S = st.S, T = B * S, H = m_.hidden_size;
  const int64_t D = static_cast<int64_t>(mtp_.size());
  const RopeTables& rope = Rope(S);
  const double bal_scale = st.grad_scale * st.balance_alpha;

  Tensor dx;
  if (stage_.last()) {
    // ---- MTP modules last to first; each passes a gradient to h_{k-1}
    Tensor dh_next;  // d loss / d h_k from module k+1
    for (int64_t k = D; k >= 1; --k) {
      MtpModule& mod = *mtp_[k - 1];
      auto& s = st.mtp[k - 1];
      Tensor dh = s.d_out;
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
      const Tensor& h_in = k == 1 ? st.h0 : st.mtp[k - 2].out;
      dh_next = mod.hnorm.Backward(dh_n, h_in, s.h_rstd);
      s = {};
    }
    if (dh_next.defined()) ops::Add(dh_next.data<Real>(), st.dh0.data<Real>(), st.dh0.numel());
    dx = final_norm_.Backward(st.dh0, st.x_last, st.final_rstd);
    st.mtp.clear();
    st.x_last = st.h0 = st.dh0 = st.final_rstd = Tensor();
  } else {
    dx = dy;
  }
  // ---- decoder layers, last to first (their weight gradients wait for BackwardWeight)
  for (size_t l = layers_.size(); l-- > 0;)
    dx = layers_[l]->BackwardInput(dx, B, S, rope, bal_scale, &st.layers[l]);
  if (stage_.first()) {
    st.dx_embed = dx;
    return Tensor();
  }
  return dx;
}

void ModelChunk::BackwardWeight(int id) {
  auto it = stash_.find(id);
  MT_CHECK(it != stash_.end(), "BackwardWeight of micro-batch ", id, " without its forward");
  Stash& st = *it->second;
  for (size_t l = layers_.size(); l-- > 0;) layers_[l]->BackwardWeight(&st.layers[l]);
  if (stage_.first())
    ops::EmbeddingBackward(st.ids.data(), st.dx_embed.data<Real>(), embed_->grad.data<Real>(),
                           st.B * st.S, m_.hidden_size);
  stash_.erase(it);
}

std::vector<float> ModelChunk::NextTokenLogits(const int32_t* tokens, int64_t S) {
  MT_CHECK(stage_.first() && stage_.last(), "NextTokenLogits needs the whole model");
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

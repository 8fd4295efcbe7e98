// trainer/device_model.cc: the model (or one pipeline stage of it) on a Backend and its
// per-micro-batch passes; the optimizer side is device_model_opt.cc.
#include "trainer/device_model.h"

#include <algorithm>
#include <functional>
#include <utility>

#include "kernels/status.h"
#include "trainer/rope.h"

namespace mt {
inline namespace MT_REAL_NS {

// MTP module k (trainer/model_chunk.cc ModelChunk::MtpModule).
struct DeviceModel::Mtp {
  struct Saved {
    Tensor ids, labels;  // [T] I32: embedded tokens t[i+k], targets t[i+k+1] (or -1)
    int64_t count = 0;   // targets >= 0
    Tensor e, e_rstd, h_rstd;  // [T,H], [T], [T]
    DAct cat;                  // [T,2H] eh_proj's input
    DLayer::Saved layer;
    Tensor out, out_rstd, d_out;  // [T,H] h_k, head norm's rstd, d loss / d h_k from the head
  };
  DNorm enorm, hnorm;
  DLinear eh_proj;
  std::unique_ptr<DLayer> layer;
  DNorm head_norm;
};

DeviceModel::DeviceModel(const ModelConfig& m, Precision precision, ParamStore* params,
                         Backend* backend, const DeviceOptimizerLayout& opt,
                         const DeviceExpertGroup& ep, int stage, int num_stages)
    : m_(m),
      stage_(MakeStageSpec(m, stage, num_stages)),
      precision_(precision),
      be_(backend),
      params_(std::make_unique<DeviceParams>(backend, params, opt)),
      ep_(ep) {
  DeviceParams& ps = *params_;
  for (int64_t l = 0; l < m_.num_hidden_layers + m_.num_nextn_predict_layers; ++l)
    num_moe_ += m_.IsMoeLayer(l);
  if (stage_.has_embedding(m_)) embed_ = ps.Get("model.embed_tokens.weight");
  auto add = [&](std::unique_ptr<DLayer> layer, int64_t index) {
    if (layer->moe) {
      moe_layers_.push_back(layer->moe.get());
      moe_indices_.push_back(MoeLayerIndex(m_, index));
    }
    return layer;
  };
  for (int64_t i = stage_.first_layer; i < stage_.end_layer; ++i)
    layers_.push_back(add(MakeDeviceLayer(ps, i, m_, &ep_), i));
  if (stage_.last()) {
    final_norm_ = {ps.Get("model.norm.weight"), m_.hidden_size, m_.rms_norm_eps};
    head_ = ps.Get("lm_head.weight");
  }
  for (int64_t k = 0; stage_.last() && k < m_.num_nextn_predict_layers; ++k) {
    const int64_t index = m_.num_hidden_layers + k;
    const std::string p = "model.layers." + std::to_string(index) + ".";
    auto mod = std::make_unique<Mtp>();
    mod->enorm = {ps.Get(p + "enorm.weight"), m_.hidden_size, m_.rms_norm_eps};
    mod->hnorm = {ps.Get(p + "hnorm.weight"), m_.hidden_size, m_.rms_norm_eps};
    mod->eh_proj.p = ps.Get(p + "eh_proj.weight");
    mod->eh_proj.in = 2 * m_.hidden_size;
    mod->eh_proj.out = m_.hidden_size;
    mod->layer = add(MakeDeviceLayer(ps, index, m_, &ep_), index);
    mod->head_norm = {ps.Get(p + "shared_head.norm.weight"), m_.hidden_size, m_.rms_norm_eps};
    mtp_.push_back(std::move(mod));
  }
  ps.All();  // checks that every parameter has a layer
}

DeviceModel::~DeviceModel() = default;

// What one micro-batch keeps between its forward and its backward.
struct DeviceModel::Stash {
  int64_t B = 0, S = 0;
  double bal_scale = 0;  // grad_scale x balance_alpha
  Tensor ids;            // [T] I32 first stage: the embedded tokens
  std::vector<DLayer::Saved> layers;
  Tensor x_last, final_rstd, h0, dh0;  // last stage: [T,H], [T], [T,H], [T,H]
  std::vector<Mtp::Saved> mtp;         // [D] last stage
  bool input_done = false;             // BackwardInput has run
  // Split backward: the decoder layers' weight-gradient passes (DeviceBatch::WeightGrad),
  // and on the first stage the embedding's gradient [T,H], for BackwardWeight.
  std::vector<std::function<void()>> weight_passes;
  Tensor dx_embed;
};

// A micro-batch's scalars on the device until TakeLosses reads them.
struct DeviceModel::Pending {
  int64_t T = 0, count = 0;     // positions, main targets >= 0 (last stage)
  std::vector<int64_t> counts;  // [D] each MTP module's targets >= 0
  double mtp_coeff = 0, balance_alpha = 0;
  Tensor scalars;  // [1 + D + L] F64: main loss sum, MTP loss sums, each MoE layer's balance
  Tensor load;     // [max(L, 1), E] I64
};

Tensor DeviceModel::Embed(const DeviceBatch& b, const Tensor& ids) const {
  const int64_t T = ids.numel(), H = m_.hidden_size;
  Tensor x = be_->Empty({T, H});
  be_->EmbeddingForward(ids.data<int32_t>(), embed_->value.data<float>(), x.data<float>(), T, H);
  if (b.round_bf16()) be_->RoundBf16(x.data<float>(), x.data<float>(), x.numel());  // BF16 op
  return x;
}

void DeviceModel::HeadLoss(const DeviceBatch& b, const Tensor& h, const Tensor& labels,
                           int64_t count, double coeff, double* loss_sum, Tensor* dh) const {
  const int64_t T = h.dim(0), H = h.dim(1), V = m_.vocab_size;
  const int64_t chunk = be_->HeadLossChunkRows(V);  // rows of logits held at a time
  if (dh) *dh = be_->Empty({T, H});
  if (count == 0) return;
  const float scale = static_cast<float>(coeff / count);
  Tensor logits = be_->Empty({std::min(chunk, T), V});
  const float* w = head_->value.data<float>();
  const Tensor* wb = b.round_bf16() ? &head_bf16_.Of(b, head_->value) : nullptr;  // [V * H]
  for (int64_t r0 = 0; r0 < T; r0 += chunk) {
    const int64_t rows = std::min(chunk, T - r0);
    const float* hr = h.data<float>() + r0 * H;
    float* lg = logits.data<float>();
    // The head is one of the recipe's BF16 GEMMs, its output gradient rounded to BF16 too.
    if (b.round_bf16())
      be_->LinearForwardBf16(hr, *wb, lg, rows, H, V);
    else
      be_->LinearForward(hr, w, lg, rows, H, V);
    be_->CrossEntropy(lg, labels.data<int32_t>() + r0, rows, V, scale, loss_sum);
    if (!dh) continue;
    float* dhr = dh->data<float>() + r0 * H;
    if (b.round_bf16()) {
      be_->RoundBf16(lg, lg, rows * V);
      be_->LinearBackwardInputBf16(lg, *wb, dhr, rows, H, V, false);
      be_->LinearBackwardWeightBf16(lg, hr, head_->grad.data<float>(), rows, H, V);
    } else {
      be_->LinearBackwardInput(lg, w, dhr, rows, H, V, false);
      be_->LinearBackwardWeight(lg, hr, head_->grad.data<float>(), rows, H, V);
    }
  }
}

DeviceBatch DeviceModel::Batch(int64_t B, int64_t S) {
  if (rope_len_ < S) {
    const RopeTables rope = MakeRopeTables(m_, S);
    const auto n = static_cast<int64_t>(rope.cos.size());
    Tensor c({n}, DType::kF64), s({n}, DType::kF64);
    std::copy(rope.cos.begin(), rope.cos.end(), c.data<double>());
    std::copy(rope.sin.begin(), rope.sin.end(), s.data<double>());
    rope_cos_ = be_->ToDevice(c);
    rope_sin_ = be_->ToDevice(s);
    rope_len_ = S;
  }
  DeviceBatch b{be_, B, S, rope_cos_.data<double>(), rope_sin_.data<double>(), precision_};
  b.weights_version = params_->version();
  return b;
}

Tensor DeviceModel::Forward(int id, const int32_t* tokens, int64_t B, int64_t S, const Tensor& x_in,
                            const ObjectiveWeights& w, double grad_scale, bool backward) {
  const int64_t T = B * S, H = m_.hidden_size, E = m_.n_routed_experts;
  const auto D = static_cast<int64_t>(mtp_.size());
  const auto L = static_cast<int64_t>(moe_layers_.size());
  MT_CHECK(!pending_.count(id) && !stash_.count(id), "device model: micro-batch ", id,
           " is already in flight");
  const DeviceBatch b = Batch(B, S);
  // The micro-batch's token ids and targets, built on the host (ModelChunk::Forward).
  auto upload = [&](const std::vector<int32_t>& v, int64_t* count) {
    Tensor t({T}, DType::kI32);
    std::copy(v.begin(), v.end(), t.data<int32_t>());
    if (count) *count = std::count_if(v.begin(), v.end(), [](int32_t x) { return x >= 0; });
    return be_->ToDevice(t);
  };
  auto owned = std::make_unique<Stash>();
  Stash& st = *owned;
  st.B = B;
  st.S = S;
  st.bal_scale = grad_scale * w.balance_alpha;
  auto res = std::make_unique<Pending>();
  res->T = T;
  res->mtp_coeff = D > 0 ? w.mtp_lambda / D : 0.0;
  res->balance_alpha = w.balance_alpha;
  res->scalars = be_->Empty({1 + D + L}, DType::kF64);
  res->load = be_->Empty({std::max<int64_t>(L, 1), E}, DType::kI64);
  double* sums = res->scalars.data<double>();
  auto load_of = [&](int64_t i) { return res->load.data<int64_t>() + i * E; };

  // ---- embedding (first stage), this stage's decoder layers
  Tensor x = x_in;
  if (stage_.first()) {
    std::vector<int32_t> ids(T);
    for (int64_t bi = 0; bi < B; ++bi)
      for (int64_t i = 0; i < S; ++i) ids[bi * S + i] = tokens[bi * (S + 1) + i];
    st.ids = upload(ids, nullptr);
    x = Embed(b, st.ids);
  }
  st.layers.resize(layers_.size());
  int64_t moe_i = 0;
  for (size_t l = 0; l < layers_.size(); ++l) {
    const bool moe = layers_[l]->moe != nullptr;
    x = layers_[l]->Forward(b, x, S, &st.layers[l], moe ? load_of(moe_i) : nullptr,
                            moe ? sums + 1 + D + moe_i : nullptr);
    moe_i += moe;
  }
  Tensor out;
  if (!stage_.last()) {
    out = x;
  } else {
    // ---- main head (its backward at once)
    std::vector<int32_t> labels(T);
    for (int64_t bi = 0; bi < B; ++bi)
      for (int64_t i = 0; i < S; ++i) labels[bi * S + i] = tokens[bi * (S + 1) + i + 1];
    const Tensor labels_dev = upload(labels, &res->count);
    st.x_last = x;
    st.h0 = final_norm_.Forward(b, x, &st.final_rstd);
    HeadLoss(b, st.h0, labels_dev, res->count, grad_scale, sums, backward ? &st.dh0 : nullptr);

    // ---- MTP modules, each with its head loss
    st.mtp.resize(D);
    res->counts.assign(D, 0);
    Tensor h_prev = st.h0;
    for (int64_t k = 1; k <= D; ++k) {
      const Mtp& mod = *mtp_[k - 1];
      Mtp::Saved& s = st.mtp[k - 1];
      std::vector<int32_t> in(T, 0), tgt(T, -1);
      for (int64_t bi = 0; bi < B; ++bi)
        for (int64_t i = 0; i < S; ++i) {
          if (i + k <= S) in[bi * S + i] = tokens[bi * (S + 1) + i + k];
          if (i + k + 1 <= S) tgt[bi * S + i] = tokens[bi * (S + 1) + i + k + 1];
        }
      s.ids = upload(in, nullptr);
      s.labels = upload(tgt, &s.count);
      res->counts[k - 1] = s.count;
      s.e = Embed(b, s.ids);
      const Tensor e_n = mod.enorm.Forward(b, s.e, &s.e_rstd);
      const Tensor h_n = mod.hnorm.Forward(b, h_prev, &s.h_rstd);
      Tensor cat = be_->Empty({T, 2 * H});
      be_->Copy2D(e_n.data<float>(), H, cat.data<float>(), 2 * H, T, H);
      be_->Copy2D(h_n.data<float>(), H, cat.data<float>() + H, 2 * H, T, H);
      s.cat = mod.eh_proj.Store(b, cat);
      const Tensor xin = mod.eh_proj.Forward(b, s.cat);
      const bool moe = mod.layer->moe != nullptr;
      s.out = mod.layer->Forward(b, xin, S - k, &s.layer, moe ? load_of(moe_i) : nullptr,
                                 moe ? sums + 1 + D + moe_i : nullptr);
      moe_i += moe;
      const Tensor out_n = mod.head_norm.Forward(b, s.out, &s.out_rstd);
      Tensor d_out_n;
      HeadLoss(b, out_n, s.labels, s.count, grad_scale * res->mtp_coeff, sums + k,
               backward ? &d_out_n : nullptr);
      if (backward) s.d_out = mod.head_norm.Backward(b, d_out_n, s.out, s.out_rstd);
      h_prev = s.out;
    }
  }
  pending_[id] = std::move(res);
  if (backward) stash_[id] = std::move(owned);
  return out;
}

Tensor DeviceModel::Backward(int id, const Tensor& dy) {
  // The weight gradients at once (no queue): less held at a time, the same bits.
  Tensor dx = BackwardInput(id, dy, /*split=*/false);
  BackwardWeight(id);
  return dx;
}

Tensor DeviceModel::BackwardInput(int id, const Tensor& dy) {
  return BackwardInput(id, dy, /*split=*/true);
}

Tensor DeviceModel::BackwardInput(int id, const Tensor& dy, bool split) {
  auto it = stash_.find(id);
  MT_CHECK(it != stash_.end() && !it->second->input_done,
           "device model: BackwardInput of micro-batch ", id, " without its forward");
  Stash& st = *it->second;
  st.input_done = true;
  const int64_t S = st.S, T = st.B * S, H = m_.hidden_size;
  const auto D = static_cast<int64_t>(mtp_.size());
  // The MTP modules and the heads take their weight gradients here (ModelChunk's split);
  // the decoder layers queue theirs when split.
  const DeviceBatch b = Batch(st.B, S);
  DeviceBatch layers_b = b;
  if (split) layers_b.weight_passes = &st.weight_passes;
  Tensor dx = dy;
  if (stage_.last()) {
    // ---- MTP modules last to first, then the main head's norm
    Tensor dh_next;  // d loss / d h_k from module k+1
    for (int64_t k = D; k >= 1; --k) {
      const Mtp& mod = *mtp_[k - 1];
      Mtp::Saved& s = st.mtp[k - 1];
      Tensor dh = s.d_out;
      if (dh_next.defined()) be_->Add(dh_next.data<float>(), dh.data<float>(), dh.numel());
      const Tensor dxin = mod.layer->Backward(b, dh, S - k, st.bal_scale, &s.layer);
      Tensor dcat;  // [T, 2H]
      mod.eh_proj.Backward(b, dxin, s.cat, &dcat, false);
      Tensor de_n = be_->Empty({T, H}), dh_n = be_->Empty({T, H});
      be_->Copy2D(dcat.data<float>(), 2 * H, de_n.data<float>(), H, T, H);
      be_->Copy2D(dcat.data<float>() + H, 2 * H, dh_n.data<float>(), H, T, H);
      const Tensor de = mod.enorm.Backward(b, de_n, s.e, s.e_rstd);
      be_->EmbeddingBackward(s.ids.data<int32_t>(), de.data<float>(), embed_->grad.data<float>(),
                             T, H);
      const Tensor& h_in = k == 1 ? st.h0 : st.mtp[k - 2].out;
      dh_next = mod.hnorm.Backward(b, dh_n, h_in, s.h_rstd);
    }
    if (dh_next.defined()) be_->Add(dh_next.data<float>(), st.dh0.data<float>(), st.dh0.numel());
    dx = final_norm_.Backward(b, st.dh0, st.x_last, st.final_rstd);
    st.mtp.clear();
    st.x_last = st.h0 = st.dh0 = st.final_rstd = Tensor();
  }
  // ---- this stage's decoder layers; the embedding's gradient waits for BackwardWeight
  for (size_t l = layers_.size(); l-- > 0;)
    dx = layers_[l]->Backward(layers_b, dx, S, st.bal_scale, &st.layers[l]);
  if (stage_.first()) {
    st.dx_embed = dx;
    return Tensor();
  }
  return dx;
}

void DeviceModel::BackwardWeight(int id) {
  auto it = stash_.find(id);
  MT_CHECK(it != stash_.end() && it->second->input_done,
           "device model: BackwardWeight of micro-batch ", id, " without its BackwardInput");
  Stash& st = *it->second;
  for (auto& pass : st.weight_passes) pass();
  if (stage_.first())
    be_->EmbeddingBackward(st.ids.data<int32_t>(), st.dx_embed.data<float>(),
                           embed_->grad.data<float>(), st.B * st.S, m_.hidden_size);
  stash_.erase(it);
}

Losses DeviceModel::TakeLosses(int id, std::vector<std::vector<int64_t>>* loads) {
  auto it = pending_.find(id);
  MT_CHECK(it != pending_.end(), "device model: no losses of micro-batch ", id);
  const Pending& res = *it->second;
  const int64_t E = m_.n_routed_experts;
  const auto D = static_cast<int64_t>(res.counts.size());
  const auto L = static_cast<int64_t>(moe_layers_.size());
  // ---- the micro-batch's scalars and loads to the host (its only synchronisation)
  const Tensor sums_host = be_->ToHost(res.scalars), load_host = be_->ToHost(res.load);
  const double* sh = sums_host.data<double>();
  Losses out;
  out.tokens = res.T;
  if (stage_.last()) out.main = res.count > 0 ? sh[0] / res.count : 0.0;
  for (int64_t k = 1; k <= D; ++k) {
    const int64_t c = res.counts[k - 1];
    out.mtp.push_back(c > 0 ? sh[k] / c : 0.0);
  }
  for (int64_t i = 0; i < L; ++i) out.balance += sh[1 + D + i];
  out.total = out.main + res.balance_alpha * out.balance;
  for (double l : out.mtp) out.total += res.mtp_coeff * l;
  if (loads) {
    if (static_cast<int64_t>(loads->size()) < num_moe_) loads->resize(num_moe_);
    for (int64_t i = 0; i < L; ++i) {
      auto& l = (*loads)[moe_indices_[i]];
      l.resize(E, 0);
      for (int64_t e = 0; e < E; ++e) l[e] += load_host.data<int64_t>()[i * E + e];
    }
  }
  pending_.erase(it);
  return out;
}

Losses DeviceModel::ForwardBackward(const int32_t* tokens, int64_t B, int64_t S,
                                    const ObjectiveWeights& w, double grad_scale,
                                    std::vector<std::vector<int64_t>>* loads) {
  MT_CHECK(stage_.first() && stage_.last(), "ForwardBackward needs the whole model");
  Forward(-1, tokens, B, S, Tensor(), w, grad_scale, /*backward=*/true);
  Backward(-1, Tensor());
  return TakeLosses(-1, loads);
}

Losses DeviceModel::Evaluate(const int32_t* tokens, int64_t B, int64_t S,
                             const ObjectiveWeights& w) {
  MT_CHECK(stage_.first() && stage_.last(), "Evaluate needs the whole model");
  Forward(-1, tokens, B, S, Tensor(), w, 0.0, /*backward=*/false);
  return TakeLosses(-1, nullptr);
}

}  // namespace MT_REAL_NS
}  // namespace mt

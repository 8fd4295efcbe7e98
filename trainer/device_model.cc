// trainer/device_model.cc: the whole model and its optimizer step on a Backend.
#include "trainer/device_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>
#include <utility>

#include "kernels/status.h"
#include "trainer/optimizer.h"
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
                         const DeviceExpertGroup& ep)
    : m_(m),
      precision_(precision),
      be_(backend),
      params_(std::make_unique<DeviceParams>(backend, params, opt)),
      ep_(ep) {
  DeviceParams& ps = *params_;
  embed_ = ps.Get("model.embed_tokens.weight");
  for (int64_t i = 0; i < m_.num_hidden_layers; ++i) {
    layers_.push_back(MakeDeviceLayer(ps, i, m_, &ep_));
    if (layers_.back()->moe) moe_layers_.push_back(layers_.back()->moe.get());
  }
  final_norm_ = {ps.Get("model.norm.weight"), m_.hidden_size, m_.rms_norm_eps};
  head_ = ps.Get("lm_head.weight");
  for (int64_t k = 0; k < m_.num_nextn_predict_layers; ++k) {
    const int64_t index = m_.num_hidden_layers + k;
    const std::string p = "model.layers." + std::to_string(index) + ".";
    auto mod = std::make_unique<Mtp>();
    mod->enorm = {ps.Get(p + "enorm.weight"), m_.hidden_size, m_.rms_norm_eps};
    mod->hnorm = {ps.Get(p + "hnorm.weight"), m_.hidden_size, m_.rms_norm_eps};
    mod->eh_proj.p = ps.Get(p + "eh_proj.weight");
    mod->eh_proj.in = 2 * m_.hidden_size;
    mod->eh_proj.out = m_.hidden_size;
    mod->layer = MakeDeviceLayer(ps, index, m_, &ep_);
    mod->head_norm = {ps.Get(p + "shared_head.norm.weight"), m_.hidden_size, m_.rms_norm_eps};
    if (mod->layer->moe) moe_layers_.push_back(mod->layer->moe.get());
    mtp_.push_back(std::move(mod));
  }
  ps.All();  // checks that every parameter has a layer
}

DeviceModel::~DeviceModel() = default;

// What one micro-batch keeps between its forward and its backward.
struct DeviceModel::Stash {
  Tensor ids, labels;  // [T] I32
  int64_t count = 0;
  std::vector<DLayer::Saved> layers;
  Tensor x_last, final_rstd, h0, dh0;  // [T,H], [T], [T,H], [T,H]
  std::vector<Mtp::Saved> mtp;
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

Losses DeviceModel::Run(const int32_t* tokens, int64_t B, int64_t S, const ObjectiveWeights& w,
                        double grad_scale, bool backward,
                        std::vector<std::vector<int64_t>>* loads) {
  const int64_t T = B * S, H = m_.hidden_size, E = m_.n_routed_experts;
  const auto D = static_cast<int64_t>(mtp_.size());
  const auto L = static_cast<int64_t>(moe_layers_.size());
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
  // The micro-batch's token ids and targets, built on the host (ModelChunk::Forward).
  auto upload = [&](const std::vector<int32_t>& v, int64_t* count) {
    Tensor t({T}, DType::kI32);
    std::copy(v.begin(), v.end(), t.data<int32_t>());
    if (count) *count = std::count_if(v.begin(), v.end(), [](int32_t x) { return x >= 0; });
    return be_->ToDevice(t);
  };
  std::vector<int32_t> ids(T), labels(T);
  for (int64_t bi = 0; bi < B; ++bi)
    for (int64_t i = 0; i < S; ++i) {
      ids[bi * S + i] = tokens[bi * (S + 1) + i];
      labels[bi * S + i] = tokens[bi * (S + 1) + i + 1];
    }
  Stash st;
  st.ids = upload(ids, nullptr);
  st.labels = upload(labels, &st.count);
  // Scalars: [0] main loss sum, [1..D] MTP loss sums, [1+D..] each MoE layer's balance loss.
  Tensor scalars = be_->Empty({1 + D + L}, DType::kF64);
  Tensor load = be_->Empty({std::max<int64_t>(L, 1), E}, DType::kI64);  // [L, E]
  double* sums = scalars.data<double>();
  auto load_of = [&](int64_t i) { return load.data<int64_t>() + i * E; };

  // ---- forward: embedding, decoder layers, main head (its backward at once)
  Tensor x = Embed(b, st.ids);
  st.layers.resize(layers_.size());
  int64_t moe_i = 0;
  for (size_t l = 0; l < layers_.size(); ++l) {
    const bool moe = layers_[l]->moe != nullptr;
    x = layers_[l]->Forward(b, x, S, &st.layers[l], moe ? load_of(moe_i) : nullptr,
                            moe ? sums + 1 + D + moe_i : nullptr);
    moe_i += moe;
  }
  st.x_last = x;
  st.h0 = final_norm_.Forward(b, x, &st.final_rstd);
  HeadLoss(b, st.h0, st.labels, st.count, grad_scale, sums, backward ? &st.dh0 : nullptr);

  // ---- MTP modules, each with its head loss
  const double mtp_coeff = D > 0 ? w.mtp_lambda / D : 0.0;
  st.mtp.resize(D);
  Tensor h_prev = st.h0;
  for (int64_t k = 1; k <= D; ++k) {
    const Mtp& mod = *mtp_[k - 1];
    Mtp::Saved& s = st.mtp[k - 1];
    std::vector<int32_t> in(T, 0), out(T, -1);
    for (int64_t bi = 0; bi < B; ++bi)
      for (int64_t i = 0; i < S; ++i) {
        if (i + k <= S) in[bi * S + i] = tokens[bi * (S + 1) + i + k];
        if (i + k + 1 <= S) out[bi * S + i] = tokens[bi * (S + 1) + i + k + 1];
      }
    s.ids = upload(in, nullptr);
    s.labels = upload(out, &s.count);
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
    HeadLoss(b, out_n, s.labels, s.count, grad_scale * mtp_coeff, sums + k,
             backward ? &d_out_n : nullptr);
    if (backward) s.d_out = mod.head_norm.Backward(b, d_out_n, s.out, s.out_rstd);
    h_prev = s.out;
  }

  // ---- backward: MTP modules last to first, the main head's norm, the decoder layers
  if (backward) {
    const double bal_scale = grad_scale * w.balance_alpha;
    Tensor dh_next;  // d loss / d h_k from module k+1
    for (int64_t k = D; k >= 1; --k) {
      const Mtp& mod = *mtp_[k - 1];
      Mtp::Saved& s = st.mtp[k - 1];
      Tensor dh = s.d_out;
      if (dh_next.defined()) be_->Add(dh_next.data<float>(), dh.data<float>(), dh.numel());
      const Tensor dxin = mod.layer->Backward(b, dh, S - k, bal_scale, &s.layer);
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
    Tensor dx = final_norm_.Backward(b, st.dh0, st.x_last, st.final_rstd);
    for (size_t l = layers_.size(); l-- > 0;)
      dx = layers_[l]->Backward(b, dx, S, bal_scale, &st.layers[l]);
    be_->EmbeddingBackward(st.ids.data<int32_t>(), dx.data<float>(), embed_->grad.data<float>(), T,
                           H);
  }

  // ---- the step's scalars and loads to the host (the only synchronisation)
  const Tensor sums_host = be_->ToHost(scalars), load_host = be_->ToHost(load);
  const double* sh = sums_host.data<double>();
  Losses out;
  out.tokens = T;
  out.main = st.count > 0 ? sh[0] / st.count : 0.0;
  for (int64_t k = 1; k <= D; ++k) {
    const int64_t c = st.mtp[k - 1].count;
    out.mtp.push_back(c > 0 ? sh[k] / c : 0.0);
  }
  for (int64_t i = 0; i < L; ++i) out.balance += sh[1 + D + i];
  out.total = out.main + w.balance_alpha * out.balance;
  for (double l : out.mtp) out.total += mtp_coeff * l;
  if (loads) {
    loads->resize(L);
    for (int64_t i = 0; i < L; ++i) {
      auto& l = (*loads)[i];
      l.resize(E, 0);
      for (int64_t e = 0; e < E; ++e) l[e] += load_host.data<int64_t>()[i * E + e];
    }
  }
  return out;
}

Losses DeviceModel::ForwardBackward(const int32_t* tokens, int64_t B, int64_t S,
                                    const ObjectiveWeights& w, double grad_scale,
                                    std::vector<std::vector<int64_t>>* loads) {
  return Run(tokens, B, S, w, grad_scale, /*backward=*/true, loads);
}

Losses DeviceModel::Evaluate(const int32_t* tokens, int64_t B, int64_t S,
                             const ObjectiveWeights& w) {
  return Run(tokens, B, S, w, 0.0, /*backward=*/false, nullptr);
}

void DeviceModel::ZeroGrads() { be_->Zero(&params_->grads()); }

double DeviceModel::GradNorm() {
  std::vector<DeviceParam*> trainable;
  for (DeviceParam* d : params_->All())
    if (d->host->trainable) trainable.push_back(d);
  return GradNorm(trainable);
}

double DeviceModel::GradNorm(const std::vector<DeviceParam*>& order) {
  MT_CHECK(params_->shard_size() == params_->padded(),
           "GradNorm of one rank's gradients under data parallelism: use ShardSumSquares");
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (const DeviceParam* d : order) {
    MT_CHECK(d->host->trainable, "grad norm over ", d->host->name, ", which is not trainable");
    ranges.emplace_back(d->offset, d->value.numel());
  }
  Tensor sum = be_->Empty({1}, DType::kF64);
  be_->SumSquaresRanges(params_->grads().data<float>(), ranges, sum.data<double>());
  return std::sqrt(be_->ToHost(sum).data<double>()[0]);
}

double DeviceModel::ShardSumSquares() {
  Tensor sum = be_->Empty({1}, DType::kF64);
  // Per region, dense then experts, as ZeroAdamW::ReduceGradients adds its parts.
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (const DeviceParamRegion& r : params_->regions())
    ranges.emplace_back(r.shard_offset, r.shard_size());
  be_->SumSquaresRanges(params_->grad_shard().data<float>(), ranges, sum.data<double>());
  return be_->ToHost(sum).data<double>()[0];
}

void DeviceModel::OptimizerStep(const OptimizerConfig& opt, double lr, int64_t step, double norm,
                                const std::vector<std::vector<int64_t>>& loads, double gamma) {
  const DType moments = params_->moment_dtype();
  MT_CHECK((opt.moment_dtype == "bf16") == (moments == DType::kBF16), "the device model keeps ",
           DTypeName(moments), " AdamW moments, not optimizer.moment_dtype ", opt.moment_dtype);
  const AdamCoeffs c = MakeAdamCoeffs(opt, lr, step);
  const AdamStepCoeffs dc{c.lr, c.b1, c.b2, c.eps, c.wd, c.bc1, c.bc2};
  // ClipScale's rule: scale by max_norm / (norm + 1e-6) only when norm exceeds max_norm.
  // Elementwise, so the flat buffers give AdamW::Step's values exactly: one launch for the
  // clipping and one per region and decay class in the shard (padding is skipped).
  DeviceParams& ps = *params_;
  ps.ValuesChanged();  // the kept FP8 and BF16 weights go stale (with DP, after the all-gather)
  float* g = ps.grad_shard().data<float>();
  if (opt.grad_clip > 0 && norm > opt.grad_clip)
    be_->Scale(g, ps.shard_size(), static_cast<float>(opt.grad_clip / (norm + 1e-6)));
  for (const DeviceParamRegion& r : ps.regions()) {
    const int64_t begin = r.shard_begin(), end = begin + r.shard_size();
    for (const auto& [lo, hi, decay] :
         {std::tuple{begin, std::min(end, r.decayed), true},
          std::tuple{std::max(begin, r.decayed), std::min(end, r.trainable), false}}) {
      if (hi <= lo) continue;
      const int64_t s = r.shard_offset + lo - begin;  // in grad_shard, m and v
      float* w = ps.values().data<float>() + lo;
      if (moments == DType::kBF16) {
        be_->AdamWBf16Moments(w, g + s, static_cast<uint16_t*>(ps.m().raw()) + s,
                              static_cast<uint16_t*>(ps.v().raw()) + s, hi - lo, decay, dc);
      } else {
        be_->AdamW(w, g + s, ps.m().data<float>() + s, ps.v().data<float>() + s, hi - lo, decay,
                   dc);
      }
    }
  }
  // UpdateExpertBiases (trainer/optimizer.cc) on the host copy of each [E] bias.
  if (gamma == 0) return;
  for (size_t l = 0; l < moe_layers_.size(); ++l) {
    const std::vector<int64_t>& load = loads[l];
    double mean = 0;
    for (int64_t x : load) mean += static_cast<double>(x);
    mean /= static_cast<double>(load.size());
    DeviceParam* bias = moe_layers_[l]->bias;
    Tensor host = be_->ToHost(bias->value);
    for (size_t e = 0; e < load.size(); ++e) {
      const double diff = mean - static_cast<double>(load[e]);
      host.data<float>()[e] += static_cast<float>(gamma * ((diff > 0) - (diff < 0)));
    }
    const Tensor dev = be_->ToDevice(host);
    be_->Copy(dev.raw(), bias->value.raw(), bias->value.nbytes());
  }
}

void DeviceModel::Download(bool grads) const { params_->Download(grads); }

absl::Status DeviceModel::LoadMoments(const std::map<std::string, const Tensor*>& m,
                                      const std::map<std::string, const Tensor*>& v) {
  DeviceParams& ps = *params_;
  const DType dt = ps.moment_dtype();
  const size_t es = DTypeSize(dt);
  for (const auto& [from, to] : {std::pair{&m, &ps.m()}, std::pair{&v, &ps.v()}}) {
    Tensor shard({ps.shard_size()}, dt);  // padding stays zero
    for (const DeviceParam* d : ps.All()) {
      const Param& p = *d->host;
      if (!p.trainable) continue;
      auto it = from->find(p.name);
      if (it == from->end())
        return absl::InvalidArgumentError("the optimizer state has no moment for " + p.name);
      if (it->second->shape() != p.value.shape())
        return absl::InvalidArgumentError("the optimizer state's moment for " + p.name +
                                          " is shaped " + ShapeString(it->second->shape()) +
                                          ", expected " + ShapeString(p.value.shape()));
      // The parameter's elements [offset, offset + n) that fall in this rank's shard of its
      // region.
      const DeviceParamRegion& r = ps.RegionOf(*d);
      const int64_t begin = r.shard_begin(), end = begin + r.shard_size();
      const int64_t lo = std::max(begin, d->offset);
      const int64_t hi = std::min(end, d->offset + p.value.numel());
      if (hi <= lo) continue;
      const Tensor t = it->second->To(dt);
      std::memcpy(static_cast<char*>(shard.raw()) + (r.shard_offset + lo - begin) * es,
                  static_cast<const char*>(t.raw()) + (lo - d->offset) * es, (hi - lo) * es);
    }
    be_->CopyFromHost(shard.raw(), to->raw(), shard.nbytes());
  }
  be_->Synchronize();  // the host shards are about to go
  return absl::OkStatus();
}

void DeviceModel::MomentShards(Tensor* m, Tensor* v) const {
  *m = be_->ToHost(params_->m());
  *v = be_->ToHost(params_->v());
}

}  // namespace MT_REAL_NS
}  // namespace mt

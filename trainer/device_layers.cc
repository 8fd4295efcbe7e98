// trainer/device_layers.cc: the device parameters, Linear, RMSNorm, SwiGLU MLP and decoder
// layer on a Backend (device_layers.h); MLA and MoE are in device_mla.cc and device_moe.cc.
#include "trainer/device_layers.h"

#include <type_traits>

#include "kernels/status.h"
#include "trainer/rope.h"

namespace mt {
inline namespace MT_REAL_NS {

static_assert(std::is_same_v<Real, float>, "the device model is float only (real.h)");

// ---- parameters -------------------------------------------------------------------------

namespace {
size_t IndexOf(const ParamStore& ps, const std::string& name) {
  for (size_t i = 0; i < ps.all().size(); ++i)
    if (ps.all()[i]->name == name) return i;
  MT_CHECK(false, "device model: no parameter ", name);
  return 0;
}
// The flat buffers' three classes (device_layers.h).
int ClassOf(const Param& p) {
  MT_CHECK(p.trainable == p.grad.defined(), "device model: parameter ", p.name,
           p.trainable ? " is trainable but has no gradient" : " has a gradient but is state");
  return !p.trainable ? 2 : p.decay ? 0 : 1;
}
}  // namespace

DeviceParams::DeviceParams(Backend* backend, ParamStore* host, const DeviceOptimizerLayout& layout)
    : be_(backend), host_(host) {
  const int shards = layout.dp_size, shard = layout.dp_rank;
  MT_CHECK(shards >= 1 && shard >= 0 && shard < shards, "device model: shard ", shard, " of ",
           shards);
  MT_CHECK(layout.moments == DType::kF32 || layout.moments == DType::kBF16,
           "device model: AdamW moments are fp32 or bf16, not ", DTypeName(layout.moments));
  params_.resize(host->all().size());
  int64_t size[3] = {};
  for (const auto& p : host->all()) size[ClassOf(*p)] += p->value.numel();
  end_[0] = size[0];
  end_[1] = size[0] + size[1];
  shard_size_ = (end_[1] + shards - 1) / shards;
  padded_ = shard_size_ * shards;
  shard_begin_ = shard_size_ * shard;
  next_[0] = 0;
  next_[1] = end_[0];
  next_[2] = padded_;  // state after the padding: the all-gather writes [0, padded)
  end_[2] = padded_ + size[2];
  values_ = be_->Empty({end_[2]});
  grads_ = be_->Empty({padded_});
  grad_shard_ = shards == 1 ? grads_ : be_->Empty({shard_size_});
  m_ = be_->Empty({shard_size_}, layout.moments);
  v_ = be_->Empty({shard_size_}, layout.moments);
}

void DeviceParams::Place(DeviceParam* d, const Param& p, int64_t n) {
  const int c = ClassOf(p);
  MT_CHECK(next_[c] + n <= end_[c], "device model: parameter ", p.name, " placed twice");
  d->offset = next_[c];
  next_[c] += n;
}

void DeviceParams::Bind(DeviceParam* d, std::vector<int64_t> shape) const {
  const int64_t n = NumElements(shape);
  d->value = values_.Slice(d->offset, d->offset + n).View(shape);
  if (d->host->trainable) d->grad = grads_.Slice(d->offset, d->offset + n).View(shape);
}

DeviceParam* DeviceParams::Get(const std::string& name) {
  const size_t i = IndexOf(*host_, name);
  if (!params_[i]) {
    auto d = std::make_unique<DeviceParam>();
    d->host = host_->all()[i].get();
    Place(d.get(), *d->host, d->host->value.numel());
    Bind(d.get(), d->host->value.shape());
    be_->CopyFromHost(d->host->value.raw(), d->value.raw(), d->value.nbytes());
    params_[i] = std::move(d);
  }
  return params_[i].get();
}

void DeviceParams::Stack(const std::vector<std::string>& names, Tensor* value, Tensor* grad) {
  const auto E = static_cast<int64_t>(names.size());
  const Param& first = *host_->all()[IndexOf(*host_, names[0])];
  MT_CHECK(first.trainable, "device model: expert ", first.name, " is not trainable");
  const int64_t N = first.value.dim(0), K = first.value.dim(1);
  int64_t base = 0;
  for (int64_t e = 0; e < E; ++e) {
    const size_t i = IndexOf(*host_, names[e]);
    const Param& p = *host_->all()[i];
    MT_CHECK(p.value.shape() == first.value.shape() && ClassOf(p) == ClassOf(first),
             "device model: expert ", p.name, " is shaped or optimised unlike ", first.name);
    MT_CHECK(!params_[i], "device model: ", names[e], " registered before its stack");
    auto d = std::make_unique<DeviceParam>();
    d->host = host_->all()[i].get();
    Place(d.get(), p, N * K);  // consecutive: E back-to-back [N, K] blocks
    if (e == 0) base = d->offset;
    Bind(d.get(), {N, K});
    be_->CopyFromHost(p.value.raw(), d->value.raw(), d->value.nbytes());
    params_[i] = std::move(d);
  }
  *value = values_.Slice(base, base + E * N * K).View({E, N, K});
  *grad = grads_.Slice(base, base + E * N * K).View({E, N, K});
}

std::vector<DeviceParam*> DeviceParams::All() const {
  std::vector<DeviceParam*> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    MT_CHECK(params_[i], "device model: parameter ", host_->all()[i]->name, " has no layer");
    out.push_back(params_[i].get());
  }
  return out;
}

void DeviceParams::Download(bool grads) const {
  for (DeviceParam* d : All()) {
    d->host->value = be_->ToHost(d->value);
    if (grads && d->grad.defined()) d->host->grad = be_->ToHost(d->grad);
  }
}

// ---- Linear and RMSNorm ---------------------------------------------------------------

DAct DLinear::Store(const DeviceBatch& b, const Tensor& x) const {
  DAct a;
  if (b.fp8())
    a.q = b.be->QuantizeFp8(x.data<float>(), x.dim(0), in);
  else
    a.values = x;
  return a;
}

const Tensor& KeptBf16::Of(const DeviceBatch& b, const Tensor& values) {
  if (version != b.weights_version) {
    w = b.be->Bf16Weight(values.data<float>(), values.numel());
    version = b.weights_version;
  }
  return w;
}

const DLinear::Fp8Weights& DLinear::Fp8(const DeviceBatch& b) const {
  if (fp8_cache.version != b.weights_version) {
    fp8_cache.w = b.be->QuantizeWeightFp8(p->value.data<float>(), out, in);
    fp8_cache.wt = b.be->TransposeWeightFp8(fp8_cache.w);
    fp8_cache.version = b.weights_version;
  }
  return fp8_cache;
}

Tensor DLinear::Forward(const DeviceBatch& b, const DAct& x) const {
  Backend& be = *b.be;
  const float* w = p->value.data<float>();
  if (b.fp8()) {
    const DAct q = x.quantized() ? x : Store(b, x.values);
    Tensor y = be.Empty({q.q.rows, out});  // [T, out]
    be.Fp8LinearForward(q.q, Fp8(b).w, y.data<float>());
    return y;
  }
  const int64_t T = x.values.dim(0);
  Tensor y = be.Empty({T, out});  // [T, out]
  if (b.round_bf16())
    be.LinearForwardBf16(x.values.data<float>(), bf16_cache.Of(b, p->value), y.data<float>(), T, in,
                         out);
  else
    be.LinearForward(x.values.data<float>(), w, y.data<float>(), T, in, out);
  return y;
}

void DLinear::BackwardInput(const DeviceBatch& b, const Tensor& dy, Tensor* dx,
                            bool accumulate) const {
  Backend& be = *b.be;
  const int64_t T = dy.dim(0);
  if (!dx->defined()) *dx = be.Empty({T, in});  // [T, in]
  const float* w = p->value.data<float>();
  if (b.fp8())
    be.Fp8LinearBackwardInput(dy.data<float>(), Fp8(b).wt, dx->data<float>(), T, accumulate);
  else if (b.round_bf16())
    be.LinearBackwardInputBf16(dy.data<float>(), bf16_cache.Of(b, p->value), dx->data<float>(), T,
                               in, out, accumulate);
  else
    be.LinearBackwardInput(dy.data<float>(), w, dx->data<float>(), T, in, out, accumulate);
}

void DLinear::BackwardWeight(const DeviceBatch& b, const Tensor& dy, const DAct& x) const {
  Backend& be = *b.be;
  const int64_t T = dy.dim(0);
  float* dw = p->grad.data<float>();
  if (b.fp8()) {
    be.Fp8LinearBackwardWeight(dy.data<float>(), x.quantized() ? &x.q : nullptr,
                               x.quantized() ? nullptr : x.values.data<float>(), dw, T, in, out);
  } else if (b.round_bf16()) {
    be.LinearBackwardWeightBf16(dy.data<float>(), x.values.data<float>(), dw, T, in, out);
  } else {
    be.LinearBackwardWeight(dy.data<float>(), x.values.data<float>(), dw, T, in, out);
  }
}

Tensor DNorm::Forward(const DeviceBatch& b, const Tensor& x, Tensor* rstd) const {
  const int64_t T = x.numel() / dim;
  Tensor y = b.be->Empty(x.shape());
  *rstd = b.be->Empty({T});
  b.be->RmsNormForward(x.data<float>(), p->value.data<float>(), y.data<float>(),
                       rstd->data<float>(), T, dim, eps);
  return y;
}

DAct DNorm::Store(const DeviceBatch& b, const Tensor& x, Tensor* rstd) const {
  if (!b.fp8()) return DAct{Forward(b, x, rstd), {}};
  const int64_t T = x.numel() / dim;
  *rstd = b.be->Empty({T});
  DAct a;
  a.q = b.be->RmsNormQuantizeFp8(x.data<float>(), p->value.data<float>(), rstd->data<float>(), T,
                                 dim, eps);
  return a;
}

Tensor DNorm::Backward(const DeviceBatch& b, const Tensor& dy, const Tensor& x,
                       const Tensor& rstd) const {
  const int64_t T = x.numel() / dim;
  Tensor dx = b.be->Empty(x.shape());
  b.be->RmsNormBackward(dy.data<float>(), x.data<float>(), p->value.data<float>(),
                        rstd.data<float>(), dx.data<float>(), p->grad.data<float>(), T, dim);
  return dx;
}

// ---- SwiGLU MLP -------------------------------------------------------------------------

Tensor SwigluForwardKeep(const DeviceBatch& b, const Tensor& g, const Tensor& u, SwigluIn* in,
                         Tensor* keep_h) {
  Backend& be = *b.be;
  Tensor h = be.Empty(g.shape());  // from the exact g, u, before they are stored
  be.SwigluForward(g.data<float>(), u.data<float>(), h.data<float>(), h.numel());
  if (b.fp8()) {
    in->gq = be.QuantizeFp8(g.data<float>(), g.dim(0), g.dim(1));
    in->uq = be.QuantizeFp8(u.data<float>(), u.dim(0), u.dim(1));
    return h;
  }
  in->g = g;
  in->u = u;
  if (b.round_bf16()) {
    be.RoundBf16(in->g.data<float>(), in->g.data<float>(), g.numel());
    be.RoundBf16(in->u.data<float>(), in->u.data<float>(), u.numel());
  } else {
    *keep_h = h;
  }
  return h;
}

Tensor SwigluBackwardRecompute(const DeviceBatch& b, const Tensor& dh, const SwigluIn& in,
                               Tensor* h, Tensor* du) {
  Backend& be = *b.be;
  Tensor g = in.g, u = in.u;
  if (in.gq.data.defined()) {  // fp8: the E4M3 copies' values
    g = be.Empty(dh.shape());
    u = be.Empty(dh.shape());
    be.DequantizeFp8(in.gq, g.data<float>());
    be.DequantizeFp8(in.uq, u.data<float>());
  }
  Tensor dg = be.Empty(dh.shape());
  *du = be.Empty(dh.shape());
  be.SwigluBackward(dh.data<float>(), g.data<float>(), u.data<float>(), dg.data<float>(),
                    du->data<float>(), dh.numel());
  if (!h->defined()) {
    *h = be.Empty(g.shape());
    be.SwigluForward(g.data<float>(), u.data<float>(), h->data<float>(), h->numel());
  }
  return dg;
}

Tensor DMlp::Forward(const DeviceBatch& b, const DAct& x, Saved* s) const {
  s->x = x;
  const Tensor g = gate.Forward(b, s->x);  // [T, F]
  const Tensor u = up.Forward(b, s->x);    // [T, F]
  const Tensor h = SwigluForwardKeep(b, g, u, &s->in, &s->h);
  return down.Forward(b, h);  // [T, H]
}

Tensor DMlp::Backward(const DeviceBatch& b, const Tensor& dy, Saved* s) const {
  Tensor dh;  // [T, F]
  down.BackwardInput(b, dy, &dh, false);
  Tensor du;
  const Tensor dg = SwigluBackwardRecompute(b, dh, s->in, &s->h, &du);
  down.BackwardWeight(b, dy, DAct{s->h, {}});
  Tensor dx;  // [T, H]
  gate.Backward(b, dg, s->x, &dx, false);
  up.Backward(b, du, s->x, &dx, true);
  *s = Saved{};
  return dx;
}

// ---- decoder layer ----------------------------------------------------------------------

Tensor DLayer::Forward(const DeviceBatch& b, const Tensor& x, int64_t valid, Saved* s,
                       int64_t* load, double* balance) const {
  Backend& be = *b.be;
  s->x = x;
  s->x1 = attn.Forward(b, input_norm.Store(b, x, &s->a_rstd), &s->attn);
  be.Add(x.data<float>(), s->x1.data<float>(), x.numel());  // residual
  // The router reads the MoE's input in FP32 (a BF16 GEMM), so only the dense MLP takes it
  // quantised.
  Tensor y =
      moe ? moe->Forward(b, post_norm.Forward(b, s->x1, &s->b_rstd), valid, &s->moe, load, balance)
          : mlp->Forward(b, post_norm.Store(b, s->x1, &s->b_rstd), &s->mlp);
  be.Add(s->x1.data<float>(), y.data<float>(), y.numel());  // residual
  return y;
}

Tensor DLayer::Backward(const DeviceBatch& b, const Tensor& dy, int64_t valid,
                        double balance_scale, Saved* s) const {
  Backend& be = *b.be;
  const Tensor dn = moe ? moe->Backward(b, dy, valid, balance_scale, &s->moe)
                        : mlp->Backward(b, dy, &s->mlp);
  Tensor dx1 = post_norm.Backward(b, dn, s->x1, s->b_rstd);
  be.Add(dy.data<float>(), dx1.data<float>(), dx1.numel());  // residual
  const Tensor da = attn.Backward(b, dx1, &s->attn);
  Tensor dx = input_norm.Backward(b, da, s->x, s->a_rstd);
  be.Add(dx1.data<float>(), dx.data<float>(), dx.numel());  // residual
  *s = Saved{};
  return dx;
}

namespace {

DLinear MakeLinear(DeviceParams& ps, const std::string& name) {
  DLinear l;
  l.p = ps.Get(name);
  l.out = l.p->value.dim(0);
  l.in = l.p->value.dim(1);
  return l;
}

DNorm MakeNorm(DeviceParams& ps, const std::string& name, double eps) {
  DNorm n;
  n.p = ps.Get(name);
  n.dim = n.p->value.dim(0);
  n.eps = eps;
  return n;
}

DMlp MakeMlp(DeviceParams& ps, const std::string& prefix) {
  return {MakeLinear(ps, prefix + "gate_proj.weight"), MakeLinear(ps, prefix + "up_proj.weight"),
          MakeLinear(ps, prefix + "down_proj.weight")};
}

}  // namespace

std::unique_ptr<DLayer> MakeDeviceLayer(DeviceParams& ps, int64_t index, const ModelConfig& m) {
  const std::string p = "model.layers." + std::to_string(index) + ".";
  auto layer = std::make_unique<DLayer>();
  layer->input_norm = MakeNorm(ps, p + "input_layernorm.weight", m.rms_norm_eps);
  layer->post_norm = MakeNorm(ps, p + "post_attention_layernorm.weight", m.rms_norm_eps);

  DMla& a = layer->attn;
  a.H = m.hidden_size;
  a.N = m.num_attention_heads;
  a.dn = m.qk_nope_head_dim;
  a.dr = m.qk_rope_head_dim;
  a.dv = m.v_head_dim;
  a.rq = m.q_lora_rank;
  a.rkv = m.kv_lora_rank;
  a.scale = AttentionSoftmaxScale(m);
  const std::string pa = p + "self_attn.";
  constexpr double kLatentNormEps = 1e-6;  // trainer/mla.cc: HF's latent norms ignore the config
  if (a.rq > 0) {
    a.q_a = MakeLinear(ps, pa + "q_a_proj.weight");
    a.q_a_norm = MakeNorm(ps, pa + "q_a_layernorm.weight", kLatentNormEps);
    a.q_b = MakeLinear(ps, pa + "q_b_proj.weight");
  } else {
    a.q = MakeLinear(ps, pa + "q_proj.weight");
  }
  a.kv_a = MakeLinear(ps, pa + "kv_a_proj_with_mqa.weight");
  a.kv_a_norm = MakeNorm(ps, pa + "kv_a_layernorm.weight", kLatentNormEps);
  a.kv_b = MakeLinear(ps, pa + "kv_b_proj.weight");
  a.o = MakeLinear(ps, pa + "o_proj.weight");

  if (!m.IsMoeLayer(index)) {
    layer->mlp = std::make_unique<DMlp>(MakeMlp(ps, p + "mlp."));
    return layer;
  }
  auto moe = std::make_unique<DMoe>();
  moe->H = m.hidden_size;
  moe->E = m.n_routed_experts;
  moe->K = m.num_experts_per_tok;
  moe->F = m.moe_intermediate_size;
  moe->n_group = m.n_group;
  moe->topk_group = m.topk_group;
  moe->scaling = m.routed_scaling_factor;
  moe->norm_topk = m.norm_topk_prob;
  moe->has_shared = m.n_shared_experts > 0;
  moe->router = ps.Get(p + "mlp.gate.weight");
  moe->bias = ps.Get(p + "mlp.gate.e_score_correction_bias");
  auto names = [&](const char* proj) {
    std::vector<std::string> n;
    for (int64_t e = 0; e < moe->E; ++e)
      n.push_back(p + "mlp.experts." + std::to_string(e) + "." + proj + ".weight");
    return n;
  };
  ps.Stack(names("gate_proj"), &moe->gate_w, &moe->gate_g);
  ps.Stack(names("up_proj"), &moe->up_w, &moe->up_g);
  ps.Stack(names("down_proj"), &moe->down_w, &moe->down_g);
  if (moe->has_shared) moe->shared = MakeMlp(ps, p + "mlp.shared_experts.");
  layer->moe = std::move(moe);
  return layer;
}

}  // namespace MT_REAL_NS
}  // namespace mt

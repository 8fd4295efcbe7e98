// trainer/device_layers.h: the DeepseekV3 layers over a Backend (kernels/backend.h), so
// that the training step runs wherever the backend's device is: the modules of
// trainer/mla.h, mlp.h, moe.h and decoder_layer.h once more, on device tensors.
//
// Same math and, on the CPU backend, the same order of operations as those modules (the
// reference): tests/trainer/device_model_test.cc holds the two to the last bits. What
// differs is how the experts run: all of one layer's experts are one grouped GEMM over the
// tokens permuted by expert (MoePlanBuild), with no host synchronisation per expert, and
// the experts' weights are stacked [E, N, K] per projection.
//
// training.precision fp32, bf16 and fp8 (DeviceBatch); each layer's forward and its
// backward (input and weight gradients at once) sit side by side. Float build only.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kernels/backend.h"
#include "trainer/config.h"
#include "trainer/params.h"
#include "trainer/precision.h"

namespace mt {
inline namespace MT_REAL_NS {

// A host parameter's device copy: value and gradient, views of DeviceParams' flat buffers
// at `offset`.
struct DeviceParam {
  Param* host = nullptr;
  int64_t offset = 0;  // in DeviceParams::values() (and grads(), when trainable)
  Tensor value, grad;  // expert weights: slices of their layer's [E, N, K] stacks
};

// How the device model keeps AdamW's state (ZeroAdamW's choices).
struct DeviceOptimizerLayout {
  int dp_size = 1, dp_rank = 0;  // ZeRO-1: the moments are split over dp_size ranks
  DType moments = DType::kF32;   // optimizer.moment_dtype: kF32, or kBF16 bit patterns
};

// Every parameter of a ParamStore on one backend. Values, gradients and AdamW's moments
// each live in one flat buffer, so that zeroing the gradients, their norm, clipping and
// AdamW are a launch or two over the whole model rather than a few per parameter (DeepSeek's
// 2.5B benchmark model has ~700 parameters), and data parallelism is one reduce-scatter and
// one all-gather (ZeRO-1, as trainer/zero_optimizer.h). The layout, by optimizer class:
//   values [Pp + Ps] = trainable with weight decay | trainable without | padding | state
//                      (the routers' e_score_correction_bias, which AdamW does not touch)
//   grads [Pp]       = the trainable classes at the values' offsets, zero padding to Pp, a
//                      multiple of the `shards` data-parallel ranks
//   grad_shard [Pp / shards] = this rank's shard of the reduced gradients: elements
//                      [shard_begin, shard_end) (with one rank, grads itself)
//   m, v [Pp / shards] = AdamW's moments of the same elements, FP32 or BF16 bits
// An expert projection's E weights sit back to back, as the [E, N, K] stack the grouped
// GEMMs read.
class DeviceParams {
 public:
  DeviceParams(Backend* backend, ParamStore* host, const DeviceOptimizerLayout& layout = {});
  Backend& backend() const { return *be_; }
  // The device copy of `name` (uploaded on first use).
  DeviceParam* Get(const std::string& name);
  // The weights `names` [N, K] of E experts as one [E, N, K] stack, value and gradient;
  // each becomes a slice of it. Call before Get() of any of them.
  void Stack(const std::vector<std::string>& names, Tensor* value, Tensor* grad);
  // All parameters, in the host store's order (registered or not: checked).
  std::vector<DeviceParam*> All() const;
  // Copies every value (and, with grads, gradient) back to the host parameters.
  void Download(bool grads) const;

  // The flat buffers (above).
  Tensor& values() { return values_; }
  Tensor& grads() { return grads_; }
  Tensor& grad_shard() { return grad_shard_; }
  Tensor& m() { return m_; }
  Tensor& v() { return v_; }
  int64_t decayed() const { return end_[0]; }    // [0, decayed) take weight decay
  int64_t trainable() const { return end_[1]; }  // [decayed, trainable) do not
  int64_t padded() const { return padded_; }     // Pp
  int64_t shard_begin() const { return shard_begin_; }
  int64_t shard_size() const { return shard_size_; }
  DType moment_dtype() const { return m_.dtype(); }
  // Moves whenever the values change (DeviceModel::OptimizerStep calls ValuesChanged):
  // copies derived from them, the FP8 weights DLinear and DMoe keep, are rebuilt when it
  // differs from theirs.
  int64_t version() const { return version_; }
  void ValuesChanged() { ++version_; }

 private:
  // The next `n` elements of `p`'s class; sets d->offset and the views of the flat buffers.
  void Place(DeviceParam* d, const Param& p, int64_t n);
  void Bind(DeviceParam* d, std::vector<int64_t> shape) const;

  Backend* be_;
  ParamStore* host_;
  Tensor values_, grads_, grad_shard_, m_, v_;
  int64_t next_[3] = {}, end_[3] = {};  // per class: the next free offset, the class's end
  int64_t padded_ = 0, shard_begin_ = 0, shard_size_ = 0;
  int64_t version_ = 0;
  std::vector<std::unique_ptr<DeviceParam>> params_;  // parallel to host_->all()
};

// Shapes and tables one micro-batch's layers share. T = B * S tokens.
struct DeviceBatch {
  Backend* be = nullptr;
  int64_t B = 0, S = 0;
  const double* cos = nullptr;  // [S, dr/2] rotary tables on the device
  const double* sin = nullptr;
  // training.precision, as trainer/precision.h applies it: the Linear GEMMs in FP32, on
  // BF16-rounded operands (bf16) or in E4M3 with fine-grained scales (fp8); in bf16 and fp8
  // the recipe's BF16 operators (embedding, router, head, attention core) round to BF16.
  Precision precision = Precision::kFp32;
  int64_t weights_version = 0;  // DeviceParams::version() of the values the layers read
  bool round_bf16() const { return precision != Precision::kFp32; }
  bool fp8() const { return precision == Precision::kFp8; }
  int64_t T() const { return B * S; }
};

// A Linear's input as kept for its GEMMs (trainer/precision.h's StoredActivation): the
// values (fp32 and bf16, where the BF16 GEMMs round them), or in fp8 the Fprop's E4M3
// operand, which Wgrad re-tiles. Wgrad inputs the recipe keeps in higher precision (the
// attention output, the recomputed SwiGLU output) are values in fp8 too.
struct DAct {
  Tensor values;          // [T, in]
  QuantizedActivation q;  // fp8: [T, in] codes and 1x128 scales
  bool quantized() const { return q.data.defined(); }
};

// A parameter's values as the backend's BF16 GEMMs read them (Backend::Bf16Weight), rebuilt
// when DeviceParams::version moves: the recipe's BF16 GEMMs then round a weight once per
// optimizer step rather than on every call (the head: twice per 256-row chunk of logits).
struct KeptBf16 {
  int64_t version = -1;
  Tensor w;  // [numel of the values]
  const Tensor& Of(const DeviceBatch& b, const Tensor& values);
};

struct DLinear {
  DeviceParam* p = nullptr;  // [out, in]
  int64_t in = 0, out = 0;
  // x as this layer keeps it: quantised in fp8, the values otherwise.
  DAct Store(const DeviceBatch& b, const Tensor& x) const;
  Tensor Forward(const DeviceBatch& b, const DAct& x) const;  // [T,in] -> [T,out]
  Tensor Forward(const DeviceBatch& b, const Tensor& x) const { return Forward(b, Store(b, x)); }
  // dx [T,in] (+)= dy W (dx allocated when undefined).
  void BackwardInput(const DeviceBatch& b, const Tensor& dy, Tensor* dx, bool accumulate) const;
  // dW += dy^T x.
  void BackwardWeight(const DeviceBatch& b, const Tensor& dy, const DAct& x) const;
  // Both.
  void Backward(const DeviceBatch& b, const Tensor& dy, const DAct& x, Tensor* dx,
                bool accumulate) const {
    BackwardInput(b, dy, dx, accumulate);
    BackwardWeight(b, dy, x);
  }

  // fp8: W's E4M3 blocks for Fprop and W^T's for Dgrad, quantised once per version of the
  // values (an optimizer step's micro-batches share them) instead of once per GEMM.
  struct Fp8Weights {
    int64_t version = -1;
    QuantizedWeight w, wt;  // [out, in], [in, out]
  };
  const Fp8Weights& Fp8(const DeviceBatch& b) const;
  mutable Fp8Weights fp8_cache;
  mutable KeptBf16 bf16_cache;  // bf16
};

struct DNorm {
  DeviceParam* p = nullptr;  // [dim]
  int64_t dim = 0;
  double eps = 1e-6;
  Tensor Forward(const DeviceBatch& b, const Tensor& x, Tensor* rstd) const;  // [T,dim]
  // The output as the Linear it feeds keeps it (DLinear::Store): in fp8 the E4M3 operand
  // straight from the fused norm-and-quantise (Backend::RmsNormQuantizeFp8), since nothing
  // else reads the FP32 output there.
  DAct Store(const DeviceBatch& b, const Tensor& x, Tensor* rstd) const;
  Tensor Backward(const DeviceBatch& b, const Tensor& dy, const Tensor& x,
                  const Tensor& rstd) const;  // dx [T,dim]; dw +=
};

// The SwiGLU inputs g, u [T,F] as kept for backward: FP32 in fp32, BF16-rounded in bf16,
// E4M3 in fp8 (trainer/precision.h StoreSwigluInput).
struct SwigluIn {
  Tensor g, u;
  QuantizedActivation gq, uq;
};

// SwiGLU MLP: down(silu(gate(x)) * up(x)).
struct DMlp {
  struct Saved {
    DAct x;       // [T,H] gate's and up's input
    SwigluIn in;  // gate and up outputs
    Tensor h;     // [T,F] fp32: down's input; bf16 and fp8 recompute it in backward instead
  };
  DLinear gate, up, down;
  Tensor Forward(const DeviceBatch& b, const DAct& x, Saved* s) const;  // x [T,H] -> [T,H]
  Tensor Forward(const DeviceBatch& b, const Tensor& x, Saved* s) const {
    return Forward(b, gate.Store(b, x), s);
  }
  Tensor Backward(const DeviceBatch& b, const Tensor& dy, Saved* s) const;  // -> dx [T,H]
};

// Multi-head latent attention (trainer/mla.h).
struct DMla {
  struct Saved {
    DAct x, qa_n, latent_n;            // the projections' inputs
    Tensor qa, qa_rstd, latent, latent_rstd;
    Tensor q, k, v;  // [T,N,dqk] x2 after RoPE, [T,N,dv]
    Tensor attn;     // what the backend's attention keeps for backward
    Tensor o;        // [T, N*dv]
  };
  int64_t H = 0, N = 0, dn = 0, dr = 0, dv = 0, rq = 0, rkv = 0;
  double scale = 0;
  DLinear q_a, q_b, q, kv_a, kv_b, o;
  DNorm q_a_norm, kv_a_norm;
  Tensor Forward(const DeviceBatch& b, const DAct& x, Saved* s) const;  // x [T,H] -> [T,H]
  Tensor Backward(const DeviceBatch& b, const Tensor& dy, Saved* s) const;
};

// DeepSeekMoE: sigmoid router with group-limited top-k and the selection bias, routed
// experts as grouped GEMMs, shared experts (trainer/moe.h).
struct DMoe {
  struct Saved {
    Tensor x, scores, topk, weight;               // [T,H], [T,E], [T,K] I32, [T,K]
    Tensor src_token, slot_pos, offsets;          // the permutation plan (I32)
    DAct xp;                                      // [T*K,H] the experts' input
    SwigluIn in;                                  // [T*K,F] gate and up outputs
    Tensor h, ye;                                 // [T*K,F] (fp32 only, as DMlp's), [T*K,H]
    Tensor f;                                     // [B,E] F64 balance-loss fractions
    DMlp::Saved shared;
  };
  int64_t H = 0, E = 0, K = 0, F = 0, n_group = 1, topk_group = 1;
  double scaling = 1;
  bool norm_topk = true, has_shared = false;
  DeviceParam* router = nullptr;  // [E,H]
  DeviceParam* bias = nullptr;    // [E]
  Tensor gate_w, up_w, down_w;  // [E,F,H], [E,F,H], [E,H,F] stacked expert weights
  // fp8: the stacks quantised per expert, once per version of the values (as DLinear's).
  struct Fp8Experts {
    int64_t version = -1;
    QuantizedExperts gate, up, down;
  };
  const Fp8Experts& Fp8(const DeviceBatch& b) const;  // fp8 only
  mutable Fp8Experts fp8_cache;
  // BF16 copies: the router's (bf16 and fp8), the stacks' (bf16).
  mutable KeptBf16 router_bf16, gate_bf16, up_bf16, down_bf16;
  // Their gradients, accumulated by the const Backward as a DeviceParam's are (through a
  // pointer): the stacks are the storage of the experts' DeviceParams.
  mutable Tensor gate_g, up_g, down_g;
  DMlp shared;
  RouteShape Shape(const DeviceBatch& b, int64_t valid) const;
  // load [E] (I64) += this micro-batch's choices; *balance (F64) += its balance loss.
  Tensor Forward(const DeviceBatch& b, const Tensor& x, int64_t valid, Saved* s, int64_t* load,
                 double* balance) const;
  // balance_scale = d(total loss)/d(this layer's balance loss).
  Tensor Backward(const DeviceBatch& b, const Tensor& dy, int64_t valid, double balance_scale,
                  Saved* s) const;
};

// One decoder layer: x1 = x + MLA(norm(x)); y = x1 + FFN(norm(x1)).
struct DLayer {
  struct Saved {
    Tensor x, a_rstd, x1, b_rstd;
    DMla::Saved attn;
    DMlp::Saved mlp;
    DMoe::Saved moe;
  };
  DNorm input_norm, post_norm;
  DMla attn;
  std::unique_ptr<DMlp> mlp;
  std::unique_ptr<DMoe> moe;
  Tensor Forward(const DeviceBatch& b, const Tensor& x, int64_t valid, Saved* s, int64_t* load,
                 double* balance) const;
  Tensor Backward(const DeviceBatch& b, const Tensor& dy, int64_t valid, double balance_scale,
                  Saved* s) const;
};

// The SwiGLU of DMlp and the experts: h = silu(g) * u from g, u [T,F], which are kept in
// *in as the precision keeps them (h itself only in fp32, in *keep_h); and its backward dg,
// du from dh and the kept inputs, with h rebuilt from them when it was not kept
// (DeepSeek-V3's recompute).
Tensor SwigluForwardKeep(const DeviceBatch& b, const Tensor& g, const Tensor& u, SwigluIn* in,
                         Tensor* keep_h);
Tensor SwigluBackwardRecompute(const DeviceBatch& b, const Tensor& dh, const SwigluIn& in,
                               Tensor* h, Tensor* du);

// The layer `index` ("model.layers.<index>.") of model `m`, its parameters from `ps`.
std::unique_ptr<DLayer> MakeDeviceLayer(DeviceParams& ps, int64_t index, const ModelConfig& m);

}  // namespace MT_REAL_NS
}  // namespace mt

// trainer/device_layers.h: the DeepseekV3 layers over a Backend (kernels/backend.h), so
// that the training step runs wherever the backend's device is: the modules of
// trainer/mla.h, mlp.h, moe.h and decoder_layer.h once more, on device tensors.
//
// Same math and, on the CPU backend, the same order of operations as those modules (the
// reference): tests/trainer/device_model_test.cc holds the two to the last bits. What
// differs is how the experts run: all of one layer's experts are one grouped GEMM over the
// tokens permuted by expert (MoePlanBuild), with no host synchronisation per expert, and
// the experts' weights are stacked [E, N, K] per projection. Under expert parallelism a
// rank stacks only its own experts and exchanges tokens with its EP group
// (device_moe_ep.cc).
//
// training.precision fp32, bf16 and fp8 (DeviceBatch); each layer's forward and its
// backward sit side by side. The backward takes the input gradients at once and the weight
// gradients at once or, when the batch queues them (DeviceBatch::WeightGrad), later: the
// split zero-bubble schedules need, with the CPU modules' choice of which gradients wait
// (the Linears', the router's and the experts'; the norms' never). Float build only.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kernels/backend.h"
#include "parallel/communicator.h"
#include "trainer/config.h"
#include "trainer/device_moe_ep_plan.h"
#include "trainer/device_params.h"
#include "trainer/params.h"
#include "trainer/precision.h"

namespace mt {
inline namespace MT_REAL_NS {

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
  // A split backward's weight-gradient passes (DeviceModel::BackwardInput queues them,
  // BackwardWeight runs them in order); null: the layers take their weight gradients at
  // once. Either way each parameter's gradient sees the same calls on the same operands.
  std::vector<std::function<void()>>* weight_passes = nullptr;
  // Runs `pass` (dW +=) now, or queues it. It holds by value the tensors it reads, so a
  // queued pass keeps them alive until it runs; no pass reads the weights or their kept
  // copies (Kept), and they do not change between the two halves of a step.
  template <typename Pass>
  void WeightGrad(Pass&& pass) const {
    if (weight_passes)
      weight_passes->emplace_back(std::forward<Pass>(pass));
    else
      pass();
  }
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

// A copy derived from parameter values (a weight rounded to BF16 or quantised to E4M3),
// rebuilt by `make` only when DeviceParams::version has moved since: the GEMMs then convert
// a weight once per optimizer step rather than on every call (the head: twice per chunk of
// logits).
template <typename T>
struct Kept {
  int64_t version = -1;
  T value;
  template <typename Make>
  const T& Of(const DeviceBatch& b, Make make) {
    if (version != b.weights_version) {
      value = make();
      version = b.weights_version;
    }
    return value;
  }
};

// The values as the backend's BF16 GEMMs read them (Backend::Bf16Weight).
struct KeptBf16 : Kept<Tensor> {  // [numel of the values]
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
  // dW += dy^T x, now or queued (DeviceBatch::WeightGrad).
  void BackwardWeight(const DeviceBatch& b, const Tensor& dy, const DAct& x) const;
  // Both.
  void Backward(const DeviceBatch& b, const Tensor& dy, const DAct& x, Tensor* dx,
                bool accumulate) const {
    BackwardInput(b, dy, dx, accumulate);
    BackwardWeight(b, dy, x);
  }

  // fp8: W's E4M3 blocks for Fprop and W^T's for Dgrad, kept (an optimizer step's
  // micro-batches share them).
  struct Fp8Weights {
    QuantizedWeight w, wt;  // [out, in], [in, out]
  };
  const Fp8Weights& Fp8(const DeviceBatch& b) const;
  mutable Kept<Fp8Weights> fp8_cache;
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

// Expert parallelism (parallel.ep > 1): this rank holds routed experts [rank * E / size,
// (rank + 1) * E / size) of every MoE layer and exchanges tokens with the other ranks of its
// EP group (device_moe_ep.cc). Not owned.
struct DeviceExpertGroup {
  int size = 1, rank = 0;
  Communicator* host = nullptr;    // host buffers: the per-expert row counts (MPI)
  Communicator* device = nullptr;  // the backend's buffers: the rows (the same MPI group on
                                   // the CPU backend, NCCL on CUDA)
};

// One projection's stacked expert weights [E, N, K] as the precision's grouped GEMMs read
// them: the FP32 values, and the copy DMoe keeps (fp8: E4M3, bf16: BF16).
struct ExpertWeight {
  const Tensor* values = nullptr;
  const QuantizedExperts* fp8 = nullptr;
  const Tensor* bf16 = nullptr;
};

// DeepSeekMoE: sigmoid router with group-limited top-k and the selection bias, routed
// experts as grouped GEMMs, shared experts (trainer/moe.h).
struct DMoe {
  // A started row exchange (Communicator::IAllToAllV) and the buffers it reads and writes,
  // kept alive until it has landed.
  struct InFlight {
    std::shared_ptr<Request> request;
    Tensor from, to;
  };
  // What an expert-parallel micro-batch keeps of its exchange (device_moe_ep.cc): per slot
  // (EpExchangePlan) and per (token, rank) row (the dedupe plans, device_moe_ep_plan.h).
  struct Exchange : EpExchangePlan {
    EpDedupeSend dedupe_send;
    EpDedupeReceive dedupe_receive;
    // On the device (I32): `offsets` [P, E_l+1], the receiver's expand [R], sum_offsets
    // [U_r+1] and sum_rows [R], the sender's token_offsets [T+1] and token_rows [U_s].
    Tensor recv_offsets, expand, sum_offsets, sum_rows, token_offsets, token_rows;
    std::vector<QuantizedActivation> xq;  // fp8: [P] the received E4M3 operand per source
    Tensor xr;                            // [R,H] the received rows (fp32, bf16)
    // Moving while the shared expert computes: the forward's dispatch (fp8: codes, then
    // their scales [R, H/128]), and the backward's first exchange (output gradients [R,H]).
    std::vector<InFlight> moving;
  };
  struct Saved {
    Tensor x, scores, topk, weight;       // [T,H], [T,E], [T,K] I32, [T,K]
    Tensor src_token, slot_pos, offsets;  // the permutation plan (I32)
    DAct xp;                              // [T*K,H] the experts' input (local experts)
    SwigluIn in;                          // [T*K,F] (or [R,F]) gate and up outputs
    Tensor h, ye;                         // [T*K,F] (fp32 only, as DMlp's), [T*K,H]
    Tensor f;                             // [B,E] F64 balance-loss fractions
    Exchange ex;                          // expert parallelism only
    DMlp::Saved shared;
  };
  int64_t H = 0, E = 0, K = 0, F = 0, n_group = 1, topk_group = 1;
  int64_t E_local = 0;  // experts on this rank: E, or E / ep->size
  double scaling = 1;
  bool norm_topk = true, has_shared = false;
  const DeviceExpertGroup* ep = nullptr;  // null or size 1: every expert local
  DeviceParam* router = nullptr;  // [E,H]
  DeviceParam* bias = nullptr;    // [E]
  Tensor gate_w, up_w, down_w;    // [E_l,F,H], [E_l,F,H], [E_l,H,F] stacked expert weights
  // fp8: the stacks quantised per expert, kept (as DLinear's).
  struct Fp8Experts {
    QuantizedExperts gate, up, down;
  };
  const Fp8Experts& Fp8(const DeviceBatch& b) const;  // fp8 only
  mutable Kept<Fp8Experts> fp8_cache;
  // BF16 copies: the router's (bf16 and fp8), the stacks' (bf16).
  mutable KeptBf16 router_bf16, gate_bf16, up_bf16, down_bf16;
  // The three projections' weights as the batch's precision reads them.
  struct Weights {
    ExpertWeight gate, up, down;
  };
  Weights KeptWeights(const DeviceBatch& b) const;
  // Their gradients, accumulated by the const Backward as a DeviceParam's are (through a
  // pointer): the stacks are the storage of the experts' DeviceParams.
  mutable Tensor gate_g, up_g, down_g;
  DMlp shared;
  RouteShape Shape(const DeviceBatch& b, int64_t valid) const;
  bool parallel() const { return ep && ep->size > 1; }
  // load [E] (I64) += this micro-batch's choices; *balance (F64) += its balance loss.
  // Collective over the EP group when parallel().
  Tensor Forward(const DeviceBatch& b, const Tensor& x, int64_t valid, Saved* s, int64_t* load,
                 double* balance) const;
  // balance_scale = d(total loss)/d(this layer's balance loss).
  Tensor Backward(const DeviceBatch& b, const Tensor& dy, int64_t valid, double balance_scale,
                  Saved* s) const;

 private:
  // The routed experts on the permuted rows xp [T*K,H] (by expert) -> s->ye [T*K,H], and
  // back: dye [T*K,H] -> dxp [T*K,H], the expert weights' gradients accumulated.
  void ExpertsForward(const DeviceBatch& b, const Tensor& xp, Saved* s) const;
  Tensor ExpertsBackward(const DeviceBatch& b, const Tensor& dye, Saved* s) const;
  // Under expert parallelism (device_moe_ep.cc) each destination rank gets the tokens x
  // [T,H] of its experts (once per token) and runs them, in two halves each way: the Start*
  // half plans and starts the first exchange, which moves while Forward and Backward run
  // the shared expert (Megatron's moe_shared_expert_overlap); the Experts* half lands it and
  // does the rest, returning s->ye [T*K,H] and the tokens' gradient [T,H].
  void StartDispatchEp(const DeviceBatch& b, const Tensor& x, Saved* s) const;
  void ExpertsForwardEp(const DeviceBatch& b, Saved* s) const;
  void StartCombineBackwardEp(const DeviceBatch& b, const Tensor& dye, Saved* s) const;
  Tensor ExpertsBackwardEp(const DeviceBatch& b, Saved* s) const;
};

// The three grouped expert GEMMs at the batch's precision (device_moe.cc): rows
// [offsets[e], offsets[e+1]) of x run through expert e of the stack w [E, N, K].
struct GroupedGemms {
  Backend* be;
  Precision precision;
  bool fp8() const { return precision == Precision::kFp8; }
  bool bf16() const { return precision == Precision::kBf16; }
  // The input rows as the experts keep them: quantised (per row, so all rows at once
  // equals each expert quantising its own) in fp8.
  DAct Store(const Tensor& x) const;
  void Forward(const DAct& x, const ExpertWeight& w, Tensor* y, const int32_t* offsets,
               int64_t rows, int64_t E, int64_t K, int64_t N) const;
  void BackwardInput(const Tensor& dy, const ExpertWeight& w, Tensor* dx, const int32_t* offsets,
                     int64_t rows, int64_t E, int64_t K, int64_t N, bool accumulate) const;
  void BackwardWeight(const Tensor& dy, const DAct& x, Tensor* dw, const int32_t* offsets,
                      int64_t rows, int64_t E, int64_t K, int64_t N) const;
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

// The layer `index` ("model.layers.<index>.") of model `m`, its parameters from `ps`; with
// `ep` (size > 1) its MoE holds only this rank's experts (ep must outlive the layer).
std::unique_ptr<DLayer> MakeDeviceLayer(DeviceParams& ps, int64_t index, const ModelConfig& m,
                                        const DeviceExpertGroup* ep = nullptr);

}  // namespace MT_REAL_NS
}  // namespace mt

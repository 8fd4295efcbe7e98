// trainer/moe.h: DeepSeekMoE: shared experts plus routed experts behind a sigmoid router
// with group-limited top-k and the aux-loss-free selection bias (DeepSeek-V3 §2.1.2).
//
// The bias (e_score_correction_bias) only chooses experts; the gate weights come from the
// unbiased sigmoid scores, normalised over the chosen k and scaled by
// routed_scaling_factor. The sequence-wise balance loss and the expert loads for the bias
// update are computed here over the *valid* positions of each sequence (MTP module k
// leaves out the last k positions of every sequence).
//
// Expert parallelism: with a dispatcher (parallel/expert_dispatch.h) this rank holds only
// the experts of its EP rank, under their global names; each rank routes its own tokens,
// and the dispatcher carries them to the experts' ranks and the outputs back
// (moe_parallel.cc). Routing, gate weights, balance loss and loads are computed where the
// tokens are, exactly as without it.
#pragma once

#include <string>
#include <vector>

#include "parallel/expert_dispatch.h"
#include "trainer/config.h"
#include "trainer/mlp.h"

namespace mt {
inline namespace MT_REAL_NS {

class Moe {
 public:
  struct Saved {
    StoredActivation x;         // [T, H] router input, for its Wgrad (BF16 in bf16/fp8)
    Tensor scores;              // [T, E] sigmoid affinities
    std::vector<int32_t> topk;  // [T, K] chosen experts
    std::vector<Real> weight;   // [T, K] gate weights
    std::vector<std::vector<int64_t>> slots;  // per expert: indices t*K+k routed to it
    std::vector<Tensor> expert_out;           // per expert: [T_e, H] outputs (unweighted)
    std::vector<SwigluMlp::Saved> experts;    // per local expert (per expert and source
                                              // rank under expert parallelism)
    DispatchHandle handle;  // expert parallelism: the exchange of this micro-batch
    std::vector<std::vector<int64_t>> segments;  // [local expert][sources + 1] row bounds
    Tensor slot_out;  // expert parallelism: [T*K, H] expert output of each (t, k)
    SwigluMlp::Saved shared;
    Tensor d_logits;        // [T, E] kept for the router's weight gradient
    std::vector<double> f;  // [B, E] balance-loss load fractions f_i per sequence
    int64_t B = 0, S = 0, valid = 0;
  };

  Moe() = default;
  // `dispatcher` (not owned, may be null): the EP group's token exchange.
  Moe(ParamStore& ps, const std::string& prefix, const ModelConfig& m,
      ExpertDispatcher* dispatcher = nullptr);

  // x [B*S, H] -> y [B*S, H]. Only positions s < valid of each sequence count towards the
  // balance loss and the expert loads. Adds this layer's balance loss (mean over the B
  // sequences of sum_i f_i P_i) to *balance_loss and its loads to load[E].
  Tensor Forward(const Tensor& x, int64_t B, int64_t S, int64_t valid, Saved* s,
                 double* balance_loss, int64_t* load) const;
  // dy [B*S, H] -> dx; balance_grad_scale = d(total loss)/d(this layer's balance loss).
  Tensor BackwardInput(const Tensor& dy, double balance_grad_scale, Saved* s) const;
  void BackwardWeight(Saved* s) const;

  Param* bias() const { return bias_; }
  int64_t num_experts() const { return E_; }

 private:
  void Route(const Real* scores, int32_t* topk) const;
  // The routed experts' part of Forward (y += sum_k w_tk expert_k(x_t)) and of
  // BackwardInput (dx += d/dx of it, dw[t*K+k] = d loss / d w_tk): with every expert local,
  // or through the dispatcher.
  void ExpertsForward(const Tensor& x, Saved* s, Tensor* y) const;
  void ExpertsBackward(const Tensor& dy, Saved* s, Tensor* dx, std::vector<double>* dw) const;
  void ExpertsForwardParallel(const Tensor& x, Saved* s, Tensor* y) const;
  void ExpertsBackwardParallel(const Tensor& dy, Saved* s, Tensor* dx,
                               std::vector<double>* dw) const;
  void BackwardWeightParallel(Saved* s) const;

  int64_t H_, E_, K_, n_group_, topk_group_;
  double scaling_;
  bool norm_topk_;
  Param* gate_;  // [E, H] router
  Param* bias_;  // [E] e_score_correction_bias: selection only, updated by the sign rule
  const PrecisionPolicy* precision_;  // the router's GEMMs are BF16 ones
  ExpertDispatcher* dispatcher_ = nullptr;
  int64_t first_expert_ = 0;        // global id of experts_[0]
  std::vector<SwigluMlp> experts_;  // the local experts
  SwigluMlp shared_;
  bool has_shared_;
};

}  // namespace MT_REAL_NS
}  // namespace mt

// trainer/moe.h: DeepSeekMoE: shared experts plus routed experts behind a sigmoid router
// with group-limited top-k and the aux-loss-free selection bias (DeepSeek-V3 §2.1.2).
//
// The bias (e_score_correction_bias) only chooses experts; the gate weights come from the
// unbiased sigmoid scores, normalised over the chosen k and scaled by
// routed_scaling_factor. The sequence-wise balance loss and the expert loads for the bias
// update are computed here over the *valid* positions of each sequence (MTP module k
// leaves out the last k positions of every sequence).
#pragma once

#include <string>
#include <vector>

#include "trainer/config.h"
#include "trainer/mlp.h"

namespace mt {
inline namespace MT_REAL_NS {

class Moe {
 public:
  struct Saved {
    StoredActivation x;  // [T, H] router input, for its Wgrad (BF16 in bf16/fp8)
    Tensor scores;  // [T, E] sigmoid affinities
    std::vector<int32_t> topk;    // [T, K] chosen experts
    std::vector<Real> weight;     // [T, K] gate weights
    std::vector<std::vector<int64_t>> slots;  // per expert: indices t*K+k routed to it
    std::vector<Tensor> expert_out;            // per expert: [T_e, H] outputs (unweighted)
    std::vector<SwigluMlp::Saved> experts;     // per expert
    SwigluMlp::Saved shared;
    Tensor d_logits;  // [T, E] kept for the router's weight gradient
    std::vector<double> f;  // [B, E] balance-loss load fractions f_i per sequence
    int64_t B = 0, S = 0, valid = 0;
  };

  Moe() = default;
  Moe(ParamStore& ps, const std::string& prefix, const ModelConfig& m);

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

  int64_t H_, E_, K_, n_group_, topk_group_;
  double scaling_;
  bool norm_topk_;
  Param* gate_;  // [E, H] router
  Param* bias_;  // [E] e_score_correction_bias: selection only, updated by the sign rule
  const PrecisionPolicy* precision_;  // the router's GEMMs are BF16 ones
  std::vector<SwigluMlp> experts_;
  SwigluMlp shared_;
  bool has_shared_;
};

}  // namespace MT_REAL_NS
}  // namespace mt

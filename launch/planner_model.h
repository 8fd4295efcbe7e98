// launch/planner_model.h: model arithmetic for the planner: parameter counts per module type
// and the per-layer multiply-accumulates behind the pipeline stage costs, for a DeepseekV3
// ModelConfig.
//
// Training FLOPs per token come from trainer/flops.h (Megatron-LM's formula, the same one the
// trainer's MFU uses): 3 passes (forward, input gradient, weight gradient) x 2 FLOPs per
// multiply-accumulate, causal attention at half the s^2 term, the router GEMM left out, MTP
// layers counted as extra MoE layers plus their eh_proj, norms and one more logits GEMM each.
// The MAC helpers below are the same terms split per layer; summed over the stages x 6 they
// give that total (tests/launch/planner_test.cc checks it).
#pragma once

#include <cstdint>

#include "trainer/config.h"

namespace mt::plan {

// Main decoder layers that are MoE / dense.
int64_t NumMoeLayers(const ModelConfig& m);
int64_t NumDenseLayers(const ModelConfig& m);
// Whether the MTP modules' decoder layers are MoE (they sit at layer index L and follow the
// same first_k_dense_replace / moe_layer_freq rule).
bool MtpLayersAreMoe(const ModelConfig& m);

// ---- Parameters (HF tensor shapes, reference/ecosystem.md §1.2) ----
double AttentionParams(const ModelConfig& m);     // MLA projections + their norms + 2 layer norms
double DenseMlpParams(const ModelConfig& m);      // gate/up/down
double RouterParams(const ModelConfig& m);        // gate [E, h] + e_score_correction_bias [E]
double RoutedExpertParams(const ModelConfig& m);  // all E experts of one layer
double SharedExpertParams(const ModelConfig& m);  // the fused shared expert of one layer
double MtpGlueParams(const ModelConfig& m);       // enorm, hnorm, eh_proj, shared_head.norm

struct ParamCounts {
  double embedding = 0;  // [V, h]
  double head = 0;       // lm_head [V, h] (0 when tied) + final norm
  double attention = 0;  // all main layers
  double dense_mlp = 0;
  double router = 0;
  double routed_experts = 0;
  double shared_experts = 0;
  double mtp = 0;            // unique to the MTP modules; embedding and head are shared
  double mtp_active = 0;     // MTP parameters one token uses
  double active_routed = 0;  // routed-expert parameters one token uses (k of E per layer)

  double Total() const;  // main model incl. embedding and head, without MTP
  double TotalWithMtp() const { return Total() + mtp; }
  double Active() const;              // per token, incl. embedding and head, without MTP
  double ActiveNonEmbedding() const;  // Active() minus embedding and head
};
ParamCounts CountParameters(const ModelConfig& m);

// ---- Multiply-accumulates per token of one forward pass ----
double AttentionProjectionMacs(const ModelConfig& m);  // incl. the latent norms, as Megatron
double AttentionCoreMacs(const ModelConfig& m, int64_t seq_len);  // QK^T and PV, causal
double DenseMlpMacs(const ModelConfig& m);
double MoeMlpMacs(const ModelConfig& m);   // k routed experts + the shared expert
double MtpGlueMacs(const ModelConfig& m);  // 3h norms + eh_proj 2h^2, as Megatron
double LogitsMacs(const ModelConfig& m);

}  // namespace mt::plan

// trainer/flops.h: training FLOPs per token by Megatron-LM's formula (MLA branch of
// num_floating_point_operations), the figure behind every MFU we print.
//
// Conventions (reference/perf.md §2): factor 6 = forward + dgrad + wgrad, 2 FLOPs per
// multiply-add; causal attention counted at half the square; MTP modules counted as
// extra MoE layers plus their norms, eh_proj and logits when with_mtp.
#pragma once

#include <cstdint>

#include "trainer/config.h"

namespace mt {

struct FlopsBreakdown {
  double dense_mlp = 0, routed_experts = 0, shared_experts = 0;
  double attention_projections = 0, attention_core = 0, mtp_extra = 0, logits = 0;
  double total() const {
    return dense_mlp + routed_experts + shared_experts + attention_projections + attention_core +
           mtp_extra + logits;
  }
};

FlopsBreakdown TrainingFlopsPerToken(const ModelConfig& m, int64_t seq_len, bool with_mtp);

// The CPU's measured single-precision GEMM rate (FLOP/s) over `seconds`: the MFU
// denominator on a machine without a published peak.
double MeasureCpuGemmFlops(double seconds = 0.5);

}  // namespace mt

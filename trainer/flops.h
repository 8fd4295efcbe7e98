// trainer/flops.h: training FLOPs per token by Megatron-LM's formula (MLA branch of
// num_floating_point_operations), the figure behind every MFU we print.
//
// Conventions (reference/perf.md §2): factor 6 = forward + dgrad + wgrad, 2 FLOPs per
// multiply-add; causal attention counted at half the square; MTP modules counted as
// extra MoE layers plus their norms, eh_proj and logits when with_mtp.
#pragma once

#include <cstdint>
#include <string>

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

// A GPU's dense peak FLOP/s for what the step's GEMMs run in at training.precision
// `precision` (fp32: CUDA cores, no TF32; bf16 and fp8: tensor cores), from the device's
// name as CUDA reports it ("NVIDIA H200"); 0 for a device whose peak is not tabled. Hopper
// SXM boards (H100, H800, H200): 66.9, 989.4 and 1978.9 TFLOP/s; H100 PCIe and NVL lower.
double GpuDensePeakFlops(const std::string& device_name, const std::string& precision);

}  // namespace mt

#include "trainer/flops.h"

#include <chrono>
#include <vector>

#include "kernels/ops.h"

namespace mt {

FlopsBreakdown TrainingFlopsPerToken(const ModelConfig& m, int64_t seq_len, bool with_mtp) {
  const double h = m.hidden_size, H = m.num_attention_heads, V = m.vocab_size;
  const double dn = m.qk_nope_head_dim, dr = m.qk_rope_head_dim, dv = m.v_head_dim;
  const double s = static_cast<double>(seq_len);
  const double n_mtp = with_mtp ? static_cast<double>(m.num_nextn_predict_layers) : 0.0;
  double n_dense = 0, n_moe = 0;
  for (int64_t i = 0; i < m.num_hidden_layers; ++i) (m.IsMoeLayer(i) ? n_moe : n_dense) += 1;
  const double n_moe_all = n_moe + n_mtp;  // MTP layers are MoE layers (index >= k)
  const double layers = m.num_hidden_layers + n_mtp;
  FlopsBreakdown f;
  f.dense_mlp = 6 * h * 3 * m.intermediate_size * n_dense;
  f.routed_experts = 6 * h * 3 * m.moe_intermediate_size * m.num_experts_per_tok * n_moe_all;
  f.shared_experts = 6 * h * 3 * (m.moe_intermediate_size * m.n_shared_experts) * n_moe_all;
  const double q = m.q_lora_rank > 0 ? m.q_lora_rank * (h + H * (dn + dr) + 1) : h * H * (dn + dr);
  const double kv = m.kv_lora_rank * (h + H * (dn + dv) + 1) + h * dr;
  f.attention_projections = 6 * layers * (q + kv + H * dv * h);
  f.attention_core = 6 * layers * s * (H * (dn + dr) / 2 + H * dv / 2);
  f.mtp_extra = 6 * n_mtp * (3 * h + 2 * h * h);
  f.logits = 6 * h * V * (1 + n_mtp);
  return f;
}

double MeasureCpuGemmFlops(double seconds) {
  constexpr int64_t n = 512;
  std::vector<float> a(n * n, 1.0f), b(n * n, 0.5f), c(n * n);
  ops::Gemm<float>(false, true, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
  const auto start = std::chrono::steady_clock::now();
  int64_t reps = 0;
  double elapsed = 0;
  do {
    ops::Gemm<float>(false, true, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    ++reps;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  } while (elapsed < seconds);
  return 2.0 * n * n * n * reps / elapsed;
}

double GpuDensePeakFlops(const std::string& device_name, const std::string& precision) {
  struct Board {
    const char* name;  // a substring of the CUDA device name; more specific ones first
    double fp32, bf16, fp8;
  };
  static constexpr Board kBoards[] = {
      {"H100 PCIe", 51.2e12, 756.5e12, 1513e12}, {"H100 NVL", 60.0e12, 835.5e12, 1671e12},
      {"H100", 66.9e12, 989.4e12, 1978.9e12},    {"H800", 66.9e12, 989.4e12, 1978.9e12},
      {"H200", 66.9e12, 989.4e12, 1978.9e12},
  };
  for (const Board& b : kBoards)
    if (device_name.find(b.name) != std::string::npos)
      return precision == "fp8" ? b.fp8 : precision == "bf16" ? b.bf16 : b.fp32;
  return 0;
}

}  // namespace mt

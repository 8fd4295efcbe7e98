// launch/planner_memory.cc: memory per GPU (planner_estimate.h): weights, gradients, ZeRO-1
// optimizer shards, the activation stashes of the micro-batches in flight as the simulated
// schedule holds them, communication buffers and workspace.
#include <algorithm>

#include "launch/planner_estimate.h"
#include "launch/planner_model.h"

namespace mt::plan {

double MemoryEstimate::Total() const {
  return weights + gradients + optimizer + activations + comm_buffers + workspace;
}

// What one decoder layer stashes per token for its backward. Sizes: `stash` = BF16 (2 B);
// `cached` = inputs of FP8 GEMMs, kept in FP8 with one FP32 scale per 128 (DeepSeek-V3
// §3.3.3), else BF16; `o_in` = o_proj input, E5M6 (1.5 B) under fp8.
//   always:    layer input x and the post-attention residual (RMSNorm recompute and backward),
//              MLA latents c_q, c_kv, k_rope (the up-projections' inputs), attention output
//              (o_proj input), softmax log-sum-exp; MLP: SwiGLU inputs (gate/up outputs);
//              MoE: router scores and top-k, the dispatched expert inputs (wgrad of the
//              experts; rebuilding them would repeat the all-to-all), shared/routed gate/up.
//   none adds: the normalised inputs, normalised latents, Q/K/V after the up-projections,
//              the SwiGLU outputs (down-projection inputs).
//   selective: DeepSeek's recompute of RMSNorm, MLA up-projections and SwiGLU drops those.
//   full:      only x; the layer is recomputed in backward (its `none` stash is workspace).
// The combine needs no stash: d(gate_i) = <W_down^T dy, swiglu_i>, from recomputed values.
double LayerActivationBytes(const ModelConfig& m, bool moe, const std::string& precision,
                            const std::string& recompute) {
  const double h = m.hidden_size, H = m.num_attention_heads;
  const double stash = 2;
  const double cached = precision == "fp8" ? 1 + 4.0 / 128 : stash;
  const double o_in = precision == "fp8" ? 1.5 : stash;
  if (recompute == "full") return stash * h;
  const bool none = recompute == "none";
  double b = stash * h;  // x
  b += stash * (m.q_lora_rank + m.kv_lora_rank + m.qk_rope_head_dim);
  b += o_in * H * m.v_head_dim + 4 * H;
  b += stash * h;  // residual after attention
  if (none) {
    b += cached * (h + m.q_lora_rank + m.kv_lora_rank);  // normalised inputs
    b += stash * H * (2.0 * (m.qk_nope_head_dim + m.qk_rope_head_dim) + m.v_head_dim);  // Q, K, V
    b += (moe ? stash + cached : cached) * h;  // MLP input (router reads BF16, GEMMs FP8)
  }
  if (!moe) {
    b += cached * 2 * m.intermediate_size + (none ? cached * m.intermediate_size : 0);
    return b;
  }
  const double k = m.num_experts_per_tok, f = m.moe_intermediate_size;
  const double f_sh = static_cast<double>(m.n_shared_experts) * f;
  b += 4.0 * m.n_routed_experts + 8 * k;  // scores, top-k ids and weights
  b += cached * h * k;                    // dispatched inputs
  b += cached * 2 * f * k + cached * 2 * f_sh;
  if (none) b += cached * f * k + cached * f_sh;
  return b;
}

namespace {

// Stash of one micro-batch through one stage, bytes.
double StageActivationBytes(const ModelConfig& m, const Layout& l, const Stage& s) {
  const double tokens = static_cast<double>(l.micro_batch) * l.seq_len;
  double per_token = 0;
  for (int64_t i = s.first_layer; i < s.first_layer + s.num_layers; ++i) {
    per_token += LayerActivationBytes(m, m.IsMoeLayer(i), l.precision, l.recompute);
  }
  if (s.head) {
    const double h = m.hidden_size;
    per_token += 2 * h * (1 + m.num_nextn_predict_layers);  // head inputs
    for (int64_t k = 0; k < m.num_nextn_predict_layers; ++k) {
      per_token += LayerActivationBytes(m, MtpLayersAreMoe(m), l.precision, l.recompute);
      per_token += 2 * 2 * h + 2 * 2 * h;  // enorm/hnorm inputs, eh_proj input
    }
  }
  return tokens * per_token;
}

}  // namespace

MemoryEstimate EstimateMemory(const ModelConfig& m, const ClusterSpec& c, const Layout& l,
                              const std::vector<Stage>& stages, const PipelineSchedule& s) {
  const double tokens = static_cast<double>(l.micro_batch) * l.seq_len;
  const bool fp8 = l.precision == "fp8";
  const double moment = l.moment_dtype == "bf16" ? 2 : 4;
  const int64_t expert_replicas = l.dp / l.ep;
  MemoryEstimate worst;
  for (int r = 0; r < s.num_ranks; ++r) {
    MemoryEstimate est;
    est.rank = r;
    est.capacity = c.UsableMemoryBytes();
    const StageParams p = RankParams(m, l, stages, s, r);
    const double all = p.linear + p.other + p.expert;
    // Under fp8 the GEMM weights live only in FP8 with 128x128 block scales: the same blocks
    // serve W in forward and W^T in backward (DeepSeek-V3 §3.3.2); the FP32 master copy is
    // part of the (sharded) optimizer state.
    const double gemm = p.linear + p.expert;
    est.weights = 2 * p.other + (fp8 ? (1 + 4.0 / (128 * 128)) * gemm : 2 * gemm);
    est.gradients = 4 * all;
    est.optimizer = (4 + 2 * moment) * ((p.linear + p.other) / l.dp + p.expert / expert_replicas);
    // Walk the schedule: a stash lives from its forward to its last backward action.
    std::vector<double> chunk_bytes(s.num_chunks);
    bool holds_head = false;
    for (int chunk = 0; chunk < s.num_chunks; ++chunk) {
      const Stage& st = stages[s.StageOf(r, chunk)];
      chunk_bytes[chunk] = StageActivationBytes(m, l, st);
      holds_head = holds_head || st.head;
    }
    double held = 0;
    int count = 0;
    for (const PipelineAction& a : s.actions[r]) {
      if (a.op == PipelineOp::kForward || a.op == PipelineOp::kForwardBackward) {
        held += chunk_bytes[a.chunk];
        ++count;
        if (held > est.activations) est.activations = held, est.activations_in_flight = count;
      }
      if (a.op == PipelineOp::kBackward || a.op == PipelineOp::kBackwardWeight) {
        held -= chunk_bytes[a.chunk], --count;
      } else if (a.op == PipelineOp::kForwardBackward) {
        held -= chunk_bytes[a.bwd_chunk], --count;
      }
    }
    // All-to-all receive buffers (dispatch + combine; two micro-batches in an F&B pair) and
    // P2P send/receive buffers for activations and gradients of each chunk.
    const double dispatch = fp8 ? 1 + 4.0 / 128 : 2;
    const int concurrent = s.kind == ScheduleKind::kDualPipe ? 2 : 1;
    if (l.ep > 1) {
      est.comm_buffers +=
          concurrent * tokens * m.num_experts_per_tok * m.hidden_size * (dispatch + 2);
    }
    if (l.pp > 1) est.comm_buffers += s.num_chunks * 4 * tokens * m.hidden_size * 2;
    // FP32 logits of one micro-batch; a fully recomputed layer's stash.
    if (holds_head) est.workspace += tokens * m.vocab_size * 4;
    if (l.recompute == "full") {
      est.workspace += tokens * LayerActivationBytes(m, NumMoeLayers(m) > 0, l.precision, "none");
    }
    if (r == 0 || est.Total() > worst.Total()) worst = est;
  }
  return worst;
}

}  // namespace mt::plan

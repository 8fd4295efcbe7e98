// kernels/cuda/router.h: DeepSeek-V3's MoE router on the GPU, and its CPU reference.
//
// From the router GEMM's logits: sigmoid affinities, group-limited top-k on score + bias
// (the bias only selects; groups outside the best topk_group are masked to -inf, as
// trainer/moe.cc Moe::Route does), gate weights from the unbiased scores (normalised over
// the chosen k when norm_topk, times routed_scaling_factor), and the per-expert loads of the
// valid positions (position s < valid in each length-S sequence) for the bias update.
//
// Selection order is total: higher score + bias first, the lower expert index on ties, so
// the chosen experts and their order are unique and the GPU equals the CPU exactly given
// the same scores. The comparison is done in double, as on the CPU.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace mt::cuda {

struct RouterShape {
  int64_t tokens = 0;      // T
  int64_t experts = 0;     // E
  int64_t top_k = 0;       // K
  int64_t n_group = 1;     // expert groups (E % n_group == 0)
  int64_t topk_group = 1;  // groups kept per token
  bool norm_topk = true;
  double scaling = 1.0;  // routed_scaling_factor
  int64_t seq_len = 0;   // S: loads count position t % S < valid (0: every token counts)
  int64_t valid = 0;
};

// logits [T, E] -> scores [T, E] (sigmoid), topk [T, K], weight [T, K]; load [E] +=.
// bias [E]. Requires K <= topk_group * E / n_group, E <= 1024.
void RouterForward(const float* logits, const float* bias, float* scores, int32_t* topk,
                   float* weight, int64_t* load, const RouterShape& shape, cudaStream_t stream);

namespace ref {
// The same from scores (the sigmoid is left to the caller, so a test can feed the GPU's
// scores and demand identical routing): scores [T, E], bias [E] -> topk [T, K], weight
// [T, K]; load [E] +=.
void RouteFromScores(const float* scores, const float* bias, int32_t* topk, float* weight,
                     int64_t* load, const RouterShape& shape);
}  // namespace ref

}  // namespace mt::cuda

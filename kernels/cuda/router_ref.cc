// kernels/cuda/router_ref.cc: the CPU reference of router.h: the selection of
// kernels/moe_route.h (what trainer/moe.cc's Moe::Route calls) and a line-by-line port of
// the weight/load loop of Moe::Forward.
// tests/gpu/router_ref_test.cc checks it against Moe itself.
#include "kernels/cuda/router.h"
#include "kernels/moe_route.h"

namespace mt::cuda::ref {

void RouteFromScores(const float* scores, const float* bias, int32_t* topk, float* weight,
                     int64_t* load, const RouterShape& sh) {
  const int64_t E = sh.experts, K = sh.top_k;
  for (int64_t t = 0; t < sh.tokens; ++t) {
    const float* sc = scores + t * E;
    int32_t* idx = topk + t * K;
    GroupLimitedTopK(sc, bias, E, K, sh.n_group, sh.topk_group, idx);
    double sum = 0;
    for (int64_t k = 0; k < K; ++k) sum += sc[idx[k]];
    for (int64_t k = 0; k < K; ++k) {
      double w = sc[idx[k]];
      if (sh.norm_topk) w /= sum + 1e-20;
      weight[t * K + k] = static_cast<float>(w * sh.scaling);
    }
    const bool counts = sh.seq_len == 0 || t % sh.seq_len < sh.valid;
    if (counts)
      for (int64_t k = 0; k < K; ++k) load[idx[k]] += 1;
  }
}

}  // namespace mt::cuda::ref

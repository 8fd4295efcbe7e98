// kernels/cuda/router_ref.cc: the CPU reference of router.h: the selection and gate
// weights of kernels/moe_route.h (what trainer/moe.cc calls) and the loads of the valid
// positions.
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
    GateWeights(sc, idx, K, sh.norm_topk, sh.scaling, weight + t * K);
    const bool counts = sh.seq_len == 0 || t % sh.seq_len < sh.valid;
    if (counts)
      for (int64_t k = 0; k < K; ++k) load[idx[k]] += 1;
  }
}

}  // namespace mt::cuda::ref

// kernels/cuda/router_ref.cc: the CPU reference of router.h, a line-by-line port of
// trainer/moe.cc (Moe::Route and the weight/load loop of Moe::Forward).
// tests/gpu/router_ref_test.cc checks it against Moe itself.
#include <algorithm>
#include <limits>
#include <utility>
#include <vector>

#include "kernels/cuda/router.h"

namespace mt::cuda::ref {

void RouteFromScores(const float* scores, const float* bias, int32_t* topk, float* weight,
                     int64_t* load, const RouterShape& sh) {
  const int64_t E = sh.experts, K = sh.top_k, group_size = E / sh.n_group;
  auto by_score = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  std::vector<double> c(E);
  std::vector<std::pair<double, int64_t>> groups(sh.n_group), cand;
  for (int64_t t = 0; t < sh.tokens; ++t) {
    const float* sc = scores + t * E;
    for (int64_t e = 0; e < E; ++e) c[e] = static_cast<double>(sc[e]) + bias[e];
    for (int64_t g = 0; g < sh.n_group; ++g) {
      double best = -std::numeric_limits<double>::infinity(), second = best;
      for (int64_t e = g * group_size; e < (g + 1) * group_size; ++e) {
        if (c[e] > best) {
          second = best;
          best = c[e];
        } else if (c[e] > second) {
          second = c[e];
        }
      }
      groups[g] = {group_size >= 2 ? best + second : best, g};
    }
    std::partial_sort(groups.begin(), groups.begin() + sh.topk_group, groups.end(), by_score);
    cand.clear();
    for (int64_t i = 0; i < sh.topk_group; ++i)
      for (int64_t e = groups[i].second * group_size; e < (groups[i].second + 1) * group_size; ++e)
        cand.push_back({c[e], e});
    std::partial_sort(cand.begin(), cand.begin() + K, cand.end(), by_score);
    int32_t* idx = topk + t * K;
    for (int64_t k = 0; k < K; ++k) idx[k] = static_cast<int32_t>(cand[k].second);
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

// kernels/moe_route.h: DeepSeek-V3's group-limited top-k expert selection for one token,
// the one definition the module model (trainer/moe.cc), the CPU backend
// (kernels/backend_cpu.cc) and the CUDA router's CPU reference (kernels/cuda/router_ref.cc)
// share (HF DeepseekV3TopkRouter, with DeepSeek's -inf masking of dropped groups).
//
// On score + bias (in double): each group of E / n_group experts is ranked by the sum of its
// best two (its best alone when a group has one expert), the best topk_group groups are
// kept, and the K best experts among them are chosen. Ties go to the lower index, so the
// choice and its order are unique: the GPU kernel (kernels/cuda/router.cu) is held to it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

namespace mt {

// scores [E], bias [E] -> topk [K] expert ids, best first.
template <typename T>
void GroupLimitedTopK(const T* scores, const T* bias, int64_t E, int64_t K, int64_t n_group,
                      int64_t topk_group, int32_t* topk) {
  const int64_t group_size = E / n_group;
  std::vector<double> c(E);
  for (int64_t e = 0; e < E; ++e) c[e] = static_cast<double>(scores[e]) + bias[e];
  std::vector<std::pair<double, int64_t>> groups(n_group);
  for (int64_t g = 0; g < n_group; ++g) {
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
  auto by_score = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  std::partial_sort(groups.begin(), groups.begin() + topk_group, groups.end(), by_score);
  std::vector<std::pair<double, int64_t>> cand;
  cand.reserve(topk_group * group_size);
  for (int64_t i = 0; i < topk_group; ++i)
    for (int64_t e = groups[i].second * group_size; e < (groups[i].second + 1) * group_size; ++e)
      cand.push_back({c[e], e});
  std::partial_sort(cand.begin(), cand.begin() + K, cand.end(), by_score);
  for (int64_t k = 0; k < K; ++k) topk[k] = static_cast<int32_t>(cand[k].second);
}

}  // namespace mt

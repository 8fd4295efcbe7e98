// kernels/cuda/moe_permute_ref.cc: CPU references of moe_permute.h, written the way
// trainer/moe.cc fills and walks its per-expert slot lists.
#include <algorithm>
#include <utility>
#include <vector>

#include "kernels/cuda/moe_permute.h"

namespace mt::cuda::ref {
namespace {
// Token t's K slots as (permuted row, slot), in expert order (= ascending permuted row).
std::vector<std::pair<int32_t, int64_t>> RowsOf(const int32_t* slot_pos, int64_t t, int64_t K) {
  std::vector<std::pair<int32_t, int64_t>> rows;
  for (int64_t k = 0; k < K; ++k) rows.push_back({slot_pos[t * K + k], t * K + k});
  std::sort(rows.begin(), rows.end());
  return rows;
}
}  // namespace

void MoePlanBuild(const int32_t* topk, int64_t T, int64_t K, int64_t E, int32_t* src_token,
                  int32_t* slot_pos, int32_t* counts, int32_t* offsets) {
  std::vector<std::vector<int64_t>> slots(E);
  for (int64_t s = 0; s < T * K; ++s) slots[topk[s]].push_back(s);
  int64_t p = 0;
  for (int64_t e = 0; e < E; ++e) {
    offsets[e] = static_cast<int32_t>(p);
    counts[e] = static_cast<int32_t>(slots[e].size());
    for (int64_t s : slots[e]) {
      src_token[p] = static_cast<int32_t>(s / K);
      slot_pos[s] = static_cast<int32_t>(p);
      ++p;
    }
  }
  offsets[E] = static_cast<int32_t>(p);
}

void Combine(const float* ye, const float* weight, const int32_t* slot_pos, float* y, int64_t T,
             int64_t K, int64_t H) {
  std::fill(y, y + T * H, 0.0f);
  for (int64_t t = 0; t < T; ++t) {
    for (const auto& [row, slot] : RowsOf(slot_pos, t, K)) {
      const float w = weight[slot];
      const float* src = ye + int64_t(row) * H;
      for (int64_t h = 0; h < H; ++h) y[t * H + h] += w * src[h];
    }
  }
}

void CombineBackward(const float* dy, const float* ye, const float* weight, const int32_t* slot_pos,
                     float* dye, float* dweight, int64_t T, int64_t K, int64_t H) {
  for (int64_t s = 0; s < T * K; ++s) {
    const int64_t t = s / K, p = slot_pos[s];
    double dot = 0;
    for (int64_t h = 0; h < H; ++h) {
      dye[p * H + h] = weight[s] * dy[t * H + h];
      dot += double(dy[t * H + h]) * ye[p * H + h];
    }
    dweight[s] = static_cast<float>(dot);
  }
}

void UnpermuteSum(const float* dxp, const int32_t* slot_pos, float* dx, int64_t T, int64_t K,
                  int64_t H) {
  for (int64_t t = 0; t < T; ++t) {
    const auto rows = RowsOf(slot_pos, t, K);
    for (int64_t h = 0; h < H; ++h) {
      float acc = 0.0f;
      for (const auto& [row, slot] : rows) acc += dxp[int64_t(row) * H + h];
      dx[t * H + h] = acc;
    }
  }
}

}  // namespace mt::cuda::ref

// kernels/moe_route.h: DeepSeek-V3's router arithmetic on the CPU, the one definition the
// module model (trainer/moe.cc), the CPU backend (kernels/backend_cpu.cc) and the CUDA
// router's CPU reference (kernels/cuda/router_ref.cc) share: the group-limited top-k (HF
// DeepseekV3TopkRouter, with DeepSeek's -inf masking of dropped groups), the gate weights,
// the sequence-wise balance statistics and the router's backward to its logits. Templated
// on the element type: the module model also runs in double for the gradient checks.
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

// weight [K] = the unbiased scores of the chosen experts topk [K] (from scores [E]),
// normalised over the K when norm_topk, times scaling (routed_scaling_factor).
template <typename T>
void GateWeights(const T* scores, const int32_t* topk, int64_t K, bool norm_topk, double scaling,
                 T* weight) {
  double sum = 0;
  for (int64_t k = 0; k < K; ++k) sum += scores[topk[k]];
  for (int64_t k = 0; k < K; ++k) {
    double w = scores[topk[k]];
    if (norm_topk) w /= sum + 1e-20;
    weight[k] = static_cast<T>(w * scaling);
  }
}

// The sequence-wise balance loss (DeepSeek-V3 eqs. 17-20) of B sequences of S tokens over the
// positions s < valid: f [B, E] (overwritten) = E/(K valid) x each expert's choices per
// sequence; returns the mean over the B sequences of sum_e f_e P_e, P_e = the mean over valid
// positions of score_e / sum of the token's scores. scores [B*S, E], topk [B*S, K]; load [E]
// (may be null) += the valid positions' choices.
template <typename T>
double BalanceStats(const T* scores, const int32_t* topk, int64_t B, int64_t S, int64_t valid,
                    int64_t E, int64_t K, double* f_all, int64_t* load) {
  double bal_sum = 0;
  std::vector<double> P(E);
  for (int64_t b = 0; b < B; ++b) {
    double* f = f_all + b * E;
    std::fill(f, f + E, 0.0);
    std::fill(P.begin(), P.end(), 0.0);
    for (int64_t pos = 0; pos < valid; ++pos) {
      const int64_t t = b * S + pos;
      for (int64_t k = 0; k < K; ++k) {
        f[topk[t * K + k]] += 1;
        if (load) load[topk[t * K + k]] += 1;
      }
      double sigma = 0;
      for (int64_t e = 0; e < E; ++e) sigma += scores[t * E + e];
      for (int64_t e = 0; e < E; ++e) P[e] += scores[t * E + e] / sigma;
    }
    double bal = 0;
    for (int64_t e = 0; e < E; ++e) {
      f[e] *= static_cast<double>(E) / (K * valid);
      bal += f[e] * P[e] / valid;
    }
    bal_sum += bal;
  }
  return bal_sum / B;
}

// d_logits [B*S, E] (overwritten): from dw [B*S, K] = d loss / d gate weight back through
// GateWeights, plus balance_scale x d(BalanceStats' loss) (f from it), through the sigmoid
// scores = sigmoid(logits).
template <typename T>
void RouterLogitGrad(const T* scores, const int32_t* topk, const double* dw, const double* f_all,
                     int64_t B, int64_t S, int64_t valid, int64_t E, int64_t K, bool norm_topk,
                     double scaling, double balance_scale, T* d_logits) {
  const int64_t T_ = B * S;
  const T* sc = scores;
  std::vector<double> ds(T_ * E, 0.0);
  for (int64_t t = 0; t < T_; ++t) {
    const int32_t* idx = topk + t * K;
    if (norm_topk) {
      double sum = 1e-20, dot = 0;
      for (int64_t k = 0; k < K; ++k) sum += sc[t * E + idx[k]];
      for (int64_t k = 0; k < K; ++k) dot += dw[t * K + k] * sc[t * E + idx[k]];
      for (int64_t k = 0; k < K; ++k)
        ds[t * E + idx[k]] += scaling * (dw[t * K + k] / sum - dot / (sum * sum));
    } else {
      for (int64_t k = 0; k < K; ++k) ds[t * E + idx[k]] += scaling * dw[t * K + k];
    }
  }
  // d/ds_jt of (1/B) sum_b sum_i f_bi P_bi, P_bi = (1/valid) sum_t s_it / sigma_t.
  if (balance_scale != 0) {
    const double c = balance_scale / (static_cast<double>(B) * valid);
    for (int64_t b = 0; b < B; ++b) {
      const double* f = f_all + b * E;
      for (int64_t pos = 0; pos < valid; ++pos) {
        const int64_t t = b * S + pos;
        double sigma = 0, a = 0;
        for (int64_t e = 0; e < E; ++e) {
          sigma += sc[t * E + e];
          a += f[e] * sc[t * E + e];
        }
        for (int64_t e = 0; e < E; ++e) ds[t * E + e] += c * (f[e] / sigma - a / (sigma * sigma));
      }
    }
  }
  for (int64_t i = 0; i < T_ * E; ++i)
    d_logits[i] = static_cast<T>(ds[i] * sc[i] * (1 - sc[i]));
}

}  // namespace mt

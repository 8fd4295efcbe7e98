// trainer/device_moe_ep_plan.cc: the host-side plans of the device path's expert exchange.
#include "trainer/device_moe_ep_plan.h"

#include <algorithm>

#include "kernels/status.h"

namespace mt {

EpExchangePlan MakeEpExchangePlan(const std::vector<int32_t>& offsets,
                                  const std::vector<int64_t>& recv_counts, int P) {
  const auto E = static_cast<int64_t>(offsets.size()) - 1;
  MT_CHECK(P >= 1 && E >= P && E % P == 0 && static_cast<int64_t>(recv_counts.size()) == E,
           "expert exchange: ", E, " experts, ", recv_counts.size(), " counts over ", P, " ranks");
  const int64_t L = E / P;
  EpExchangePlan x;
  x.send_rows.assign(P, 0);
  x.send_at.assign(P, 0);
  x.recv_rows.assign(P, 0);
  x.recv_at.assign(P, 0);
  x.offsets.assign(P * (L + 1), 0);
  for (int r = 0; r < P; ++r) {
    x.send_at[r] = offsets[r * L];
    x.send_rows[r] = offsets[(r + 1) * L] - offsets[r * L];
    x.recv_at[r] = x.R;
    int32_t* o = &x.offsets[r * (L + 1)];
    for (int64_t j = 0; j < L; ++j) {
      MT_CHECK(recv_counts[r * L + j] >= 0, "expert exchange: a negative count");
      o[j + 1] = o[j] + static_cast<int32_t>(recv_counts[r * L + j]);
    }
    x.recv_rows[r] = o[L];
    x.R += o[L];
  }
  return x;
}

EpDedupeSend MakeEpDedupeSend(const std::vector<int32_t>& topk, int64_t K,
                              const std::vector<int32_t>& offsets, int P) {
  MT_CHECK(K >= 1 && !offsets.empty(), "expert dedupe: ", K, " choices a token");
  const auto E = static_cast<int64_t>(offsets.size()) - 1;
  const auto T = static_cast<int64_t>(topk.size()) / K;
  MT_CHECK(
      P >= 1 && E % P == 0 && T * K == static_cast<int64_t>(topk.size()) && offsets[E] == T * K,
      "expert dedupe: ", topk.size(), " choices of ", K, ", ", E, " experts over ", P,
      " ranks, a plan of ", offsets[E], " slots");
  const int64_t L = E / P;
  // The routing plan's order (kernels/backend.h MoePlanBuild): by expert, then slot; a
  // counting sort into the plan's own offsets, once over the slots.
  std::vector<int32_t> order(T * K), next(offsets.begin(), offsets.end() - 1);
  for (int64_t s = 0; s < T * K; ++s) {
    MT_CHECK(topk[s] >= 0 && topk[s] < E && next[topk[s]] < offsets[topk[s] + 1],
             "expert dedupe: slot ", s, "'s expert ", topk[s], " disagrees with the plan");
    order[next[topk[s]]++] = static_cast<int32_t>(s);
  }
  EpDedupeSend d;
  d.rows.assign(P, 0);
  d.at.assign(P, 0);
  d.meta.assign(2 * T * K, 0);
  d.meta_rows.assign(P, 0);
  d.meta_at.assign(P, 0);
  std::vector<int32_t> row_of(T);  // within the current rank's block; -1: not sent there
  std::vector<std::vector<int32_t>> token_ranks_rows(T);  // each token's rows, ranks ascending
  for (int r = 0; r < P; ++r) {
    const int64_t p0 = offsets[r * L], n = offsets[(r + 1) * L] - p0;
    d.at[r] = static_cast<int64_t>(d.token.size());
    d.meta_at[r] = 2 * p0;
    d.meta_rows[r] = 2 * n;
    std::fill(row_of.begin(), row_of.end(), -1);
    // The tokens sent to r, in token order.
    std::vector<int32_t> tokens;
    for (int64_t j = 0; j < n; ++j) {
      MT_CHECK(topk[order[p0 + j]] / L == r, "expert dedupe: slot ", order[p0 + j], " is not rank ",
               r, "'s");
      tokens.push_back(static_cast<int32_t>(order[p0 + j] / K));
    }
    std::sort(tokens.begin(), tokens.end());
    tokens.erase(std::unique(tokens.begin(), tokens.end()), tokens.end());
    for (size_t u = 0; u < tokens.size(); ++u) {
      row_of[tokens[u]] = static_cast<int32_t>(u);
      d.token.push_back(tokens[u]);
      token_ranks_rows[tokens[u]].push_back(static_cast<int32_t>(d.at[r] + u));
    }
    d.rows[r] = static_cast<int64_t>(tokens.size());
    // The meta: each slot's row, then the slots by (row, k).
    int32_t* row = &d.meta[2 * p0];
    int32_t* sum = row + n;
    for (int64_t j = 0; j < n; ++j) row[j] = row_of[order[p0 + j] / K];
    for (int64_t j = 0; j < n; ++j) sum[j] = static_cast<int32_t>(j);
    std::sort(sum, sum + n, [&](int32_t a, int32_t b) {
      return row[a] != row[b] ? row[a] < row[b] : order[p0 + a] % K < order[p0 + b] % K;
    });
  }
  d.token_offsets.assign(T + 1, 0);
  for (int64_t t = 0; t < T; ++t) {
    d.token_offsets[t + 1] = d.token_offsets[t] + static_cast<int32_t>(token_ranks_rows[t].size());
    d.token_rows.insert(d.token_rows.end(), token_ranks_rows[t].begin(), token_ranks_rows[t].end());
  }
  return d;
}

EpDedupeReceive MakeEpDedupeReceive(const EpExchangePlan& slots,
                                    const std::vector<int64_t>& unique_rows,
                                    const std::vector<int32_t>& meta) {
  const auto P = static_cast<int>(slots.recv_rows.size());
  MT_CHECK(
      static_cast<int>(unique_rows.size()) == P && static_cast<int64_t>(meta.size()) == 2 * slots.R,
      "expert dedupe: ", unique_rows.size(), " row counts and ", meta.size(), " meta ints for ", P,
      " ranks and ", slots.R, " slots");
  EpDedupeReceive d;
  d.rows = unique_rows;
  d.at.assign(P, 0);
  d.expand.assign(slots.R, 0);
  for (int s = 0; s < P; ++s) {
    d.at[s] = d.U;
    d.U += unique_rows[s];
  }
  d.sum_offsets.assign(d.U + 1, 0);
  for (int s = 0; s < P; ++s) {
    const int64_t n = slots.recv_rows[s], p0 = slots.recv_at[s];
    const int32_t* row = &meta[2 * p0];
    const int32_t* sum = row + n;
    for (int64_t j = 0; j < n; ++j) {
      MT_CHECK(row[j] >= 0 && row[j] < unique_rows[s], "expert dedupe: rank ", s,
               " placed a slot on row ", row[j], " of its ", unique_rows[s]);
      d.expand[p0 + j] = static_cast<int32_t>(d.at[s] + row[j]);
      ++d.sum_offsets[d.at[s] + row[j] + 1];
    }
    for (int64_t j = 0; j < n; ++j) {
      MT_CHECK(sum[j] >= 0 && sum[j] < n && (j == 0 || row[sum[j - 1]] <= row[sum[j]]),
               "expert dedupe: rank ", s, "'s summation order");
      d.sum_rows.push_back(static_cast<int32_t>(p0 + sum[j]));
    }
  }
  for (int64_t u = 0; u < d.U; ++u) d.sum_offsets[u + 1] += d.sum_offsets[u];
  return d;
}

}  // namespace mt

// tests/trainer/device_moe_ep_test.cc: the host side of the device path's expert exchange
// (trainer/device_moe_ep_plan.h): which rows each EP rank sends and where the rows it
// receives sit, per slot and once per (token, rank), by hand and as a consistent
// all-to-all over simulated ranks, down to the order of every sum.
#include <algorithm>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "trainer/device_layers.h"

namespace mt {
namespace {

TEST(EpExchangePlan, TwoRanksByHand) {
  // E = 4 experts over P = 2 ranks (L = 2 each). This rank's routing put 3, 0, 2, 4 slots on
  // experts 0..3: rows [0, 3) go to rank 0, [3, 9) to rank 1. Rank 0 sends 1 row for local
  // expert 0 and 2 for expert 1; rank 1 sends 0 and 4.
  const EpExchangePlan x = MakeEpExchangePlan({0, 3, 3, 5, 9}, {1, 2, 0, 4}, 2);
  EXPECT_EQ(x.send_rows, (std::vector<int64_t>{3, 6}));
  EXPECT_EQ(x.send_at, (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(x.recv_rows, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(x.recv_at, (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(x.offsets, (std::vector<int32_t>{0, 1, 3, 0, 0, 4}));
  EXPECT_EQ(x.R, 7);
}

TEST(EpExchangePlan, OneRankKeepsEverything) {
  const EpExchangePlan x = MakeEpExchangePlan({0, 2, 2, 7}, {2, 0, 5}, 1);
  EXPECT_EQ(x.send_rows, (std::vector<int64_t>{7}));
  EXPECT_EQ(x.recv_rows, (std::vector<int64_t>{7}));
  EXPECT_EQ(x.offsets, (std::vector<int32_t>{0, 2, 2, 7}));
  EXPECT_EQ(x.R, 7);
}

TEST(EpExchangePlan, RanksAgreeOnEveryBlock) {
  // P = 3 ranks of L = 2 experts, random routings (some experts empty): the counts each
  // rank receives are the all-to-all of what the others send; every (source, destination)
  // block has the same length on both sides, and the received rows are numbered densely.
  constexpr int P = 3;
  constexpr int64_t L = 2, E = P * L;
  std::mt19937 rng(7);
  std::vector<std::vector<int32_t>> offsets(P);
  for (int r = 0; r < P; ++r) {
    offsets[r].assign(E + 1, 0);
    for (int64_t e = 0; e < E; ++e)
      offsets[r][e + 1] = offsets[r][e] + static_cast<int32_t>(rng() % 4);
  }
  std::vector<EpExchangePlan> plans;
  for (int q = 0; q < P; ++q) {
    std::vector<int64_t> recv(E);
    for (int s = 0; s < P; ++s)
      for (int64_t j = 0; j < L; ++j)
        recv[s * L + j] = offsets[s][q * L + j + 1] - offsets[s][q * L + j];
    plans.push_back(MakeEpExchangePlan(offsets[q], recv, P));
  }
  for (int q = 0; q < P; ++q) {
    const EpExchangePlan& x = plans[q];
    int64_t at = 0;
    for (int s = 0; s < P; ++s) {
      EXPECT_EQ(x.recv_rows[s], plans[s].send_rows[q]) << "rank " << q << " from " << s;
      EXPECT_EQ(x.recv_at[s], at);
      at += x.recv_rows[s];
      EXPECT_EQ(x.send_at[s], offsets[q][s * L]);
      EXPECT_EQ(x.offsets[s * (L + 1)], 0);
      EXPECT_EQ(x.offsets[s * (L + 1) + L], x.recv_rows[s]);
    }
    EXPECT_EQ(x.R, at);
    EXPECT_EQ(x.send_at[P - 1] + x.send_rows[P - 1], offsets[q][E]);
  }
}

TEST(EpExchangePlanDeathTest, ExpertsNotSplittingOverRanks) {
  EXPECT_DEATH(MakeEpExchangePlan({0, 1, 2, 3}, {1, 1, 1}, 2), "3 experts, 3 counts over 2");
}

// The routing plan's expert offsets [E+1] (MoePlanBuild's) for topk.
std::vector<int32_t> ExpertOffsets(const std::vector<int32_t>& topk, int64_t E) {
  std::vector<int32_t> off(E + 1, 0);
  for (int32_t e : topk) ++off[e + 1];
  for (int64_t e = 0; e < E; ++e) off[e + 1] += off[e];
  return off;
}

TEST(EpDedupe, ThreeTokensByHand) {
  // P = 2 ranks of L = 2 experts. Token 0 picks experts 0 and 1 (both rank 0), token 1
  // experts 1 and 2, token 2 experts 3 and 2 (both rank 1). The plan's order (by expert,
  // then slot): slots 0 | 1 2 | 3 5 | 4, so rank 0 gets slots 0 1 2, rank 1 slots 3 5 4.
  const std::vector<int32_t> topk = {0, 1, 1, 2, 3, 2};
  const EpDedupeSend d = MakeEpDedupeSend(topk, 2, ExpertOffsets(topk, 4), 2);
  EXPECT_EQ(d.token, (std::vector<int32_t>{0, 1, 1, 2}));  // rank 0: tokens 0 1; rank 1: 1 2
  EXPECT_EQ(d.rows, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(d.at, (std::vector<int64_t>{0, 2}));
  // Rank 0: its slots' rows 0 0 1, summed in slot order; rank 1: rows 0 1 1, and token 2's
  // two slots summed k = 0 (slot 4, third in the plan) before k = 1 (slot 5, second).
  EXPECT_EQ(d.meta, (std::vector<int32_t>{0, 0, 1, 0, 1, 2, 0, 1, 1, 0, 2, 1}));
  EXPECT_EQ(d.meta_rows, (std::vector<int64_t>{6, 6}));
  EXPECT_EQ(d.meta_at, (std::vector<int64_t>{0, 6}));
  EXPECT_EQ(d.token_offsets, (std::vector<int32_t>{0, 1, 3, 4}));
  EXPECT_EQ(d.token_rows, (std::vector<int32_t>{0, 1, 2, 3}));  // token 1: rank 0's, then 1's
}

// P = 3 ranks of L = 2 experts, K = 3 of E = 6 per token (so often two on one rank): every
// received slot row is its token's, each row sums exactly its token's slots on that rank in
// k order, and each token sums the rows of exactly the ranks it reached, ascending: the
// additions the CPU path's dispatcher makes. Fewer rows travel than slots.
TEST(EpDedupe, RanksAgreeAndSumInTheCpuOrder) {
  constexpr int P = 3;
  constexpr int64_t L = 2, E = P * L, K = 3, T = 40;
  std::mt19937 rng(11);
  std::vector<std::vector<int32_t>> topk(P);
  std::vector<EpDedupeSend> sends;
  for (int r = 0; r < P; ++r) {
    for (int64_t t = 0; t < T; ++t) {
      std::vector<int32_t> e = {0, 1, 2, 3, 4, 5};
      std::shuffle(e.begin(), e.end(), rng);
      topk[r].insert(topk[r].end(), e.begin(), e.begin() + K);
    }
    sends.push_back(MakeEpDedupeSend(topk[r], K, ExpertOffsets(topk[r], E), P));
  }
  int64_t slots_sent = 0, rows_sent = 0;
  for (int q = 0; q < P; ++q) {
    std::vector<int64_t> recv_counts(E), unique(P);
    std::vector<int32_t> meta;
    for (int s = 0; s < P; ++s) {
      std::vector<int64_t> per_expert(E, 0);
      for (int32_t e : topk[s]) ++per_expert[e];
      for (int64_t j = 0; j < L; ++j) recv_counts[s * L + j] = per_expert[q * L + j];
      unique[s] = sends[s].rows[q];
      const int32_t* m = &sends[s].meta[sends[s].meta_at[q]];
      meta.insert(meta.end(), m, m + sends[s].meta_rows[q]);
    }
    const EpExchangePlan slots = MakeEpExchangePlan(ExpertOffsets(topk[q], E), recv_counts, P);
    const EpDedupeReceive d = MakeEpDedupeReceive(slots, unique, meta);
    ASSERT_EQ(static_cast<int64_t>(d.sum_rows.size()), slots.R);
    ASSERT_EQ(static_cast<int64_t>(d.sum_offsets.size()), d.U + 1);
    for (int s = 0; s < P; ++s) {
      slots_sent += slots.recv_rows[s];
      rows_sent += d.rows[s];
      // Source s's slots for q in its plan order: (token, k), by expert then slot.
      std::vector<int32_t> order;
      for (int32_t slot = 0; slot < T * K; ++slot)
        if (topk[s][slot] / L == q) order.push_back(slot);
      std::stable_sort(order.begin(), order.end(),
                       [&](int32_t a, int32_t b) { return topk[s][a] < topk[s][b]; });
      ASSERT_EQ(static_cast<int64_t>(order.size()), slots.recv_rows[s]);
      auto token_of_row = [&](int32_t u) {  // u: a row received here from s
        return sends[s].token[sends[s].at[q] + (u - d.at[s])];
      };
      for (size_t j = 0; j < order.size(); ++j)
        EXPECT_EQ(token_of_row(d.expand[slots.recv_at[s] + j]), order[j] / K);
      for (int64_t u = d.at[s]; u < d.at[s] + d.rows[s]; ++u) {
        std::vector<int32_t> summed;  // the slots row u adds, in order
        for (int32_t i = d.sum_offsets[u]; i < d.sum_offsets[u + 1]; ++i)
          summed.push_back(order[d.sum_rows[i] - slots.recv_at[s]]);
        std::vector<int32_t> want;  // the token's slots on q, k ascending
        for (int64_t k = 0; k < K; ++k)
          if (topk[s][token_of_row(u) * K + k] / L == q)
            want.push_back(static_cast<int32_t>(token_of_row(u) * K + k));
        EXPECT_EQ(summed, want) << "rank " << q << ", row " << u << " from " << s;
      }
    }
  }
  for (int s = 0; s < P; ++s) {
    for (int64_t t = 0; t < T; ++t) {
      std::vector<int> ranks;  // of the rows token t sums, in order
      for (int32_t i = sends[s].token_offsets[t]; i < sends[s].token_offsets[t + 1]; ++i) {
        const int32_t u = sends[s].token_rows[i];
        EXPECT_EQ(sends[s].token[u], t);
        ranks.push_back(static_cast<int>(
            std::upper_bound(sends[s].at.begin(), sends[s].at.end(), u) - sends[s].at.begin() - 1));
      }
      std::vector<int> want;
      for (int64_t k = 0; k < K; ++k) want.push_back(topk[s][t * K + k] / L);
      std::sort(want.begin(), want.end());
      want.erase(std::unique(want.begin(), want.end()), want.end());
      EXPECT_EQ(ranks, want) << "rank " << s << ", token " << t;
    }
  }
  EXPECT_EQ(slots_sent, P * T * K);
  EXPECT_LT(rows_sent, slots_sent);  // K = 3 experts on 3 ranks of 2: many share a rank
}

TEST(EpDedupeDeathTest, AMetaRowOutsideTheSourcesRows) {
  EpExchangePlan slots = MakeEpExchangePlan({0, 1, 2}, {1, 1}, 2);
  EXPECT_DEATH(MakeEpDedupeReceive(slots, {1, 1}, {0, 0, 1, 0}), "placed a slot on row 1");
}

}  // namespace
}  // namespace mt

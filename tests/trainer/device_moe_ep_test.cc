// tests/trainer/device_moe_ep_test.cc: the host side of the device path's expert exchange
// (trainer/device_layers.h MakeEpExchangePlan): which rows each EP rank sends and where the
// rows it receives sit, by hand and as a consistent all-to-all over simulated ranks.
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

}  // namespace
}  // namespace mt

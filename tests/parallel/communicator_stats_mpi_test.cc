// tests/parallel/communicator_stats_mpi_test.cc: StatsCommunicator over MPI under
// `mpirun -np 4`, in the layout pp 2 x dp 2, ep 2: a known exchange on every group still
// delivers the right data, and every rank's gathered counters hold exactly the bytes that
// communicator_stats.h defines for it.
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "parallel/communicator_groups.h"
#include "parallel/communicator_stats.h"
#include "tests/parallel/mpi_test_util.h"

namespace mt {
namespace {

constexpr int kWorld = 0, kPp = 1, kDp = 2, kEp = 3, kExpertDp = 4;  // StatsGroupName order

TEST(CommStatsMpiTest, KnownExchangeCountsExactBytesOnEveryRank) {
  if (mpi_test::Env().world_size != 4) GTEST_SKIP() << "run under mpirun -np 4";
  LayoutSpec spec;
  spec.pp = 2;
  spec.dp = 2;
  spec.ep = 2;
  absl::StatusOr<Topology> topo = mpi_test::MakeTopology(spec);
  ASSERT_TRUE(topo.ok()) << topo.status();
  absl::StatusOr<ProcessGroups> g =
      CreateProcessGroups(*topo, {.timeout_s = 60, .collect_stats = true});
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->dp->name(), "mpi:dp");
  EXPECT_EQ(g->expert_dp->size(), 1);
  const int r = g->world->rank();

  CommStatsWindow window(&*g, {.enabled = true, .warmup_steps = 0}, /*first_step=*/0);
  window.BeginStep(0);

  // world: a ring of 5 floats, ISend to the next rank and Recv from the previous one.
  std::vector<float> ring_out(5, float(r)), ring_in(5, -1.0f);
  absl::StatusOr<std::unique_ptr<Request>> send = g->world->ISend(ring_out, (r + 1) % 4, 3);
  ASSERT_TRUE(send.ok()) << send.status();
  ASSERT_TRUE(g->world->Recv(ring_in, (r + 3) % 4, 3).ok());
  ASSERT_TRUE((*send)->Wait().ok());
  EXPECT_EQ(ring_in, std::vector<float>(5, float((r + 3) % 4)));

  // world: AllReduce of 8 floats.
  std::vector<float> sum(8, float(r + 1));
  ASSERT_TRUE(g->world->AllReduce(sum, ReduceOp::kSum).ok());
  EXPECT_EQ(sum, std::vector<float>(8, 10.0f));

  // world: rank r sends r + s + 1 int32 values (each 100 r + s) to rank s.
  std::vector<int64_t> sc(4), sd(4), rc(4), rd(4);
  for (int s = 0; s < 4; ++s) {
    sc[s] = r + s + 1;
    rc[s] = s + r + 1;
    sd[s] = s ? sd[s - 1] + sc[s - 1] : 0;
    rd[s] = s ? rd[s - 1] + rc[s - 1] : 0;
  }
  std::vector<int32_t> a2a_in(sd[3] + sc[3]), a2a_out(rd[3] + rc[3], -1), want;
  for (int s = 0; s < 4; ++s)
    for (int64_t i = 0; i < sc[s]; ++i) a2a_in[sd[s] + i] = 100 * r + s;
  for (int s = 0; s < 4; ++s) want.insert(want.end(), rc[s], 100 * s + r);
  ASSERT_TRUE(g->world->AllToAllV(a2a_in, sc, sd, a2a_out, rc, rd).ok());
  EXPECT_EQ(a2a_out, want);

  // world: Broadcast of 3 doubles from rank 2.
  std::vector<double> bc(3, r == 2 ? 2.5 : 0.0);
  ASSERT_TRUE(g->world->Broadcast(bc, 2).ok());
  EXPECT_EQ(bc, std::vector<double>(3, 2.5));

  // pp: stage 0 sends 10 floats to stage 1.
  std::vector<float> act(10, 1.0f + r);
  if (g->pp->rank() == 0) {
    ASSERT_TRUE(g->pp->Send(act, 1, 0).ok());
  } else {
    ASSERT_TRUE(g->pp->Recv(act, 0, 0).ok());
    EXPECT_EQ(act, std::vector<float>(10, 1.0f + (r - 2)));
  }

  // dp: ReduceScatter of 2 blocks of 2 doubles.
  std::vector<double> rs_in(4, 1.0), rs_out(2);
  ASSERT_TRUE(g->dp->ReduceScatter(rs_in, rs_out, ReduceOp::kSum).ok());
  EXPECT_EQ(rs_out, std::vector<double>(2, 2.0));

  // ep: AllGather of 3 int64; expert_dp (one member): AllReduce of 6 floats.
  std::vector<int64_t> ag_in(3, r), ag_out(6);
  ASSERT_TRUE(g->ep->AllGather(ag_in, ag_out).ok());
  std::vector<float> one(6, 1.0f);
  ASSERT_TRUE(g->expert_dp->AllReduce(one, ReduceOp::kSum).ok());

  absl::StatusOr<std::vector<RankCommStats>> all = window.Gather(/*step=*/1);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 4u);
  for (int q = 0; q < 4; ++q) {
    SCOPED_TRACE("counters of rank " + std::to_string(q));
    const RankCommStats& s = (*all)[q];
    EXPECT_EQ(s.steps, 1);
    auto bytes = [&](int group, CommOp op) { return s.groups[group].op(op).bytes_sent; };
    auto calls = [&](int group, CommOp op) { return s.groups[group].op(op).calls; };
    EXPECT_EQ(bytes(kWorld, CommOp::kISend), 5 * 4);
    EXPECT_EQ(bytes(kWorld, CommOp::kRecv), 0);
    EXPECT_EQ(bytes(kWorld, CommOp::kAllReduce), 2 * 32 * 3 / 4);
    // sum over s != q of (q + s + 1) int32 values: (4q + 10 - (2q + 1)) x 4 bytes.
    EXPECT_EQ(bytes(kWorld, CommOp::kAllToAllV), (2 * q + 9) * 4);
    EXPECT_EQ(bytes(kWorld, CommOp::kBroadcast), q == 2 ? 24 : 0);
    EXPECT_EQ(s.groups[kWorld].Total().calls, 5);  // ISend, Recv, AllReduce, AllToAllV, Bcast
    const bool stage0 = q < 2;
    EXPECT_EQ(calls(kPp, stage0 ? CommOp::kSend : CommOp::kRecv), 1);
    EXPECT_EQ(s.groups[kPp].Total().bytes_sent, stage0 ? 40 : 0);
    EXPECT_EQ(bytes(kDp, CommOp::kReduceScatter), 16);
    EXPECT_EQ(bytes(kEp, CommOp::kAllGather), 24);
    EXPECT_EQ(calls(kExpertDp, CommOp::kAllReduce), 1);
    EXPECT_EQ(bytes(kExpertDp, CommOp::kAllReduce), 0);
  }
  EXPECT_TRUE(window.Report(1).ok());
}

}  // namespace
}  // namespace mt

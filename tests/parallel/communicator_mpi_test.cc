// tests/parallel/communicator_mpi_test.cc: the MPI backend under `mpirun -np 4`: process
// groups against the topology, every collective against values each rank can predict,
// point to point, and errors that name the rank and the call.
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "parallel/communicator_groups.h"
#include "tests/parallel/mpi_test_util.h"

namespace mt {
namespace {

LayoutSpec Spec(int pp, int dp, int ep) {
  LayoutSpec s;
  s.pp = pp;
  s.dp = dp;
  s.ep = ep;
  return s;
}

class MpiCommunicatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (mpi_test::Env().world_size != 4) GTEST_SKIP() << "run under mpirun -np 4";
  }
};

// Each group communicator holds exactly the topology's members, in member order.
TEST_F(MpiCommunicatorTest, GroupsMatchTheTopology) {
  for (const LayoutSpec& spec : {Spec(2, 2, 2), Spec(1, 4, 2), Spec(4, 1, 1), Spec(2, 2, 1)}) {
    absl::StatusOr<Topology> topo = mpi_test::MakeTopology(spec);
    ASSERT_TRUE(topo.ok()) << topo.status();
    absl::StatusOr<ProcessGroups> g = mpi_test::MakeGroups(spec);
    ASSERT_TRUE(g.ok()) << g.status();
    const int me = topo->rank();
    const std::vector<std::pair<Communicator*, std::vector<int>>> cases = {
        {g->world.get(), {0, 1, 2, 3}},
        {g->pp.get(), topo->PpGroup(me)},
        {g->dp.get(), topo->DpGroup(me)},
        {g->ep.get(), topo->EpGroup(me)},
        {g->expert_dp.get(), topo->ExpertDpGroup(me)}};
    for (const auto& [comm, members] : cases) {
      std::vector<int32_t> mine = {me}, all(comm->size());
      ASSERT_TRUE(comm->AllGather(mine, all).ok());
      EXPECT_EQ(all, members) << comm->name() << " in " << topo->Describe();
      EXPECT_EQ(comm->backend(), "mpi");
    }
    EXPECT_EQ(g->dp->name(), "mpi:dp");
    EXPECT_TRUE(CheckRankPlacement(*g->world, *topo).ok());
  }
}

TEST_F(MpiCommunicatorTest, Reductions) {
  absl::StatusOr<ProcessGroups> g = mpi_test::MakeGroups(Spec(1, 4, 1));
  ASSERT_TRUE(g.ok()) << g.status();
  Communicator& c = *g->world;
  const int r = c.rank();
  std::vector<float> f = {float(r), -float(r) * 0.5f};
  ASSERT_TRUE(c.AllReduce(f, ReduceOp::kSum).ok());
  EXPECT_EQ(f, (std::vector<float>{6.0f, -3.0f}));
  std::vector<double> d = {double(r * r), double(-r)};
  ASSERT_TRUE(c.AllReduce(d, ReduceOp::kMax).ok());
  EXPECT_EQ(d, (std::vector<double>{9.0, 0.0}));
  std::vector<int64_t> i = {int64_t{1} << (40 + r), 5 - r};
  ASSERT_TRUE(c.AllReduce(i, ReduceOp::kMin).ok());
  EXPECT_EQ(i, (std::vector<int64_t>{int64_t{1} << 40, 2}));
  std::vector<int32_t> i32 = {r + 1};
  ASSERT_TRUE(c.AllReduce(i32, ReduceOp::kSum).ok());
  EXPECT_EQ(i32[0], 10);

  // ReduceScatter: block b of rank s holds 100 s + b; rank r gets sum_s (100 s + r).
  std::vector<double> in(8), out(2);
  for (int b = 0; b < 4; ++b)
    for (int j = 0; j < 2; ++j) in[b * 2 + j] = 100.0 * r + b + 0.25 * j;
  ASSERT_TRUE(c.ReduceScatter(in, out, ReduceOp::kSum).ok());
  EXPECT_EQ(out, (std::vector<double>{600.0 + 4 * r, 600.0 + 4 * r + 1.0}));
}

TEST_F(MpiCommunicatorTest, DataMovement) {
  absl::StatusOr<ProcessGroups> g = mpi_test::MakeGroups(Spec(1, 4, 1));
  ASSERT_TRUE(g.ok()) << g.status();
  Communicator& c = *g->world;
  const int r = c.rank();

  std::vector<uint16_t> bf = {uint16_t(r), uint16_t(0x3f80 + r)}, bf_all(8);  // BF16 bits
  ASSERT_TRUE(
      c.AllGather(InBuffer(bf.data(), 2, DType::kBF16), OutBuffer(bf_all.data(), 8, DType::kBF16))
          .ok());
  for (int s = 0; s < 4; ++s) EXPECT_EQ(bf_all[2 * s + 1], 0x3f80 + s);

  std::vector<int64_t> send(4), recv(4);
  for (int d = 0; d < 4; ++d) send[d] = 10 * r + d;
  ASSERT_TRUE(c.AllToAll(send, recv).ok());
  for (int s = 0; s < 4; ++s) EXPECT_EQ(recv[s], 10 * s + r);

  // Ragged: rank s sends (s + d) % 3 elements to d, valued 1000 s + 100 d + j, packed.
  auto count = [](int s, int d) { return int64_t((s + d) % 3); };
  std::vector<int64_t> sc(4), sd(4), rc(4), rd(4);
  std::vector<float> vin, vout;
  for (int d = 0; d < 4; ++d) {
    sc[d] = count(r, d);
    sd[d] = static_cast<int64_t>(vin.size());
    for (int j = 0; j < sc[d]; ++j) vin.push_back(1000.0f * r + 100.0f * d + j);
  }
  int64_t at = 2;  // leave a gap in front to check the displacements
  for (int s = 0; s < 4; ++s) {
    rc[s] = count(s, r);
    rd[s] = at;
    at += rc[s] + 1;
  }
  vout.assign(at, -1.0f);
  ASSERT_TRUE(c.AllToAllV(vin, sc, sd, vout, rc, rd).ok());
  for (int s = 0; s < 4; ++s)
    for (int j = 0; j < rc[s]; ++j) EXPECT_EQ(vout[rd[s] + j], 1000.0f * s + 100.0f * r + j);
  EXPECT_EQ(vout[0], -1.0f);
  // Started: two exchanges in flight at once, waited for in the other order; the counts
  // are temporaries, so the request must keep its own copy for MPI.
  std::vector<float> first(at, -1.0f), second(at, -1.0f);
  std::vector<float> vin2(vin);
  for (float& v : vin2) v = -v;
  auto ra = c.IAllToAllV(vin, std::vector<int64_t>(sc), std::vector<int64_t>(sd), first,
                         std::vector<int64_t>(rc), std::vector<int64_t>(rd));
  auto rb = c.IAllToAllV(vin2, sc, sd, second, rc, rd);
  ASSERT_TRUE(ra.ok() && rb.ok());
  ASSERT_TRUE((*rb)->Wait().ok());
  ASSERT_TRUE((*ra)->Wait().ok());
  for (int s = 0; s < 4; ++s)
    for (int j = 0; j < rc[s]; ++j) {
      EXPECT_EQ(first[rd[s] + j], 1000.0f * s + 100.0f * r + j);
      EXPECT_EQ(second[rd[s] + j], -(1000.0f * s + 100.0f * r + j));
    }

  std::vector<double> b = {r == 2 ? 3.5 : 0.0, r == 2 ? -1.0 : 0.0};
  ASSERT_TRUE(c.Broadcast(b, 2).ok());
  EXPECT_EQ(b, (std::vector<double>{3.5, -1.0}));
  EXPECT_TRUE(c.Barrier().ok());
}

TEST_F(MpiCommunicatorTest, PointToPoint) {
  absl::StatusOr<ProcessGroups> g = mpi_test::MakeGroups(Spec(1, 4, 1));
  ASSERT_TRUE(g.ok()) << g.status();
  Communicator& c = *g->world;
  const int r = c.rank(), next = (r + 1) % 4, prev = (r + 3) % 4;
  // A ring with non-blocking sends, then a blocking exchange on another tag.
  std::vector<float> out = {float(r), float(r) + 0.5f}, in(2);
  absl::StatusOr<std::unique_ptr<Request>> s = c.ISend(out, next, 7);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE(c.Recv(in, prev, 7).ok());
  ASSERT_TRUE((*s)->Wait().ok());
  EXPECT_EQ(in, (std::vector<float>{float(prev), float(prev) + 0.5f}));

  std::vector<int32_t> tag9 = {r * 9}, got(1);
  absl::StatusOr<std::unique_ptr<Request>> rq = c.IRecv(got, prev, 9);
  ASSERT_TRUE(rq.ok());
  ASSERT_TRUE(c.Send(tag9, next, 9).ok());
  ASSERT_TRUE((*rq)->Wait().ok());
  EXPECT_EQ(got[0], prev * 9);
}

TEST_F(MpiCommunicatorTest, ErrorsNameTheRankAndTheCall) {
  absl::StatusOr<ProcessGroups> g = mpi_test::MakeGroups(Spec(1, 4, 1));
  ASSERT_TRUE(g.ok()) << g.status();
  Communicator& c = *g->world;
  const int r = c.rank();
  // Fewer elements than expected: MPI accepts it, our count check does not.
  if (r == 0) {
    ASSERT_TRUE(c.Send(std::vector<float>(3, 1.0f), 1, 3).ok());
  }
  if (r == 1) {
    std::vector<float> four(4);
    absl::Status st = c.Recv(four, 0, 3);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(st.message())
                  .find("mpi:world rank 1 of 4: MPI_Irecv: received 3 "
                        "elements from peer 0, expected 4"),
              std::string::npos)
        << st.message();
  }
  // More than expected: MPI reports truncation, and the message names rank and call.
  if (r == 2) {
    ASSERT_TRUE(c.Send(std::vector<float>(5, 1.0f), 3, 4).ok());
  }
  if (r == 3) {
    std::vector<float> four(4);
    absl::Status st = c.Recv(four, 2, 4);
    EXPECT_FALSE(st.ok());
    EXPECT_NE(std::string(st.message())
                  .find("rank 3 (mpi:world, group rank 3 of 4): MPI_Irecv "
                        "failed"),
              std::string::npos)
        << st.message();
  }
  // Checked before MPI is called, identically on every rank (so no rank is left waiting).
  std::vector<float> f(4), wrong(3);
  absl::Status st = c.AllGather(f, wrong);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(st.message()).find("mpi:world rank " + std::to_string(r) + " of 4"),
            std::string::npos);
  EXPECT_EQ(c.Send(f, 4, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(c.Barrier().ok());
}

}  // namespace
}  // namespace mt

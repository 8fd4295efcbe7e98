// tests/parallel/expert_dispatch_mpi_test.cc: the expert dispatcher over MPI, run by CTest
// under `mpirun -np 2` and `mpirun -np 4` (EP = the world), plus two EP groups of 2 inside
// DP 4 exchanging at the same time.
#include "gtest/gtest.h"
#include "tests/parallel/expert_dispatch_checks.h"
#include "tests/parallel/mpi_test_util.h"

namespace mt {
namespace {

using dispatch_checks::RoutingCase;

class ExpertDispatchMpiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    world_ = mpi_test::Env().world_size;
    if (world_ < 2) GTEST_SKIP() << "run under mpirun -np 2 or 4";
    LayoutSpec spec;
    spec.dp = world_;
    spec.ep = world_;
    absl::StatusOr<ProcessGroups> g = mpi_test::MakeGroups(spec);
    ASSERT_TRUE(g.ok()) << g.status();
    groups_ = std::move(*g);
  }
  int world_ = 1;
  ProcessGroups groups_;
};

TEST_F(ExpertDispatchMpiTest, RandomRoutingMatchesTheSingleProcessGather) {
  for (uint64_t seed = 1; seed <= 3; ++seed) {
    RoutingCase c;
    c.seed = seed;
    ASSERT_NO_FATAL_FAILURE(dispatch_checks::CheckDispatchAndCombine(*groups_.ep, c));
  }
  RoutingCase one;  // K = 1: no fan-out at all
  one.topk = 1;
  ASSERT_NO_FATAL_FAILURE(dispatch_checks::CheckDispatchAndCombine(*groups_.ep, one));
  RoutingCase every;  // K = E: every token goes everywhere, fanned out E/P times per rank
  every.topk = every.num_experts;
  ASSERT_NO_FATAL_FAILURE(dispatch_checks::CheckDispatchAndCombine(*groups_.ep, every));
  RoutingCase empty;  // one rank has no tokens this micro-batch
  empty.empty_rank = 1;
  ASSERT_NO_FATAL_FAILURE(dispatch_checks::CheckDispatchAndCombine(*groups_.ep, empty));
}

TEST_F(ExpertDispatchMpiTest, BackwardIsTheTranspose) {
  for (uint64_t seed = 4; seed <= 6; ++seed) {
    RoutingCase c;
    c.seed = seed;
    c.hidden = 16;
    c.empty_rank = seed == 6 ? 0 : -1;
    ASSERT_NO_FATAL_FAILURE(dispatch_checks::CheckBackwardIsTranspose(*groups_.ep, c));
  }
}

TEST_F(ExpertDispatchMpiTest, DoublePrecisionMatchesFloat) {
  RoutingCase c;
  c.seed = 21;
  ASSERT_NO_FATAL_FAILURE(dispatch_checks::CheckDoubleMatchesFloat(*groups_.ep, c));
}

TEST_F(ExpertDispatchMpiTest, NodeLimitedRoutingReachesAtMostTopkGroupNodes) {
  // Two "nodes" of world/2 EP ranks, n_group a multiple of the node count (topology.h).
  for (int64_t topk_group : {1, 2}) {
    RoutingCase c;
    c.seed = 10 + topk_group;
    c.ep_ranks_per_node = world_ / 2;
    c.n_group = 4;
    c.topk_group = topk_group;
    c.topk = 2;
    c.base_tokens = 40;
    ASSERT_NO_FATAL_FAILURE(dispatch_checks::CheckNodeLimitedRouting(*groups_.ep, c));
  }
}

// DP 4 with EP 2: two EP groups exchange concurrently, each only among its members.
TEST(ExpertDispatchMpiGroupsTest, TwoEpGroupsExchangeIndependently) {
  if (mpi_test::Env().world_size != 4) GTEST_SKIP() << "run under mpirun -np 4";
  LayoutSpec spec;
  spec.dp = 4;
  spec.ep = 2;
  absl::StatusOr<Topology> topo = mpi_test::MakeTopology(spec);
  ASSERT_TRUE(topo.ok()) << topo.status();
  absl::StatusOr<ProcessGroups> g = mpi_test::MakeGroups(spec);
  ASSERT_TRUE(g.ok()) << g.status();
  RoutingCase c;
  c.seed = 100 + topo->EpGroupId(topo->rank());  // different tokens in each EP group
  ASSERT_NO_FATAL_FAILURE(dispatch_checks::CheckDispatchAndCombine(*g->ep, c));
  ASSERT_NO_FATAL_FAILURE(dispatch_checks::CheckBackwardIsTranspose(*g->ep, c));
}

}  // namespace
}  // namespace mt

// tests/parallel/topology_test.cc: layout validation and group structure over many layouts.
#include "parallel/topology.h"

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace mt {
namespace {

LayoutSpec Spec(int pp, int dp, int ep) {
  LayoutSpec s;
  s.pp = pp;
  s.dp = dp;
  s.ep = ep;
  return s;
}

void ExpectError(const LayoutSpec& spec, int world, const std::string& needle, int rpn = 1) {
  absl::StatusOr<Topology> t = Topology::Create(spec, world, 0, rpn);
  ASSERT_FALSE(t.ok()) << "accepted " << t->Describe();
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(t.status().message()).find(needle), std::string::npos)
      << t.status().message();
}

TEST(TopologyTest, DocumentedExample) {
  absl::StatusOr<Topology> t = Topology::Create(Spec(2, 4, 2), 8, 5, 4);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->Describe(), "pp 2 x dp 4 (ep 2, expert-dp 2) over 8 ranks, 4 per node");
  const RankCoords c = t->coords();
  EXPECT_EQ(c.pp_stage, 1);
  EXPECT_EQ(c.dp_rank, 1);
  EXPECT_EQ(c.ep_rank, 1);
  EXPECT_EQ(c.expert_dp_rank, 0);
  EXPECT_EQ(c.node, 1);
  EXPECT_EQ(t->PpGroup(5), (std::vector<int>{1, 5}));
  EXPECT_EQ(t->DpGroup(5), (std::vector<int>{4, 5, 6, 7}));
  EXPECT_EQ(t->EpGroup(5), (std::vector<int>{4, 5}));
  EXPECT_EQ(t->ExpertDpGroup(5), (std::vector<int>{5, 7}));
  EXPECT_EQ(t->ExpertDpGroup(0), (std::vector<int>{0, 2}));
}

// For every layout up to 16 ranks and several node sizes: each kind of group partitions the
// world, the member lists agree with the group ids and coordinates, EP groups are contiguous
// and inside one node whenever the node size allows, and DP contains EP.
TEST(TopologyTest, GroupsPartitionTheWorldForManyLayouts) {
  int layouts = 0;
  for (int pp = 1; pp <= 4; ++pp)
    for (int dp = 1; dp <= 8; ++dp)
      for (int ep = 1; ep <= dp; ++ep) {
        if (dp % ep != 0) continue;
        const int world = pp * dp;
        for (int rpn : {1, 2, 4, 8}) {
          if (world % std::min(rpn, world) != 0) continue;
          absl::StatusOr<Topology> t0 = Topology::Create(Spec(pp, dp, ep), world, 0, rpn);
          ASSERT_TRUE(t0.ok()) << t0.status();
          ++layouts;
          const std::string where = t0->Describe();
          using GroupFn = std::vector<int> (Topology::*)(int) const;
          using IdFn = int (Topology::*)(int) const;
          const std::vector<std::pair<GroupFn, IdFn>> kinds = {
              {&Topology::PpGroup, &Topology::PpGroupId},
              {&Topology::DpGroup, &Topology::DpGroupId},
              {&Topology::EpGroup, &Topology::EpGroupId},
              {&Topology::ExpertDpGroup, &Topology::ExpertDpGroupId}};
          const std::vector<int> sizes = {pp, dp, ep, dp / ep};
          for (size_t k = 0; k < kinds.size(); ++k) {
            std::vector<int> seen(world, 0);
            for (int r = 0; r < world; ++r) {
              const std::vector<int> m = (*t0.*kinds[k].first)(r);
              ASSERT_EQ(static_cast<int>(m.size()), sizes[k]) << where << " kind " << k;
              ASSERT_TRUE(std::is_sorted(m.begin(), m.end())) << where;
              ASSERT_NE(std::find(m.begin(), m.end(), r), m.end()) << where;
              for (int x : m) {
                ASSERT_EQ((*t0.*kinds[k].first)(x), m) << where << ": membership not symmetric";
                ASSERT_EQ((*t0.*kinds[k].second)(x), (*t0.*kinds[k].second)(r)) << where;
              }
              if (m.front() == r)
                for (int x : m) ++seen[x];
              // Different groups of one kind have different ids.
              for (int x = 0; x < world; ++x) {
                if (std::find(m.begin(), m.end(), x) != m.end()) continue;
                ASSERT_NE((*t0.*kinds[k].second)(x), (*t0.*kinds[k].second)(r)) << where;
              }
            }
            for (int r = 0; r < world; ++r) ASSERT_EQ(seen[r], 1) << where << " kind " << k;
          }
          for (int r = 0; r < world; ++r) {
            const RankCoords c = t0->CoordsOf(r);
            ASSERT_EQ(t0->RankOf(c.pp_stage, c.dp_rank), r);
            ASSERT_EQ(t0->PpGroup(r)[c.pp_stage], r);
            ASSERT_EQ(t0->DpGroup(r)[c.dp_rank], r);
            ASSERT_EQ(t0->EpGroup(r)[c.ep_rank], r);
            ASSERT_EQ(t0->ExpertDpGroup(r)[c.expert_dp_rank], r);
            const std::vector<int> ep_group = t0->EpGroup(r), dp_group = t0->DpGroup(r);
            ASSERT_EQ(ep_group.back() - ep_group.front(), ep - 1) << where << ": EP not contiguous";
            for (int x : ep_group)
              ASSERT_NE(std::find(dp_group.begin(), dp_group.end(), x), dp_group.end())
                  << where << ": EP group outside the DP group";
            // Expert-DP members hold the same experts (same stage and EP rank).
            for (int x : t0->ExpertDpGroup(r)) {
              ASSERT_EQ(t0->CoordsOf(x).ep_rank, c.ep_rank);
              ASSERT_EQ(t0->CoordsOf(x).pp_stage, c.pp_stage);
            }
            // An EP group that fits in a node, with the node size a multiple of it, never
            // crosses nodes; one larger than a node covers whole nodes.
            const int node_size = t0->ranks_per_node();
            std::set<int> nodes;
            for (int x : ep_group) nodes.insert(t0->CoordsOf(x).node);
            if (node_size % ep == 0) {
              ASSERT_EQ(nodes.size(), 1u) << where;
            }
            if (ep % node_size == 0) {
              ASSERT_EQ(static_cast<int>(nodes.size()), ep / node_size) << where;
            }
          }
        }
      }
  EXPECT_GT(layouts, 100);
}

TEST(TopologyTest, ValidationErrorsBeforeAnyCommunication) {
  ExpectError(Spec(2, 2, 1), 6,
              "world size 6 does not match parallel.pp (2) x parallel.dp (2) = 4");
  ExpectError(Spec(1, 6, 4), 6, "parallel.dp (6) is not divisible by parallel.ep (4)");
  ExpectError(Spec(0, 2, 1), 2, "must all be at least 1");
  LayoutSpec experts = Spec(1, 4, 4);
  experts.num_experts = 6;
  ExpectError(experts, 4, "model.n_routed_experts (6) is not divisible by parallel.ep (4)");
  LayoutSpec layers = Spec(4, 1, 1);
  layers.num_layers = 3;
  ExpectError(layers, 4, "model.num_hidden_layers (3) is less than parallel.pp (4)");
  LayoutSpec dual = Spec(3, 1, 1);
  dual.dualpipe = true;
  ExpectError(dual, 3, "dualpipe needs an even parallel.pp, got 3");
  LayoutSpec micro = Spec(2, 1, 1);
  micro.dualpipe = true;
  micro.num_micro_batches = 3;
  ExpectError(micro, 2, "at least 2 x parallel.pp (4), got 3");
  ExpectError(Spec(1, 6, 1), 6, "ranks per node (4) does not divide the world size (6)", 4);
  ExpectError(Spec(1, 2, 1), 2, "ranks per node (0) must be at least 1", 0);
}

TEST(TopologyTest, NodeLimitedRoutingNeedsGroupsInsideNodes) {
  // EP 8 over nodes of 2 ranks: 4 nodes per EP group.
  LayoutSpec s = Spec(1, 8, 8);
  s.num_experts = 16;
  s.n_group = 4;
  absl::StatusOr<Topology> ok = Topology::Create(s, 8, 0, 2);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->ep_nodes(), 4);
  s.n_group = 2;  // 2 groups over 4 nodes: a group spans two nodes
  ExpectError(s, 8, "model.n_group (2) expert groups cannot each sit inside one node", 2);
  s.n_group = 1;  // not group-limited: no constraint
  EXPECT_TRUE(Topology::Create(s, 8, 0, 2).ok());
  // An EP group of 4 straddling nodes of 6 ranks.
  LayoutSpec odd = Spec(1, 12, 4);
  odd.n_group = 4;
  ExpectError(odd, 12, "spans 2 nodes of 6 ranks", 6);
  // The config's node size applies over the launcher's, clamped to the world.
  LayoutSpec cfg = Spec(1, 4, 4);
  cfg.ranks_per_node = 8;
  absl::StatusOr<Topology> small = Topology::Create(cfg, 4, 3, 1);
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(small->ranks_per_node(), 4);
  EXPECT_EQ(small->num_nodes(), 1);
}

}  // namespace
}  // namespace mt

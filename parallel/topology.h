// parallel/topology.h: the PP x DP layout with EP inside DP (design.md "Parallel layout"),
// each rank's coordinates in it, and the member lists of its process groups.
//
// world = pp x dp. Expert parallelism splits each pipeline stage's dp ranks into dp/ep
// expert-data-parallel replicas of ep ranks each: the ep ranks of one EP group hold disjoint
// experts and exchange tokens all-to-all; the dp/ep ranks of one expert-DP group hold the
// same experts and reduce their gradients together. Ranks are numbered
//
//   rank = pp_stage * dp + dp_rank,   dp_rank = expert_dp_rank * ep + ep_rank
//
// (ep fastest, pp slowest), so an EP group is ep consecutive ranks and fills a node before
// crossing to the next one (launchers place consecutive ranks on one node), a DP group is
// dp consecutive ranks, and pipeline neighbours are dp ranks apart. Example: pp 2, dp 4,
// ep 2 over 8 ranks:
//   PP groups {0,4} {1,5} {2,6} {3,7}        DP groups {0,1,2,3} {4,5,6,7}
//   EP groups {0,1} {2,3} {4,5} {6,7}        expert-DP groups {0,2} {1,3} {4,6} {5,7}
//
// Node-limited routing (DeepSeek-V3 §2.1.2): experts [r*E/ep, (r+1)*E/ep) live on EP rank r,
// and the n_group expert groups are contiguous expert ranges, so when an EP group spans N
// nodes, node j of it holds groups [j*n_group/N, (j+1)*n_group/N). A token routed to
// topk_group groups then reaches at most topk_group nodes exactly when no group straddles a
// node boundary, i.e. when N divides n_group: Create() requires that whenever routing is
// group-limited (n_group > 1) and the EP group crosses nodes.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace mt {

// `parallel: {pp, ep, dp}` plus the model facts the layout is validated against (0 = not
// checked). Filled by the trainer from its config; parallel/ knows nothing of models.
struct LayoutSpec {
  int pp = 1;
  int ep = 1;
  int dp = 1;
  int ranks_per_node = 0;     // 0 = the launcher's local size
  int num_layers = 0;         // decoder layers to split over pp stages
  int num_experts = 0;        // routed experts per MoE layer (split over ep)
  int n_group = 0;            // expert groups of group-limited routing (0 or 1 = not limited)
  bool dualpipe = false;      // DualPipe schedule: pp and the micro-batches must be even
  int num_micro_batches = 0;  // per optimizer step on one pipeline (DualPipe needs >= 2*pp)
};

struct RankCoords {
  int pp_stage = 0;        // in [0, pp)
  int dp_rank = 0;         // in [0, dp): index in the DP group
  int ep_rank = 0;         // in [0, ep): index in the EP group; owns experts [r*E/ep, ...)
  int expert_dp_rank = 0;  // in [0, dp/ep): index in the expert-DP group
  int node = 0;            // rank / ranks_per_node
};

class Topology {
 public:
  // Validates `spec` against the world before any communication. Errors (one message each)
  // for a world size other than pp x dp, ep not dividing dp, experts not divisible by ep,
  // fewer layers than stages, DualPipe with an odd pp or too few / an odd number of
  // micro-batches, ranks_per_node not dividing the world, node-limited routing that the
  // node layout cannot honour (see above), and a rank outside the world.
  static absl::StatusOr<Topology> Create(const LayoutSpec& spec, int world_size, int rank,
                                         int launcher_ranks_per_node = 1);

  int world_size() const { return world_size_; }
  int rank() const { return rank_; }
  int pp() const { return pp_; }
  int dp() const { return dp_; }
  int ep() const { return ep_; }
  int expert_dp() const { return dp_ / ep_; }
  int ranks_per_node() const { return ranks_per_node_; }
  int num_nodes() const { return world_size_ / ranks_per_node_; }
  // Nodes one EP group spans (1 when it fits in a node).
  int ep_nodes() const;

  RankCoords coords() const { return CoordsOf(rank_); }
  RankCoords CoordsOf(int rank) const;
  int RankOf(int pp_stage, int dp_rank) const { return pp_stage * dp_ + dp_rank; }

  // Member world ranks, in group-rank order (so member[i] is group rank i), of the groups
  // `rank` belongs to. Each kind of group partitions the world.
  std::vector<int> PpGroup(int rank) const;        // pp ranks: one per stage
  std::vector<int> DpGroup(int rank) const;        // dp ranks of one stage
  std::vector<int> EpGroup(int rank) const;        // ep consecutive ranks
  std::vector<int> ExpertDpGroup(int rank) const;  // dp/ep ranks holding the same experts
  // A number shared exactly by the members of each group (MPI_Comm_split's colour).
  int PpGroupId(int rank) const;
  int DpGroupId(int rank) const;
  int EpGroupId(int rank) const;
  int ExpertDpGroupId(int rank) const;

  // "pp 2 x dp 4 (ep 2, expert-dp 2) over 8 ranks, 4 per node"
  std::string Describe() const;

 private:
  Topology() = default;
  int world_size_ = 1, rank_ = 0, pp_ = 1, dp_ = 1, ep_ = 1, ranks_per_node_ = 1;
};

}  // namespace mt

// parallel/topology.cc: layout validation, rank coordinates and group members (see topology.h).
#include "parallel/topology.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/status.h"

namespace mt {
namespace {

absl::Status Invalid(const std::string& msg) { return absl::InvalidArgumentError(msg); }

// Checks `spec` against the world; the order puts the most basic mismatch first.
absl::Status Validate(const LayoutSpec& s, int world_size, int rank, int rpn) {
  if (s.pp < 1 || s.ep < 1 || s.dp < 1)
    return Invalid(absl::StrCat("parallel.pp (", s.pp, "), parallel.ep (", s.ep,
                                ") and parallel.dp (", s.dp, ") must all be at least 1"));
  if (static_cast<int64_t>(s.pp) * s.dp != world_size)
    return Invalid(absl::StrCat("world size ", world_size, " does not match parallel.pp (", s.pp,
                                ") x parallel.dp (", s.dp,
                                ") = ", static_cast<int64_t>(s.pp) * s.dp,
                                "; launch pp x dp processes or change the layout"));
  if (rank < 0 || rank >= world_size)
    return Invalid(absl::StrCat("rank ", rank, " is outside the world of ", world_size));
  if (s.dp % s.ep != 0)
    return Invalid(absl::StrCat("parallel.dp (", s.dp, ") is not divisible by parallel.ep (", s.ep,
                                "): expert parallelism runs inside data parallelism"));
  if (s.num_experts > 0 && s.num_experts % s.ep != 0)
    return Invalid(absl::StrCat("model.n_routed_experts (", s.num_experts,
                                ") is not divisible by parallel.ep (", s.ep,
                                "): every EP rank holds the same number of experts"));
  if (s.num_layers > 0 && s.num_layers < s.pp)
    return Invalid(absl::StrCat("model.num_hidden_layers (", s.num_layers,
                                ") is less than parallel.pp (", s.pp,
                                "): every pipeline stage needs at least one layer"));
  if (s.dualpipe && s.pp % 2 != 0)
    return Invalid(absl::StrCat("parallel.schedule dualpipe needs an even parallel.pp, got ", s.pp,
                                " (ranks pair up as stage r and stage pp-1-r)"));
  if (s.dualpipe && s.num_micro_batches > 0 &&
      (s.num_micro_batches % 2 != 0 || s.num_micro_batches < 2 * s.pp))
    return Invalid(
        absl::StrCat("parallel.schedule dualpipe needs an even number of micro-batches "
                     "per step, at least 2 x parallel.pp (",
                     2 * s.pp, "), got ", s.num_micro_batches));
  if (world_size % rpn != 0)
    return Invalid(absl::StrCat("ranks per node (", rpn, ") does not divide the world size (",
                                world_size, "); set parallel.ranks_per_node"));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Topology> Topology::Create(const LayoutSpec& spec, int world_size, int rank,
                                          int launcher_ranks_per_node) {
  int rpn = spec.ranks_per_node > 0 ? spec.ranks_per_node : launcher_ranks_per_node;
  if (rpn < 1) return Invalid(absl::StrCat("ranks per node (", rpn, ") must be at least 1"));
  if (world_size < 1) return Invalid(absl::StrCat("world size ", world_size, " is less than 1"));
  // A single node smaller than the config's node size (a laptop run of a cluster config).
  rpn = std::min(rpn, world_size);
  RETURN_IF_ERROR(Validate(spec, world_size, rank, rpn));

  Topology t;
  t.world_size_ = world_size;
  t.rank_ = rank;
  t.pp_ = spec.pp;
  t.dp_ = spec.dp;
  t.ep_ = spec.ep;
  t.ranks_per_node_ = rpn;

  // Node-limited routing: every expert group must sit inside one node (see topology.h).
  const int nodes = t.ep_nodes();
  if (spec.n_group > 1 && nodes > 1 && (spec.ep % rpn != 0 || spec.n_group % nodes != 0))
    return Invalid(absl::StrCat(
        "node-limited routing: an EP group of parallel.ep (", spec.ep, ") ranks spans ", nodes,
        " nodes of ", rpn, " ranks, so model.n_group (", spec.n_group,
        ") expert groups cannot each sit inside one node; needs parallel.ep a multiple of the "
        "ranks per node and model.n_group a multiple of parallel.ep / ranks per node"));
  return t;
}

int Topology::ep_nodes() const {
  int most = 1;
  for (int first = 0; first < world_size_; first += ep_) {
    int last = first + ep_ - 1;
    most = std::max(most, last / ranks_per_node_ - first / ranks_per_node_ + 1);
  }
  return most;
}

RankCoords Topology::CoordsOf(int rank) const {
  RankCoords c;
  c.pp_stage = rank / dp_;
  c.dp_rank = rank % dp_;
  c.ep_rank = c.dp_rank % ep_;
  c.expert_dp_rank = c.dp_rank / ep_;
  c.node = rank / ranks_per_node_;
  return c;
}

std::vector<int> Topology::PpGroup(int rank) const {
  std::vector<int> m;
  for (int s = 0; s < pp_; ++s) m.push_back(RankOf(s, rank % dp_));
  return m;
}

std::vector<int> Topology::DpGroup(int rank) const {
  std::vector<int> m;
  for (int d = 0; d < dp_; ++d) m.push_back(RankOf(rank / dp_, d));
  return m;
}

std::vector<int> Topology::EpGroup(int rank) const {
  std::vector<int> m;
  const int first = rank - rank % ep_;
  for (int e = 0; e < ep_; ++e) m.push_back(first + e);
  return m;
}

std::vector<int> Topology::ExpertDpGroup(int rank) const {
  const RankCoords c = CoordsOf(rank);
  std::vector<int> m;
  for (int r = 0; r < dp_ / ep_; ++r) m.push_back(RankOf(c.pp_stage, r * ep_ + c.ep_rank));
  return m;
}

int Topology::PpGroupId(int rank) const { return rank % dp_; }
int Topology::DpGroupId(int rank) const { return rank / dp_; }
int Topology::EpGroupId(int rank) const { return rank / ep_; }
int Topology::ExpertDpGroupId(int rank) const {
  const RankCoords c = CoordsOf(rank);
  return c.pp_stage * ep_ + c.ep_rank;
}

std::string Topology::Describe() const {
  return absl::StrCat("pp ", pp_, " x dp ", dp_, " (ep ", ep_, ", expert-dp ", dp_ / ep_, ") over ",
                      world_size_, " ranks, ", ranks_per_node_, " per node");
}

}  // namespace mt

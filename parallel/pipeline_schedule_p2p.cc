// parallel/pipeline_schedule_p2p.cc: ValidateGroupedRendezvous, whether a schedule's action
// lists also run over NCCL as NcclCommunicator drives point to point (parallel/p2p_batch.h).
//
// ValidateSchedule proves the lists deadlock-free when sends are buffered and tagged (MPI).
// NCCL differs twice: a message carries no tag, so the k-th send from rank a to rank b is
// b's k-th receive from a, whatever either expects; and a send completes only when its
// receive runs, so it holds the group it was launched in. NcclCommunicator launches each
// rank's pending sends together with its next receive (or the step's final waits) as one
// group and waits for all of it. This file replays exactly that: groups per rank in list
// order, each group active once the rank's previous one completed, and an operation done
// when its partner's group is active too.
#include <algorithm>
#include <map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/status.h"
#include "parallel/pipeline_schedule.h"

namespace mt {
namespace {

bool IsForwardMessage(PipelineOp op) {
  return op == PipelineOp::kSendForward || op == PipelineOp::kRecvForward;
}

// One point-to-point action of a rank's list, where it sits in the rank's groups and which
// operation of the peer it meets.
struct Op {
  int index = 0;  // in the rank's action list
  int group = 0;  // in the rank's groups
  int partner_rank = -1, partner_op = -1;
  bool done = false;
};

struct RankOps {
  std::vector<Op> ops;                   // the rank's sends and receives, in list order
  std::vector<std::vector<int>> groups;  // op indices, in launch order
  int active = 0;                        // the first group not completed
};

std::string Header(const PipelineSchedule& s) { return PipelineScheduleName(s) + " over NCCL"; }

}  // namespace

absl::Status ValidateGroupedRendezvous(const PipelineSchedule& s) {
  if (static_cast<int>(s.actions.size()) != s.num_ranks) {
    return absl::FailedPreconditionError(absl::StrCat(Header(s), ": ", s.actions.size(),
                                                      " action lists for ", s.num_ranks, " ranks"));
  }
  const int pp = s.num_ranks;
  std::vector<RankOps> ranks(pp);
  // (from, to) -> the op indices of from's sends to `to` / to's receives from `from`.
  std::map<std::pair<int, int>, std::vector<int>> sends, recvs;
  for (int r = 0; r < pp; ++r) {
    RankOps& ro = ranks[r];
    std::vector<int> pending;
    for (int i = 0; i < static_cast<int>(s.actions[r].size()); ++i) {
      const PipelineAction& a = s.actions[r][i];
      if (!IsPipelineSend(a.op) && !IsPipelineRecv(a.op)) continue;
      if (a.peer < 0 || a.peer >= pp || a.peer == r) {
        return absl::FailedPreconditionError(
            absl::StrCat(Header(s), ": rank ", r, ", action ", i, " (", PipelineActionName(a),
                         "): peer ", a.peer, " is not another rank of [0, ", pp, ")"));
      }
      const int k = static_cast<int>(ro.ops.size());
      ro.ops.push_back({i, static_cast<int>(ro.groups.size())});
      pending.push_back(k);
      if (IsPipelineSend(a.op)) {
        sends[{r, a.peer}].push_back(k);
      } else {
        recvs[{a.peer, r}].push_back(k);
        ro.groups.push_back(std::move(pending));  // a receive blocks: launch what waits
        pending.clear();
      }
    }
    if (!pending.empty()) ro.groups.push_back(std::move(pending));  // the step's final waits
  }
  // Untagged matching: the k-th send of each direction meets that direction's k-th receive.
  for (const auto& [dir, from_ops] : sends) {
    const auto& [from, to] = dir;
    const std::vector<int>& to_ops = recvs[dir];
    for (size_t k = 0; k < std::max(from_ops.size(), to_ops.size()); ++k) {
      if (k >= from_ops.size() || k >= to_ops.size()) {
        return absl::FailedPreconditionError(
            absl::StrCat(Header(s), ": rank ", from, " sends ", from_ops.size(),
                         " messages to rank ", to, ", which receives ", to_ops.size(), " from it"));
      }
      const PipelineAction& a = s.actions[from][ranks[from].ops[from_ops[k]].index];
      const PipelineAction& b = s.actions[to][ranks[to].ops[to_ops[k]].index];
      if (a.micro_batch != b.micro_batch || a.chunk != b.chunk ||
          IsForwardMessage(a.op) != IsForwardMessage(b.op)) {
        return absl::FailedPreconditionError(absl::StrCat(
            Header(s), ": rank ", from, "'s send ", k, " to rank ", to, " is ",
            PipelineActionName(a), " but rank ", to, "'s receive ", k, " from rank ", from, " is ",
            PipelineActionName(b), " (NCCL matches by order, not by tag)"));
      }
      ranks[from].ops[from_ops[k]].partner_rank = to;
      ranks[from].ops[from_ops[k]].partner_op = to_ops[k];
      ranks[to].ops[to_ops[k]].partner_rank = from;
      ranks[to].ops[to_ops[k]].partner_op = from_ops[k];
    }
  }
  for (const auto& [dir, to_ops] : recvs) {
    if (!sends.count(dir)) {
      return absl::FailedPreconditionError(
          absl::StrCat(Header(s), ": rank ", dir.second, " receives ", to_ops.size(),
                       " messages from rank ", dir.first, ", which sends it none"));
    }
  }
  // Replay: an operation completes when its partner sits in the partner rank's active group;
  // a group completes with its last operation and the rank launches its next one.
  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < pp; ++r) {
      RankOps& ro = ranks[r];
      if (ro.active >= static_cast<int>(ro.groups.size())) continue;
      bool all_done = true;
      for (int k : ro.groups[ro.active]) {
        Op& op = ro.ops[k];
        if (!op.done) {
          Op& partner = ranks[op.partner_rank].ops[op.partner_op];
          if (partner.group == ranks[op.partner_rank].active) {
            op.done = partner.done = true;
            progress = true;
          }
        }
        all_done = all_done && op.done;
      }
      if (all_done) {
        ++ro.active;
        progress = true;
      }
    }
  }
  std::vector<std::string> stuck;
  for (int r = 0; r < pp; ++r) {
    const RankOps& ro = ranks[r];
    if (ro.active >= static_cast<int>(ro.groups.size())) continue;
    for (int k : ro.groups[ro.active]) {
      const Op& op = ro.ops[k];
      if (op.done) continue;
      const Op& partner = ranks[op.partner_rank].ops[op.partner_op];
      const RankOps& peer = ranks[op.partner_rank];
      stuck.push_back(absl::StrCat(
          "rank ", r, "'s ", PipelineActionName(s.actions[r][op.index]), " (action ", op.index,
          ") waits for rank ", op.partner_rank, "'s ",
          PipelineActionName(s.actions[op.partner_rank][partner.index]), " (action ", partner.index,
          "), but rank ", op.partner_rank, " is itself waiting at action ",
          peer.ops[peer.groups[peer.active].back()].index));
      break;
    }
  }
  if (stuck.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      Header(s),
      ": deadlock when sends complete only as they are received: ", absl::StrJoin(stuck, "; ")));
}

}  // namespace mt

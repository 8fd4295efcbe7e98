// parallel/pipeline_schedule_sim.cc: timing a schedule (SimulateSchedule), its activation
// footprint, the validator built on both, and the closed-form bubbles of perf.md §4.
#include <algorithm>
#include <map>
#include <numeric>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "kernels/status.h"
#include "parallel/pipeline_schedule.h"

namespace mt {

PipelineCosts PipelineCosts::Uniform(int num_stages, double forward, double backward,
                                     double backward_weight, double forward_backward) {
  PipelineCosts c;
  c.stages.assign(num_stages, StageCost{forward, backward, backward_weight, 0, 0});
  c.forward_backward = forward_backward;
  return c;
}

double PipelineTimeline::MaxBubble() const {
  return bubble.empty() ? 0 : *std::max_element(bubble.begin(), bubble.end());
}

double PipelineTimeline::MeanBubble() const {
  if (bubble.empty()) return 0;
  return std::accumulate(bubble.begin(), bubble.end(), 0.0) / bubble.size();
}

double BubbleFormula1F1B(int pp, double f, double b) { return (pp - 1) * (f + b); }

double BubbleFormulaZB1P(int pp, double f, double b, double w) {
  return (pp - 1) * (f + b - 2 * w);
}

double BubbleFormulaDualPipe(int pp, double fb, double b, double w) {
  return (pp / 2 - 1) * (fb + b - 3 * w);
}

namespace {

bool IsCompute(PipelineOp op) {
  return op == PipelineOp::kForward || op == PipelineOp::kBackward ||
         op == PipelineOp::kBackwardInput || op == PipelineOp::kBackwardWeight ||
         op == PipelineOp::kForwardBackward;
}

std::string Where(const PipelineSchedule& s, int rank, int index) {
  std::string where = absl::StrCat(PipelineScheduleName(s), ": rank ", rank);
  if (index >= 0) {
    absl::StrAppend(&where, ", action ", index, " (", PipelineActionName(s.actions[rank][index]),
                    ")");
  }
  return where;
}

absl::Status Bad(const PipelineSchedule& s, int rank, int index, const std::string& what) {
  return absl::FailedPreconditionError(absl::StrCat(Where(s, rank, index), ": ", what));
}

// The micro-batch/chunk pairs an action computes on, forward part first.
struct Part {
  bool forward;
  int micro_batch;
  int chunk;
};

absl::Status CheckPart(const PipelineSchedule& s, int rank, int index, int mb, int chunk) {
  if (mb < 0 || mb >= s.num_micro_batches) {
    return Bad(s, rank, index,
               absl::StrCat("micro-batch ", mb, " is out of [0, ", s.num_micro_batches, ")"));
  }
  if (chunk < 0 || chunk >= s.num_chunks) {
    return Bad(s, rank, index, absl::StrCat("chunk ", chunk, " is out of [0, ", s.num_chunks, ")"));
  }
  if (s.ChunkOfMicroBatch(mb) != chunk) {
    return Bad(s, rank, index,
               absl::StrCat("micro-batch ", mb, " flows through chunk ", s.ChunkOfMicroBatch(mb),
                            ", not ", chunk));
  }
  return absl::OkStatus();
}

absl::Status CheckShape(const PipelineSchedule& s) {
  if (s.num_ranks < 1 || s.num_micro_batches < 1 || s.num_chunks < 1 || s.num_chunks > 2 ||
      static_cast<int>(s.actions.size()) != s.num_ranks) {
    return absl::FailedPreconditionError(
        absl::StrCat("pipeline schedule: ", s.actions.size(), " action lists for pp=", s.num_ranks,
                     ", m=", s.num_micro_batches, ", chunks=", s.num_chunks,
                     "; expected one list per rank, pp, m >= 1 and 1 or 2 chunks"));
  }
  for (int r = 0; r < s.num_ranks; ++r) {
    for (int i = 0; i < static_cast<int>(s.actions[r].size()); ++i) {
      const PipelineAction& a = s.actions[r][i];
      RETURN_IF_ERROR(CheckPart(s, r, i, a.micro_batch, a.chunk));
      if (a.op == PipelineOp::kForwardBackward) {
        RETURN_IF_ERROR(CheckPart(s, r, i, a.bwd_micro_batch, a.bwd_chunk));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PipelineTimeline> SimulateSchedule(const PipelineSchedule& s,
                                                  const PipelineCosts& costs) {
  RETURN_IF_ERROR(CheckShape(s));
  const int pp = s.num_ranks, m = s.num_micro_batches;
  if (static_cast<int>(costs.stages.size()) != pp) {
    return absl::InvalidArgumentError(absl::StrCat("pipeline simulation: costs for ",
                                                   costs.stages.size(), " stages; expected ", pp));
  }
  // [micro_batch * pp + stage]: when its forward / input backward finished (-1: not yet).
  std::vector<double> f_done(static_cast<size_t>(m) * pp, -1), b_done(f_done);
  auto at = [pp](int mb, int stage) { return static_cast<size_t>(mb) * pp + stage; };

  PipelineTimeline t;
  t.busy.assign(pp, 0);
  t.start.resize(pp);
  t.end.resize(pp);
  for (int r = 0; r < pp; ++r) {
    t.start[r].assign(s.actions[r].size(), 0);
    t.end[r].assign(s.actions[r].size(), 0);
  }
  std::vector<double> clock(pp, 0);
  std::vector<size_t> next(pp, 0);
  size_t remaining = 0;
  for (const auto& list : s.actions) remaining += list.size();

  // Earliest start of part (fwd, mb, chunk) on `rank`, or -1 when an input is missing.
  auto ready = [&](int rank, bool fwd, int mb, int chunk) -> double {
    const int stage = s.StageOf(rank, chunk);
    if (fwd) {
      if (stage == 0) return 0;
      const double f = f_done[at(mb, stage - 1)];
      return f < 0 ? -1 : f + costs.p2p;
    }
    const double own = f_done[at(mb, stage)];
    if (own < 0) return -1;
    if (stage == pp - 1) return own;
    const double g = b_done[at(mb, stage + 1)];
    return g < 0 ? -1 : std::max(own, g + costs.p2p);
  };

  while (remaining > 0) {
    bool progress = false;
    for (int r = 0; r < pp; ++r) {
      while (next[r] < s.actions[r].size()) {
        const size_t i = next[r];
        const PipelineAction& a = s.actions[r][i];
        if (!IsCompute(a.op)) {
          t.start[r][i] = t.end[r][i] = clock[r];
          ++next[r], --remaining, progress = true;
          continue;
        }
        const StageCost& fc = costs.stages[s.StageOf(r, a.chunk)];
        double start = clock[r], duration = 0;
        double in = 0;
        switch (a.op) {
          case PipelineOp::kForward:
            in = ready(r, true, a.micro_batch, a.chunk);
            duration = fc.forward;
            break;
          case PipelineOp::kBackward:
            in = ready(r, false, a.micro_batch, a.chunk);
            duration = fc.backward;
            break;
          case PipelineOp::kBackwardInput:
            in = ready(r, false, a.micro_batch, a.chunk);
            duration = fc.backward - fc.backward_weight;
            break;
          case PipelineOp::kBackwardWeight:
            in = b_done[at(a.micro_batch, s.StageOf(r, a.chunk))];
            duration = fc.backward_weight;
            break;
          case PipelineOp::kForwardBackward: {
            const double fin = ready(r, true, a.micro_batch, a.chunk);
            const double bin = ready(r, false, a.bwd_micro_batch, a.bwd_chunk);
            in = (fin < 0 || bin < 0) ? -1 : std::max(fin, bin);
            const StageCost& bc = costs.stages[s.StageOf(r, a.bwd_chunk)];
            if (costs.forward_backward >= 0) {
              duration = costs.forward_backward;
            } else {
              const double comm = fc.forward_comm + bc.backward_comm;
              duration = std::max(fc.forward + bc.backward - comm, comm);
            }
            break;
          }
          default:
            break;
        }
        if (in < 0) break;  // waits for another rank
        start = std::max(start, in);
        const double end = start + duration;
        t.start[r][i] = start;
        t.end[r][i] = end;
        clock[r] = end;
        t.busy[r] += duration;
        if (a.op == PipelineOp::kForward || a.op == PipelineOp::kForwardBackward) {
          double& slot = f_done[at(a.micro_batch, s.StageOf(r, a.chunk))];
          if (slot >= 0) return Bad(s, r, i, "a second forward of the same micro-batch and stage");
          slot = end;
        }
        if (a.op == PipelineOp::kBackward || a.op == PipelineOp::kBackwardInput ||
            a.op == PipelineOp::kForwardBackward) {
          const int mb = a.op == PipelineOp::kForwardBackward ? a.bwd_micro_batch : a.micro_batch;
          const int ch = a.op == PipelineOp::kForwardBackward ? a.bwd_chunk : a.chunk;
          double& slot = b_done[at(mb, s.StageOf(r, ch))];
          if (slot >= 0) return Bad(s, r, i, "a second backward of the same micro-batch and stage");
          slot = end;
        }
        ++next[r], --remaining, progress = true;
      }
    }
    if (!progress) {
      std::string blocked;
      for (int r = 0; r < pp; ++r) {
        if (next[r] < s.actions[r].size()) {
          absl::StrAppend(&blocked, blocked.empty() ? "" : ", ", "rank ", r, " at ",
                          PipelineActionName(s.actions[r][next[r]]));
        }
      }
      return absl::FailedPreconditionError(absl::StrCat(
          PipelineScheduleName(s),
          ": deadlock, every rank waits for an input that is never produced (", blocked, ")"));
    }
  }
  t.makespan = *std::max_element(clock.begin(), clock.end());
  t.bubble.resize(pp);
  for (int r = 0; r < pp; ++r) t.bubble[r] = t.makespan - t.busy[r];
  t.peak_in_flight = PeakActivationsInFlight(s);
  return t;
}

std::vector<int> PeakActivationsInFlight(const PipelineSchedule& s) {
  std::vector<int> peak(s.actions.size(), 0);
  for (size_t r = 0; r < s.actions.size(); ++r) {
    int held = 0;
    for (const PipelineAction& a : s.actions[r]) {
      if (a.op == PipelineOp::kForward || a.op == PipelineOp::kForwardBackward) {
        peak[r] = std::max(peak[r], ++held);
      }
      if (a.op == PipelineOp::kBackward || a.op == PipelineOp::kBackwardWeight ||
          a.op == PipelineOp::kForwardBackward) {
        --held;
      }
    }
  }
  return peak;
}

absl::Status ValidateSchedule(const PipelineSchedule& s) {
  RETURN_IF_ERROR(CheckShape(s));
  const int pp = s.num_ranks, m = s.num_micro_batches;
  // Per (micro-batch, stage): 0 nothing, 1 forward done, 2 input gradient done (weight
  // pending), 3 complete.
  std::vector<int> state(static_cast<size_t>(m) * pp, 0);
  // (from, to, backward?, micro-batch, chunk) of every send and receive.
  std::multiset<std::tuple<int, int, bool, int, int>> sends, recvs;
  for (int r = 0; r < pp; ++r) {
    std::set<std::tuple<bool, int, int>> received;  // (backward?, mb, chunk)
    for (int i = 0; i < static_cast<int>(s.actions[r].size()); ++i) {
      const PipelineAction& a = s.actions[r][i];
      auto st = [&](int mb, int chunk) -> int& {
        return state[static_cast<size_t>(mb) * pp + s.StageOf(r, chunk)];
      };
      const bool is_recv = IsPipelineRecv(a.op);
      const bool is_send = IsPipelineSend(a.op);
      if (is_recv || is_send) {
        const bool backward =
            a.op == PipelineOp::kRecvBackward || a.op == PipelineOp::kSendBackward;
        // A receive of activations comes from the previous stage, of gradients from the next;
        // a send goes the other way.
        const bool toward_next = is_recv ? backward : !backward;
        const int stage = s.StageOf(r, a.chunk);
        const int neighbour_stage = toward_next ? stage + 1 : stage - 1;
        if (neighbour_stage < 0 || neighbour_stage >= pp) {
          return Bad(s, r, i, "communication past the end of the pipeline");
        }
        const int peer = s.RankOf(neighbour_stage, a.chunk);
        if (a.peer != peer) {
          return Bad(s, r, i, absl::StrCat("peer ", a.peer, "; expected rank ", peer));
        }
        if (is_recv) {
          if (!received.insert({backward, a.micro_batch, a.chunk}).second) {
            return Bad(s, r, i, "received twice");
          }
          recvs.insert({a.peer, r, backward, a.micro_batch, a.chunk});
        } else {
          const int need = backward ? 2 : 1;
          if (st(a.micro_batch, a.chunk) < need) {
            return Bad(s, r, i, "sends a result before computing it");
          }
          sends.insert({r, a.peer, backward, a.micro_batch, a.chunk});
        }
        continue;
      }
      auto forward = [&](int mb, int chunk) -> absl::Status {
        if (st(mb, chunk) != 0) return Bad(s, r, i, "a second forward");
        if (s.StageOf(r, chunk) > 0 && !received.count({false, mb, chunk})) {
          return Bad(s, r, i, "forward before receiving its input activations");
        }
        st(mb, chunk) = 1;
        return absl::OkStatus();
      };
      auto backward = [&](int mb, int chunk, bool split) -> absl::Status {
        if (st(mb, chunk) == 0) return Bad(s, r, i, "backward before its forward");
        if (st(mb, chunk) != 1) return Bad(s, r, i, "a second backward");
        if (s.StageOf(r, chunk) < pp - 1 && !received.count({true, mb, chunk})) {
          return Bad(s, r, i, "backward before receiving its output gradient");
        }
        st(mb, chunk) = split ? 2 : 3;
        return absl::OkStatus();
      };
      switch (a.op) {
        case PipelineOp::kForward:
          RETURN_IF_ERROR(forward(a.micro_batch, a.chunk));
          break;
        case PipelineOp::kBackward:
          RETURN_IF_ERROR(backward(a.micro_batch, a.chunk, false));
          break;
        case PipelineOp::kBackwardInput:
          RETURN_IF_ERROR(backward(a.micro_batch, a.chunk, true));
          break;
        case PipelineOp::kBackwardWeight:
          if (st(a.micro_batch, a.chunk) != 2) {
            return Bad(s, r, i, "weight gradient without a pending input backward");
          }
          st(a.micro_batch, a.chunk) = 3;
          break;
        case PipelineOp::kForwardBackward:
          RETURN_IF_ERROR(forward(a.micro_batch, a.chunk));
          RETURN_IF_ERROR(backward(a.bwd_micro_batch, a.bwd_chunk, false));
          break;
        default:
          break;
      }
    }
  }
  for (int mb = 0; mb < m; ++mb) {
    const int chunk = s.ChunkOfMicroBatch(mb);
    for (int stage = 0; stage < pp; ++stage) {
      if (state[static_cast<size_t>(mb) * pp + stage] != 3) {
        return Bad(s, s.RankOf(stage, chunk), -1,
                   absl::StrCat("micro-batch ", mb, " on stage ", stage,
                                " never completes its forward and backward"));
      }
    }
  }
  if (sends != recvs) {
    return absl::FailedPreconditionError(
        absl::StrCat(PipelineScheduleName(s), ": the sends do not match the receives one to one"));
  }
  ASSIGN_OR_RETURN(PipelineTimeline timeline,
                   SimulateSchedule(s, PipelineCosts::Uniform(pp, 1, 2, 1)));
  const int bound = s.kind == ScheduleKind::kDualPipe ? pp + 1 : pp;
  for (int r = 0; r < pp; ++r) {
    if (timeline.peak_in_flight[r] > bound) {
      return Bad(s, r, -1,
                 absl::StrCat("holds ", timeline.peak_in_flight[r],
                              " micro-batches of activations; the bound is ", bound));
    }
  }
  return absl::OkStatus();
}

}  // namespace mt

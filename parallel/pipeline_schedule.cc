// parallel/pipeline_schedule.cc: the schedule generators (1F1B, ZB-H1, DualPipe) and the
// validator. The simulator and the closed-form bubbles are in pipeline_schedule_sim.cc.
#include "parallel/pipeline_schedule.h"

#include <algorithm>
#include <deque>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/status.h"

namespace mt {

int PipelineSchedule::StageOf(int rank, int chunk) const {
  return chunk == 0 ? rank : num_ranks - 1 - rank;
}

int PipelineSchedule::RankOf(int stage, int chunk) const {
  return chunk == 0 ? stage : num_ranks - 1 - stage;
}

int PipelineSchedule::ChunkOfMicroBatch(int micro_batch) const {
  if (num_chunks == 1) return 0;
  return micro_batch < num_micro_batches / 2 ? 0 : 1;
}

const char* ScheduleKindName(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::k1F1B:
      return "1f1b";
    case ScheduleKind::kZB1P:
      return "zb1p";
    case ScheduleKind::kDualPipe:
      return "dualpipe";
  }
  return "?";
}

absl::StatusOr<ScheduleKind> ParseScheduleKind(const std::string& name) {
  if (name == "1f1b") return ScheduleKind::k1F1B;
  if (name == "zb1p") return ScheduleKind::kZB1P;
  if (name == "dualpipe") return ScheduleKind::kDualPipe;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown pipeline schedule \"", name, "\"; expected 1f1b, zb1p or dualpipe"));
}

std::string PipelineActionName(const PipelineAction& a) {
  const std::string id = absl::StrCat(a.micro_batch, ".", a.chunk);
  switch (a.op) {
    case PipelineOp::kForward:
      return "F" + id;
    case PipelineOp::kBackward:
      return "B" + id;
    case PipelineOp::kBackwardInput:
      return "BI" + id;
    case PipelineOp::kBackwardWeight:
      return "BW" + id;
    case PipelineOp::kForwardBackward:
      return absl::StrCat("F", id, "&B", a.bwd_micro_batch, ".", a.bwd_chunk);
    case PipelineOp::kRecvForward:
      return absl::StrCat("RF", id, "<-", a.peer);
    case PipelineOp::kSendForward:
      return absl::StrCat("SF", id, "->", a.peer);
    case PipelineOp::kRecvBackward:
      return absl::StrCat("RB", id, "<-", a.peer);
    case PipelineOp::kSendBackward:
      return absl::StrCat("SB", id, "->", a.peer);
  }
  return "?";
}

std::string PipelineScheduleName(const PipelineSchedule& s) {
  return absl::StrCat("pipeline schedule (", ScheduleKindName(s.kind), ", pp=", s.num_ranks,
                      ", m=", s.num_micro_batches, ")");
}

namespace {

absl::Status CheckSizes(int pp, int m) {
  if (pp < 1)
    return absl::InvalidArgumentError(absl::StrCat("pipeline: pp = ", pp, "; expected >= 1"));
  if (m < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("pipeline: ", m, " micro-batches; expected >= 1"));
  }
  return absl::OkStatus();
}

// Wraps each compute action of `compute` with the receives it needs and the sends it makes.
// Peers follow from the stage layout: a chunk's previous stage is one rank up or down.
std::vector<PipelineAction> AddCommunication(const PipelineSchedule& s, int rank,
                                             const std::vector<PipelineAction>& compute) {
  const int last = s.num_ranks - 1;
  auto prev_rank = [&](int chunk) { return s.RankOf(s.StageOf(rank, chunk) - 1, chunk); };
  auto next_rank = [&](int chunk) { return s.RankOf(s.StageOf(rank, chunk) + 1, chunk); };
  auto has_prev = [&](int chunk) { return s.StageOf(rank, chunk) > 0; };
  auto has_next = [&](int chunk) { return s.StageOf(rank, chunk) < last; };
  std::vector<PipelineAction> out;
  out.reserve(compute.size() * 3);
  for (const PipelineAction& a : compute) {
    const bool fwd = a.op == PipelineOp::kForward || a.op == PipelineOp::kForwardBackward;
    int bwd_mb = -1, bwd_chunk = -1;
    if (a.op == PipelineOp::kBackward || a.op == PipelineOp::kBackwardInput) {
      bwd_mb = a.micro_batch;
      bwd_chunk = a.chunk;
    } else if (a.op == PipelineOp::kForwardBackward) {
      bwd_mb = a.bwd_micro_batch;
      bwd_chunk = a.bwd_chunk;
    }
    if (fwd && has_prev(a.chunk)) {
      out.push_back({PipelineOp::kRecvForward, a.micro_batch, a.chunk, -1, -1, prev_rank(a.chunk)});
    }
    if (bwd_mb >= 0 && has_next(bwd_chunk)) {
      out.push_back({PipelineOp::kRecvBackward, bwd_mb, bwd_chunk, -1, -1, next_rank(bwd_chunk)});
    }
    out.push_back(a);
    if (fwd && has_next(a.chunk)) {
      out.push_back({PipelineOp::kSendForward, a.micro_batch, a.chunk, -1, -1, next_rank(a.chunk)});
    }
    if (bwd_mb >= 0 && has_prev(bwd_chunk)) {
      out.push_back({PipelineOp::kSendBackward, bwd_mb, bwd_chunk, -1, -1, prev_rank(bwd_chunk)});
    }
  }
  return out;
}

PipelineAction Compute(PipelineOp op, int mb, int chunk) { return {op, mb, chunk, -1, -1, -1}; }

// 1F1B and ZB-H1 share their shape: stage r warms up with pp-1-r forwards, then alternates
// one forward and one backward, then drains the backwards. With `split`, backward is BI and
// stage r keeps up to `r` weight passes pending (ZB-H1); they run in FIFO order whenever more
// than r are pending, and all remaining ones at the end.
PipelineSchedule MakeOneForwardOneBackward(ScheduleKind kind, int pp, int m, bool split) {
  PipelineSchedule s;
  s.kind = kind;
  s.num_ranks = pp;
  s.num_micro_batches = m;
  s.num_chunks = 1;
  for (int r = 0; r < pp; ++r) {
    std::vector<PipelineAction> ops;
    const int max_pending_w = split ? r : 0;
    int f = 0, b = 0, w = 0;
    auto backward = [&]() {
      if (!split) {
        ops.push_back(Compute(PipelineOp::kBackward, b++, 0));
        return;
      }
      ops.push_back(Compute(PipelineOp::kBackwardInput, b++, 0));
      if (b - w > max_pending_w) ops.push_back(Compute(PipelineOp::kBackwardWeight, w++, 0));
    };
    const int warmup = std::min(pp - 1 - r, m);
    while (f < warmup) ops.push_back(Compute(PipelineOp::kForward, f++, 0));
    while (f < m) {
      ops.push_back(Compute(PipelineOp::kForward, f++, 0));
      backward();
    }
    while (b < m) backward();
    while (split && w < m) ops.push_back(Compute(PipelineOp::kBackwardWeight, w++, 0));
    s.actions.push_back(AddCommunication(s, r, ops));
  }
  return s;
}

// One DualPipe rank. "Phase" is DualPipe's local direction: phase 0 is the direction in which
// this rank sits in the first half of the pipeline, so for ranks in the second half phase p
// is chunk 1 - p. Micro-batches of chunk c are numbered c*m/2 + k in the order they enter.
class DualPipeRank {
 public:
  DualPipeRank(int pp, int m, int rank) : half_mb_(m / 2), second_half_(rank >= pp / 2) {}

  void Forward(int phase) {
    const int c = Chunk(phase);
    ops_.push_back(Compute(PipelineOp::kForward, Next(next_f_, c), c));
  }
  // `zero_bubble`: input gradient now, weight gradient queued for a later Weight().
  void Backward(int phase, bool zero_bubble = false) {
    const int c = Chunk(phase);
    const int mb = Next(next_b_, c);
    if (zero_bubble) {
      ops_.push_back(Compute(PipelineOp::kBackwardInput, mb, c));
      pending_w_.push_back({mb, c});
    } else {
      ops_.push_back(Compute(PipelineOp::kBackward, mb, c));
    }
  }
  void ForwardBackward(int f_phase, int b_phase) {
    const int fc = Chunk(f_phase), bc = Chunk(b_phase);
    const int fmb = Next(next_f_, fc);
    const int bmb = Next(next_b_, bc);
    ops_.push_back({PipelineOp::kForwardBackward, fmb, fc, bmb, bc, -1});
  }
  void Weight() {
    auto [mb, c] = pending_w_.front();
    pending_w_.pop_front();
    ops_.push_back(Compute(PipelineOp::kBackwardWeight, mb, c));
  }
  const std::vector<PipelineAction>& ops() const { return ops_; }
  bool weights_done() const { return pending_w_.empty(); }

 private:
  int Chunk(int phase) const { return phase ^ (second_half_ ? 1 : 0); }
  int Next(int* counter, int chunk) { return chunk * half_mb_ + counter[chunk]++; }

  int half_mb_;
  bool second_half_;
  int next_f_[2] = {0, 0};
  int next_b_[2] = {0, 0};
  std::deque<std::pair<int, int>> pending_w_;  // (micro-batch, chunk), FIFO
  std::vector<PipelineAction> ops_;
};

}  // namespace

absl::StatusOr<PipelineSchedule> Make1F1BSchedule(int pp, int m) {
  RETURN_IF_ERROR(CheckSizes(pp, m));
  return MakeOneForwardOneBackward(ScheduleKind::k1F1B, pp, m, /*split=*/false);
}

absl::StatusOr<PipelineSchedule> MakeZB1PSchedule(int pp, int m) {
  RETURN_IF_ERROR(CheckSizes(pp, m));
  return MakeOneForwardOneBackward(ScheduleKind::kZB1P, pp, m, /*split=*/true);
}

absl::StatusOr<PipelineSchedule> MakeDualPipeSchedule(int pp, int m) {
  RETURN_IF_ERROR(CheckSizes(pp, m));
  if (pp % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("DualPipe needs an even number of pipeline stages; got pp = ", pp));
  }
  if (m % 2 != 0 || m < 2 * pp) {
    return absl::InvalidArgumentError(
        absl::StrCat("DualPipe needs an even number of micro-batches, at least 2 * pp = ", 2 * pp,
                     " (half enter from each end and each half must fill the pipeline); got ", m));
  }
  PipelineSchedule s;
  s.kind = ScheduleKind::kDualPipe;
  s.num_ranks = pp;
  s.num_micro_batches = m;
  s.num_chunks = 2;
  const int half_ranks = pp / 2;
  for (int r = 0; r < pp; ++r) {
    const int h = std::min(r, pp - 1 - r);  // distance from the nearer end
    const bool middle = r == half_ranks - 1 || r == half_ranks;
    DualPipeRank d(pp, m, r);
    // 1: forwards of the local direction fill the pipeline from this end.
    for (int i = 0; i < (half_ranks - h - 1) * 2; ++i) d.Forward(0);
    // 2: the other direction arrives; alternate forwards of both.
    for (int i = 0; i <= h; ++i) {
      d.Forward(0);
      d.Forward(1);
    }
    // 3: first backwards (zero-bubble split), weight pass, and a forward.
    for (int i = 0; i < half_ranks - h - 1; ++i) {
      d.Backward(1, /*zero_bubble=*/true);
      d.Weight();
      d.Forward(1);
    }
    // 4: steady state, overlapped F&B pairs in both directions. The middle ranks run their
    // first pair unoverlapped: its backward input is not there yet when the forward starts.
    for (int i = 0; i < m / 2 - pp + h + 1; ++i) {
      if (i == 0 && middle) {
        d.Forward(0);
        d.Backward(1);
      } else {
        d.ForwardBackward(0, 1);
      }
      d.ForwardBackward(1, 0);
    }
    // 5: the local direction runs out of forwards.
    for (int i = 0; i < half_ranks - h - 1; ++i) {
      d.Backward(1);
      d.ForwardBackward(1, 0);
    }
    // 6: backwards of both directions; the later ones split so that weight passes can fill
    // the drain bubbles.
    bool zero_bubble = false;
    for (int i = 0; i <= h; ++i) {
      if (i == (h + 1) / 2 && h % 2 == 1) zero_bubble = true;
      d.Backward(1, zero_bubble);
      if (i == (h + 1) / 2 && h % 2 == 0) zero_bubble = true;
      d.Backward(0, zero_bubble);
    }
    // 7: weight passes interleaved with the last backwards; 8: the remaining weight passes.
    for (int i = 0; i < half_ranks - h - 1; ++i) {
      d.Weight();
      d.Backward(0, /*zero_bubble=*/true);
    }
    while (!d.weights_done()) d.Weight();
    s.actions.push_back(AddCommunication(s, r, d.ops()));
  }
  return s;
}

absl::StatusOr<PipelineSchedule> MakePipelineSchedule(ScheduleKind kind, int pp, int m) {
  switch (kind) {
    case ScheduleKind::k1F1B:
      return Make1F1BSchedule(pp, m);
    case ScheduleKind::kZB1P:
      return MakeZB1PSchedule(pp, m);
    case ScheduleKind::kDualPipe:
      return MakeDualPipeSchedule(pp, m);
  }
  return absl::InvalidArgumentError("unknown schedule kind");
}

}  // namespace mt

// parallel/communicator_stats.cc: the counting decorator, the environment switch and the
// per-run report (see communicator_stats.h).
#include "parallel/communicator_stats.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/status.h"

namespace mt {

const char* CommOpName(CommOp op) {
  switch (op) {
    case CommOp::kSend:
      return "send";
    case CommOp::kRecv:
      return "recv";
    case CommOp::kISend:
      return "isend";
    case CommOp::kIRecv:
      return "irecv";
    case CommOp::kAllReduce:
      return "all_reduce";
    case CommOp::kReduceScatter:
      return "reduce_scatter";
    case CommOp::kAllGather:
      return "all_gather";
    case CommOp::kAllToAll:
      return "all_to_all";
    case CommOp::kAllToAllV:
      return "all_to_all_v";
    case CommOp::kBroadcast:
      return "broadcast";
    case CommOp::kBarrier:
      return "barrier";
  }
  return "?";
}

CommOpStats CommStats::Total() const {
  CommOpStats t;
  for (const CommOpStats& s : ops) {
    t.calls += s.calls;
    t.bytes_sent += s.bytes_sent;
    t.seconds += s.seconds;
  }
  return t;
}

// ---- StatsCommunicator ----------------------------------------------------------------------

// Adds the time of Wait (or of the wrapped request's destructor, which waits) to its op.
class StatsCommunicator::TimedRequest : public Request {
 public:
  TimedRequest(StatsCommunicator* owner, CommOp op, std::unique_ptr<Request> inner)
      : owner_(owner), op_(op), inner_(std::move(inner)) {}
  ~TimedRequest() override {
    if (waited_) return;
    const Clock::time_point start = Clock::now();
    inner_.reset();
    owner_->Add(op_, /*calls=*/0, /*bytes=*/0, start);
  }
  absl::Status Wait() override {
    const Clock::time_point start = Clock::now();
    absl::Status s = inner_->Wait();
    if (!waited_) owner_->Add(op_, /*calls=*/0, /*bytes=*/0, start);
    waited_ = true;
    return s;
  }

 private:
  StatsCommunicator* owner_;
  CommOp op_;
  std::unique_ptr<Request> inner_;
  bool waited_ = false;
};

StatsCommunicator::StatsCommunicator(std::unique_ptr<Communicator> inner)
    : owned_(std::move(inner)), inner_(owned_.get()) {}

StatsCommunicator::StatsCommunicator(Communicator* inner) : inner_(inner) {}

CommStats StatsCommunicator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void StatsCommunicator::Reset() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_ = CommStats();
}

void StatsCommunicator::Add(CommOp op, int calls, int64_t bytes, Clock::time_point start) {
  const double s = std::chrono::duration<double>(Clock::now() - start).count();
  std::lock_guard<std::mutex> lock(mu_);
  CommOpStats& o = stats_.op(op);
  o.calls += calls;
  o.bytes_sent += bytes;
  o.seconds += s;
}

namespace {

int64_t Bytes(int64_t count, DType dtype) { return count * static_cast<int64_t>(DTypeSize(dtype)); }

}  // namespace

// Each method counts bytes only when the call succeeded: a failed call sent nothing that
// the job will use (and usually ends the job).
absl::Status StatsCommunicator::DoSend(InBuffer buf, int peer, int tag) {
  const Clock::time_point start = Clock::now();
  absl::Status s = inner_->Send(buf, peer, tag);
  Add(CommOp::kSend, 1, s.ok() ? Bytes(buf.count, buf.dtype) : 0, start);
  return s;
}

absl::Status StatsCommunicator::DoRecv(OutBuffer buf, int peer, int tag) {
  const Clock::time_point start = Clock::now();
  absl::Status s = inner_->Recv(buf, peer, tag);
  Add(CommOp::kRecv, 1, 0, start);
  return s;
}

absl::StatusOr<std::unique_ptr<Request>> StatsCommunicator::DoISend(InBuffer buf, int peer,
                                                                    int tag) {
  const Clock::time_point start = Clock::now();
  absl::StatusOr<std::unique_ptr<Request>> r = inner_->ISend(buf, peer, tag);
  Add(CommOp::kISend, 1, r.ok() ? Bytes(buf.count, buf.dtype) : 0, start);
  if (!r.ok()) return r.status();
  return std::unique_ptr<Request>(new TimedRequest(this, CommOp::kISend, *std::move(r)));
}

absl::StatusOr<std::unique_ptr<Request>> StatsCommunicator::DoIRecv(OutBuffer buf, int peer,
                                                                    int tag) {
  const Clock::time_point start = Clock::now();
  absl::StatusOr<std::unique_ptr<Request>> r = inner_->IRecv(buf, peer, tag);
  Add(CommOp::kIRecv, 1, 0, start);
  if (!r.ok()) return r.status();
  return std::unique_ptr<Request>(new TimedRequest(this, CommOp::kIRecv, *std::move(r)));
}

absl::Status StatsCommunicator::DoAllReduce(OutBuffer inout, ReduceOp op) {
  const int64_t p = size();
  const Clock::time_point start = Clock::now();
  absl::Status s = inner_->AllReduce(inout, op);
  Add(CommOp::kAllReduce, 1, s.ok() ? 2 * (p - 1) * Bytes(inout.count, inout.dtype) / p : 0, start);
  return s;
}

absl::Status StatsCommunicator::DoReduceScatter(InBuffer in, OutBuffer out, ReduceOp op) {
  const int64_t p = size();
  const Clock::time_point start = Clock::now();
  absl::Status s = inner_->ReduceScatter(in, out, op);
  // The input is p blocks of out.count: the p - 1 blocks of the others leave this rank.
  Add(CommOp::kReduceScatter, 1, s.ok() ? (p - 1) * Bytes(out.count, out.dtype) : 0, start);
  return s;
}

absl::Status StatsCommunicator::DoAllGather(InBuffer in, OutBuffer out) {
  const int64_t p = size();
  const Clock::time_point start = Clock::now();
  absl::Status s = inner_->AllGather(in, out);
  Add(CommOp::kAllGather, 1, s.ok() ? (p - 1) * Bytes(in.count, in.dtype) : 0, start);
  return s;
}

absl::Status StatsCommunicator::DoAllToAll(InBuffer in, OutBuffer out) {
  const int64_t p = size();
  const Clock::time_point start = Clock::now();
  absl::Status s = inner_->AllToAll(in, out);
  Add(CommOp::kAllToAll, 1, s.ok() ? (p - 1) * Bytes(in.count / p, in.dtype) : 0, start);
  return s;
}

absl::Status StatsCommunicator::DoAllToAllV(InBuffer in, const std::vector<int64_t>& send_counts,
                                            const std::vector<int64_t>& send_displs, OutBuffer out,
                                            const std::vector<int64_t>& recv_counts,
                                            const std::vector<int64_t>& recv_displs) {
  int64_t to_others = 0;
  for (int r = 0; r < size(); ++r)
    if (r != rank()) to_others += send_counts[r];
  const Clock::time_point start = Clock::now();
  absl::Status s = inner_->AllToAllV(in, send_counts, send_displs, out, recv_counts, recv_displs);
  Add(CommOp::kAllToAllV, 1, s.ok() ? Bytes(to_others, in.dtype) : 0, start);
  return s;
}

// Counted as an AllToAllV; its time is the start's plus the wait's, as an ISend's.
absl::StatusOr<std::unique_ptr<Request>> StatsCommunicator::DoIAllToAllV(
    InBuffer in, const std::vector<int64_t>& send_counts, const std::vector<int64_t>& send_displs,
    OutBuffer out, const std::vector<int64_t>& recv_counts,
    const std::vector<int64_t>& recv_displs) {
  int64_t to_others = 0;
  for (int r = 0; r < size(); ++r)
    if (r != rank()) to_others += send_counts[r];
  const Clock::time_point start = Clock::now();
  absl::StatusOr<std::unique_ptr<Request>> r =
      inner_->IAllToAllV(in, send_counts, send_displs, out, recv_counts, recv_displs);
  Add(CommOp::kAllToAllV, 1, r.ok() ? Bytes(to_others, in.dtype) : 0, start);
  if (!r.ok()) return r.status();
  return std::unique_ptr<Request>(new TimedRequest(this, CommOp::kAllToAllV, *std::move(r)));
}

absl::Status StatsCommunicator::DoBroadcast(OutBuffer inout, int root) {
  const bool sends = rank() == root && size() > 1;
  const Clock::time_point start = Clock::now();
  absl::Status s = inner_->Broadcast(inout, root);
  Add(CommOp::kBroadcast, 1, s.ok() && sends ? Bytes(inout.count, inout.dtype) : 0, start);
  return s;
}

absl::Status StatsCommunicator::DoBarrier() {
  const Clock::time_point start = Clock::now();
  absl::Status s = inner_->Barrier();
  Add(CommOp::kBarrier, 1, 0, start);
  return s;
}

// ---- Settings and process groups ------------------------------------------------------------

absl::StatusOr<CommStatsSettings> CommStatsSettingsFromEnv() {
  CommStatsSettings s;
  const char* on = std::getenv("MOETRAIN_COMM_STATS");
  const std::string v = on ? on : "";
  if (v == "1") {
    s.enabled = true;
  } else if (!v.empty() && v != "0") {
    return absl::InvalidArgumentError(
        absl::StrCat("MOETRAIN_COMM_STATS is '", v, "'; expected 1 (on) or 0 (off)"));
  }
  if (const char* w = std::getenv("MOETRAIN_COMM_STATS_WARMUP"); w && *w) {
    if (!absl::SimpleAtoi(w, &s.warmup_steps) || s.warmup_steps < 0)
      return absl::InvalidArgumentError(
          absl::StrCat("MOETRAIN_COMM_STATS_WARMUP is '", w, "'; expected a number of steps >= 0"));
  }
  return s;
}

namespace {

std::unique_ptr<Communicator>* GroupSlot(ProcessGroups* g, int i) {
  switch (i) {
    case 0:
      return &g->world;
    case 1:
      return &g->pp;
    case 2:
      return &g->dp;
    case 3:
      return &g->ep;
    default:
      return &g->expert_dp;
  }
}

}  // namespace

const char* StatsGroupName(int g) {
  static const char* const kNames[kNumStatsGroups] = {"world", "pp", "dp", "ep", "expert_dp"};
  return g >= 0 && g < kNumStatsGroups ? kNames[g] : "?";
}

void WrapGroupsWithStats(ProcessGroups* groups) {
  for (int i = 0; i < kNumStatsGroups; ++i) {
    std::unique_ptr<Communicator>* slot = GroupSlot(groups, i);
    if (*slot && !dynamic_cast<StatsCommunicator*>(slot->get()))
      *slot = std::make_unique<StatsCommunicator>(std::move(*slot));
  }
}

// ---- Report ---------------------------------------------------------------------------------

namespace {

std::string Num(double x) { return absl::StrFormat("%.9g", x); }

// "[a,b,...]" of f(rank) over the ranks.
template <typename F>
std::string PerRank(const std::vector<RankCommStats>& ranks, F f) {
  std::string s = "[";
  for (size_t r = 0; r < ranks.size(); ++r) {
    const double steps = static_cast<double>(std::max<int64_t>(ranks[r].steps, 1));
    absl::StrAppend(&s, r ? "," : "", Num(f(ranks[r]) / steps));
  }
  return s + "]";
}

}  // namespace

std::string CommStatsJson(const std::vector<RankCommStats>& ranks, int warmup_steps) {
  std::string j = absl::StrCat(
      "{\"ranks\":", ranks.size(), ",\"steps\":", ranks.empty() ? 0 : ranks[0].steps,
      ",\"warmup_steps\":", warmup_steps,
      ",\"step_s\":", PerRank(ranks, [](const RankCommStats& r) { return r.seconds; }));
  auto totals = [&](auto total_of) {
    return absl::StrCat(
        "\"bytes_per_step\":",
        PerRank(ranks, [&](const RankCommStats& r) { return total_of(r).bytes_sent * 1.0; }),
        ",\"comm_s_per_step\":",
        PerRank(ranks, [&](const RankCommStats& r) { return total_of(r).seconds; }),
        ",\"calls_per_step\":",
        PerRank(ranks, [&](const RankCommStats& r) { return total_of(r).calls * 1.0; }));
  };
  absl::StrAppend(&j, ",\"total\":{", totals([](const RankCommStats& r) {
    CommOpStats t;
    for (const CommStats& g : r.groups) {
      const CommOpStats x = g.Total();
      t.calls += x.calls;
      t.bytes_sent += x.bytes_sent;
      t.seconds += x.seconds;
    }
    return t;
  }),
                  "}");
  for (int g = 0; g < kNumStatsGroups; ++g) {
    absl::StrAppend(&j, ",\"", StatsGroupName(g), "\":{",
                    totals([g](const RankCommStats& r) { return r.groups[g].Total(); }),
                    ",\"ops\":{");
    bool first = true;
    for (int o = 0; o < kNumCommOps; ++o) {
      bool used = false;
      for (const RankCommStats& r : ranks) used = used || r.groups[g].ops[o].calls > 0;
      if (!used) continue;
      auto of = [g, o](const RankCommStats& r) { return r.groups[g].ops[o]; };
      absl::StrAppend(
          &j, first ? "" : ",", "\"", CommOpName(static_cast<CommOp>(o)), "\":{\"calls_per_step\":",
          PerRank(ranks, [&](const RankCommStats& r) { return of(r).calls * 1.0; }),
          ",\"bytes_per_step\":",
          PerRank(ranks, [&](const RankCommStats& r) { return of(r).bytes_sent * 1.0; }),
          ",\"s_per_step\":", PerRank(ranks, [&](const RankCommStats& r) { return of(r).seconds; }),
          "}");
      first = false;
    }
    absl::StrAppend(&j, "}}");
  }
  return j + "}";
}

CommStatsWindow::CommStatsWindow(ProcessGroups* groups, const CommStatsSettings& settings,
                                 int64_t first_step)
    : groups_(groups), settings_(settings), first_step_(first_step) {
  if (!settings.enabled) return;
  for (int i = 0; i < kNumStatsGroups; ++i) {
    stats_[i] = dynamic_cast<StatsCommunicator*>(GroupSlot(groups, i)->get());
    if (!stats_[i]) {  // not wrapped: off, so that Report stays collective on every rank
      stats_.fill(nullptr);
      return;
    }
  }
}

void CommStatsWindow::BeginStep(int64_t step) {
  if (!stats_[0] || step != first_step_ + settings_.warmup_steps) return;
  for (StatsCommunicator* s : stats_) s->Reset();
  start_step_ = step;
  start_ = std::chrono::steady_clock::now();
}

RankCommStats CommStatsWindow::Collect(int64_t step) const {
  RankCommStats r;
  if (!stats_[0] || start_step_ < 0) return r;
  r.steps = step - start_step_;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  for (int i = 0; i < kNumStatsGroups; ++i) r.groups[i] = stats_[i]->stats();
  return r;
}

absl::StatusOr<std::vector<RankCommStats>> CommStatsWindow::Gather(int64_t step) const {
  // Flattened as doubles: steps, seconds, then per group and op calls, bytes, seconds
  // (exact as doubles up to 2^53 bytes).
  constexpr int kPerRank = 2 + kNumStatsGroups * kNumCommOps * 3;
  const RankCommStats mine = Collect(step);
  std::vector<double> flat(kPerRank);
  flat[0] = static_cast<double>(mine.steps);
  flat[1] = mine.seconds;
  for (int g = 0; g < kNumStatsGroups; ++g)
    for (int o = 0; o < kNumCommOps; ++o) {
      const CommOpStats& x = mine.groups[g].ops[o];
      double* d = &flat[2 + (g * kNumCommOps + o) * 3];
      d[0] = static_cast<double>(x.calls);
      d[1] = static_cast<double>(x.bytes_sent);
      d[2] = x.seconds;
    }
  Communicator& world = *groups_->world;
  std::vector<double> all(static_cast<size_t>(kPerRank) * world.size());
  RETURN_IF_ERROR(world.AllGather(flat, all));
  std::vector<RankCommStats> out(world.size());
  for (int r = 0; r < world.size(); ++r) {
    const double* f = &all[static_cast<size_t>(r) * kPerRank];
    out[r].steps = static_cast<int64_t>(f[0]);
    out[r].seconds = f[1];
    for (int g = 0; g < kNumStatsGroups; ++g)
      for (int o = 0; o < kNumCommOps; ++o) {
        const double* d = &f[2 + (g * kNumCommOps + o) * 3];
        CommOpStats& x = out[r].groups[g].ops[o];
        x.calls = static_cast<int64_t>(d[0]);
        x.bytes_sent = static_cast<int64_t>(d[1]);
        x.seconds = d[2];
      }
  }
  return out;
}

absl::Status CommStatsWindow::Report(int64_t step) {
  if (!stats_[0]) return absl::OkStatus();
  const bool rank0 = groups_->world->rank() == 0;
  if (start_step_ < 0) {  // the same on every rank: no collective to skip
    if (rank0)
      std::printf(
          "[moetrain] comm_stats: none, the run ended within its %d warm-up steps "
          "(MOETRAIN_COMM_STATS_WARMUP)\n",
          settings_.warmup_steps);
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(std::vector<RankCommStats> all, Gather(step));
  if (rank0) {
    std::printf("[moetrain] comm_stats %s\n", CommStatsJson(all, settings_.warmup_steps).c_str());
    std::fflush(stdout);
  }
  return absl::OkStatus();
}

}  // namespace mt

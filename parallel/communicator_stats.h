// parallel/communicator_stats.h: what communication costs a training step. StatsCommunicator
// is a decorator that forwards every call to another Communicator and counts, per kind of
// operation, the calls, the bytes this rank sent and the wall time spent inside the call;
// CommStatsWindow turns those counters into the per-step figures of one training run
// (`MOETRAIN_COMM_STATS=1 moetrain train ...`, bench/parallel_bench.sh, docs/parallel.md).
//
// Bytes sent, per call on a group of p members, with S the bytes of the call's input:
//   Send, ISend       S
//   Recv, IRecv       0
//   AllToAllV,        the bytes of the blocks addressed to the other members
//   IAllToAllV        (both counted as all_to_all_v)
//   AllToAll          S (p - 1) / p  (the blocks for the other members)
//   AllGather         S (p - 1)      (this rank's block reaches p - 1 members)
//   ReduceScatter     S (p - 1) / p  (the blocks the other members reduce)
//   AllReduce         2 S (p - 1) / p, rounded down (a reduce-scatter then an all-gather)
//   Broadcast         S on the root, 0 elsewhere
//   Barrier           0
// These are the bytes a bandwidth-optimal algorithm sends from each rank (the convention of
// nccl-tests' "bus bandwidth"), not what the backend's chosen algorithm happens to send, so
// the figures compare across backends and group sizes. A group of one sends nothing.
//
// Time is wall-clock time inside the call, so it includes waiting for peers that arrive late
// (load imbalance, pipeline bubbles), not only transfer time. ISend/IRecv/IAllToAllV count the
// time of the call plus the time in Request::Wait (or in the request's destructor when never
// waited).
//
// Example:
//   StatsCommunicator dp(std::move(groups.dp));          // owning
//   RETURN_IF_ERROR(dp.AllReduce(grad, ReduceOp::kSum));  // forwarded, counted
//   int64_t sent = dp.stats().op(CommOp::kAllReduce).bytes_sent;
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "parallel/communicator.h"
#include "parallel/communicator_groups.h"

namespace mt {

enum class CommOp {
  kSend,
  kRecv,
  kISend,
  kIRecv,
  kAllReduce,
  kReduceScatter,
  kAllGather,
  kAllToAll,
  kAllToAllV,
  kBroadcast,
  kBarrier,
};
inline constexpr int kNumCommOps = 11;
const char* CommOpName(CommOp op);  // "send", "all_to_all_v", ...

struct CommOpStats {
  int64_t calls = 0;
  int64_t bytes_sent = 0;  // as defined at the top of this file
  double seconds = 0;      // wall time inside the calls (and Waits)
};

struct CommStats {
  std::array<CommOpStats, kNumCommOps> ops;
  const CommOpStats& op(CommOp o) const { return ops[static_cast<int>(o)]; }
  CommOpStats& op(CommOp o) { return ops[static_cast<int>(o)]; }
  CommOpStats Total() const;  // summed over the kinds of operation
};

class StatsCommunicator : public Communicator {
 public:
  explicit StatsCommunicator(std::unique_ptr<Communicator> inner);  // owns `inner`
  explicit StatsCommunicator(Communicator* inner);  // `inner` must outlive this object

  // The wrapped communicator's identity: errors and logs read as without the wrapper.
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string name() const override { return inner_->name(); }
  std::string backend() const override { return inner_->backend(); }

  Communicator& inner() { return *inner_; }
  CommStats stats() const;  // a copy, so it can be read while calls go on
  void Reset();             // zeroes every counter

 protected:
  absl::Status DoSend(InBuffer buf, int peer, int tag) override;
  absl::Status DoRecv(OutBuffer buf, int peer, int tag) override;
  absl::StatusOr<std::unique_ptr<Request>> DoISend(InBuffer buf, int peer, int tag) override;
  absl::StatusOr<std::unique_ptr<Request>> DoIRecv(OutBuffer buf, int peer, int tag) override;
  absl::Status DoAllReduce(OutBuffer inout, ReduceOp op) override;
  absl::Status DoReduceScatter(InBuffer in, OutBuffer out, ReduceOp op) override;
  absl::Status DoAllGather(InBuffer in, OutBuffer out) override;
  absl::Status DoAllToAll(InBuffer in, OutBuffer out) override;
  absl::Status DoAllToAllV(InBuffer in, const std::vector<int64_t>& send_counts,
                           const std::vector<int64_t>& send_displs, OutBuffer out,
                           const std::vector<int64_t>& recv_counts,
                           const std::vector<int64_t>& recv_displs) override;
  absl::StatusOr<std::unique_ptr<Request>> DoIAllToAllV(
      InBuffer in, const std::vector<int64_t>& send_counts, const std::vector<int64_t>& send_displs,
      OutBuffer out, const std::vector<int64_t>& recv_counts,
      const std::vector<int64_t>& recv_displs) override;
  absl::Status DoBroadcast(OutBuffer inout, int root) override;
  absl::Status DoBarrier() override;

 private:
  class TimedRequest;
  using Clock = std::chrono::steady_clock;
  // Adds one call (calls == 1) or only time (a Wait, calls == 0) to the counters of `op`.
  void Add(CommOp op, int calls, int64_t bytes, Clock::time_point start);

  std::unique_ptr<Communicator> owned_;  // null when not owning
  Communicator* inner_;
  // Callers are single-threaded (MPI runs FUNNELED); the lock only makes stats() safe to
  // call from another thread, such as a progress printer.
  mutable std::mutex mu_;
  CommStats stats_;
};

// MOETRAIN_COMM_STATS=1 turns the statistics on (unset, empty or 0: off);
// MOETRAIN_COMM_STATS_WARMUP=N leaves the first N steps of the run out (default 2: the first
// steps allocate buffers and fault pages in). Errors name the variable and its bad value.
struct CommStatsSettings {
  bool enabled = false;
  int warmup_steps = 2;
};
absl::StatusOr<CommStatsSettings> CommStatsSettingsFromEnv();

// Wraps each group of `groups` in an owning StatsCommunicator (CreateProcessGroups does this
// when CommOptions::collect_stats is set).
void WrapGroupsWithStats(ProcessGroups* groups);

// The groups in report order, with their names: world, pp, dp, ep, expert_dp.
inline constexpr int kNumStatsGroups = 5;
const char* StatsGroupName(int g);

// One rank's counters over a window of steps.
struct RankCommStats {
  int64_t steps = 0;
  double seconds = 0;  // wall time of the window on this rank
  std::array<CommStats, kNumStatsGroups> groups;
};

// The JSON object of the report, from every rank's stats in world-rank order: "ranks",
// "steps", "warmup_steps", "step_s" [rank], and for "total" and each group name
// "bytes_per_step", "comm_s_per_step" and "calls_per_step" [rank], each group also with
// "ops": {op name: {"calls_per_step", "bytes_per_step", "s_per_step"} [rank]} for the kinds
// any rank used.
std::string CommStatsJson(const std::vector<RankCommStats>& ranks, int warmup_steps);

// The statistics of one training run over its steps after the warm-up. The trainer calls
// BeginStep at the top of every step and Report once after the last; with statistics off
// (settings.enabled false, or groups not wrapped) both do nothing.
class CommStatsWindow {
 public:
  CommStatsWindow(ProcessGroups* groups, const CommStatsSettings& settings, int64_t first_step);
  // `step`: the steps done so far. When the warm-up ends, zeroes the counters and starts
  // the clock.
  void BeginStep(int64_t step);
  // Collective over groups->world (an AllGather of every rank's counters, made after they
  // were read): world rank 0 prints "[moetrain] comm_stats <CommStatsJson>" on stdout. A run
  // that ended within its warm-up prints a line saying so.
  absl::Status Report(int64_t step);

  // This rank's counters of the window so far.
  RankCommStats Collect(int64_t step) const;
  // Every rank's counters (collective over groups->world), in world-rank order.
  absl::StatusOr<std::vector<RankCommStats>> Gather(int64_t step) const;

 private:
  std::array<StatsCommunicator*, kNumStatsGroups> stats_{};  // all null when off
  ProcessGroups* groups_;
  CommStatsSettings settings_;
  int64_t first_step_;
  int64_t start_step_ = -1;  // the step the window began at; -1 before
  std::chrono::steady_clock::time_point start_;
};

}  // namespace mt

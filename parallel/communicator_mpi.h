// parallel/communicator_mpi.h: the MPI backend of Communicator, for CPU buffers (tests, CPU
// training, and the NCCL bootstrap, which needs MPI_Comm for broadcasting its unique id).
//
// Every MPI call is checked: the communicator carries MPI_ERRORS_RETURN, and a failure
// becomes a Status naming the world rank, the group and the call. Every blocking call runs
// under the shared CommWatchdog. Counts travel as MPI's int; a buffer above 2^31 - 1
// elements is an error rather than a silent truncation.
#pragma once

#include <mpi.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"
#include "parallel/communicator_watchdog.h"

namespace mt {

class MpiCommunicator : public Communicator {
 public:
  // Takes ownership of `comm` (freed on destruction unless MPI is finalised by then).
  // `group` names it in messages ("dp"); `watchdog` may be null (no deadline).
  static absl::StatusOr<std::unique_ptr<MpiCommunicator>> Create(
      MPI_Comm comm, std::string group, std::shared_ptr<CommWatchdog> watchdog);
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "mpi:" + group_; }
  std::string backend() const override { return "mpi"; }
  MPI_Comm comm() const { return comm_; }

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
  MpiCommunicator(MPI_Comm comm, std::string group, std::shared_ptr<CommWatchdog> watchdog)
      : comm_(comm), group_(std::move(group)), watchdog_(std::move(watchdog)) {}

  friend class MpiRequest;
  // OK, or "rank W (mpi:G, group rank r of n): <call> failed: <MPI's message>".
  absl::Status Check(int rc, const char* call) const;
  // Starts the watchdog's clock for `call` on this group.
  CommWatchdog::Scope Watch(const char* call) const;
  // An element count as MPI's int, or an error naming the call.
  absl::StatusOr<int> Count(int64_t n, const char* call) const;
  absl::Status CheckTag(int tag, const char* call) const;

  MPI_Comm comm_;
  std::string group_;
  std::shared_ptr<CommWatchdog> watchdog_;
  int rank_ = 0, size_ = 1, world_rank_ = 0, tag_ub_ = 32767;
};

}  // namespace mt

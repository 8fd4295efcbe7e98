// parallel/communicator_nccl.h: the Communicator interface over NCCL, for device buffers.
//
// Every buffer passed to a NcclCommunicator is device memory on the rank's current GPU
// (kernels/cuda/runtime.h SelectDevice). Two streams (runtime.h Streams): NCCL runs on the
// comm stream; the compute stream's kernels write what is sent and read what is received.
// Events order them on the device: an operation starts once everything enqueued on compute
// before the call is done, and compute's work enqueued after the wait waits for the
// operation. The blocking calls wait on the host before they return, the interface's
// contract ("blocks until the local buffers may be reused"); IAllToAllV returns at once and
// waits in its Request's Wait, so in between the host enqueues compute (the MoE's shared
// expert, trainer/device_moe_ep.cc) that runs while the exchange moves.
// All-to-all-v is a group of ncclSend/ncclRecv pairs.
// Send/Recv match by call order per peer: NCCL has no tags, so `tag` is only checked.
// ISend and IRecv are held back and launched with the next blocking Send, Recv or Wait as
// one NCCL group (parallel/p2p_group.h): an NCCL send waits for its receive, so a lone one
// could wait on a peer that waits on us. A collective while any are held is an error.
// ValidateGroupedRendezvous (pipeline_schedule.h) proves a schedule's lists safe under this.
//
// Setup is collective over a bootstrap communicator of the same members (an MPI group):
// rank 0 makes the NCCL unique id and broadcasts its 128 bytes over it.
//
// Failures (reliability.md §5.5): every wait polls the stream and ncclCommGetAsyncError
// (parallel/completion_poll.h), so a peer's failure that NCCL reports ends the call with
// NCCL's message and aborts the communicator (ncclCommAbort; every later call returns the
// same error) instead of hanging; a call that never finishes with nothing reported is
// ended by the run's CommWatchdog, as the MPI groups' calls are, initialisation and each
// launch included (NCCL connects to a peer inside the first launch that needs it).
//
// Example:
//   ASSIGN_OR_RETURN(auto ep, NcclCommunicator::Create(*groups.ep, streams.compute(),
//                                                      streams.comm(), "ep"));
//   RETURN_IF_ERROR(ep->AllToAllV(send, send_counts, send_displs, recv, recv_counts,
//                                 recv_displs));  // device buffers
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cuda/runtime.h"
#include "parallel/communicator.h"
#include "parallel/communicator_watchdog.h"
#include "parallel/p2p_group.h"

namespace mt {

// NCCL's element type for `dtype`: reductions need the real type (F32, F64, I32, I64, and
// BF16/F16 which NCCL reduces too); data movement of any dtype goes as bytes (ncclUint8,
// count * element size), so FP8 codes and I16/U16 move as well.
struct NcclElements {
  ncclDataType_t type;
  int64_t multiplier;  // NCCL elements per dtype element
};
absl::StatusOr<NcclElements> NcclTypeForReduce(DType dtype);
NcclElements NcclTypeForMove(DType dtype);
ncclRedOp_t NcclOp(ReduceOp op);

class NcclCommunicator : public GroupingCommunicator {
 public:
  // Collective over `bootstrap`; the current CUDA device is used. NCCL runs on `comm`,
  // ordered against `compute` as above (the same stream twice: no events). FailedPrecondition
  // when no device is visible, Internal with NCCL's message when initialisation fails.
  // `watchdog` may be null (no deadline).
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(
      Communicator& bootstrap, cudaStream_t compute, cudaStream_t comm, std::string group,
      std::shared_ptr<CommWatchdog> watchdog = nullptr);
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "nccl:" + group_; }
  std::string backend() const override { return "nccl"; }
  cudaStream_t stream() const { return stream_; }  // NCCL's (the comm stream)

 protected:
  // One group of sends and receives, all at once, waited for.
  absl::Status LaunchGroup(const std::vector<P2pOp>& group) override;
  absl::Status DoAllReduce(OutBuffer inout, ReduceOp op) override;
  absl::Status DoReduceScatter(InBuffer in, OutBuffer out, ReduceOp op) override;
  absl::Status DoAllGather(InBuffer in, OutBuffer out) override;
  absl::Status DoAllToAll(InBuffer in, OutBuffer out) override;
  absl::Status DoAllToAllV(InBuffer in, const std::vector<int64_t>& send_counts,
                           const std::vector<int64_t>& send_displs, OutBuffer out,
                           const std::vector<int64_t>& recv_counts,
                           const std::vector<int64_t>& recv_displs) override;
  // On the comm stream, returning at once; the Request waits as Finish does.
  absl::StatusOr<std::unique_ptr<Request>> DoIAllToAllV(
      InBuffer in, const std::vector<int64_t>& send_counts, const std::vector<int64_t>& send_displs,
      OutBuffer out, const std::vector<int64_t>& recv_counts,
      const std::vector<int64_t>& recv_displs) override;
  absl::Status DoBroadcast(OutBuffer inout, int root) override;
  absl::Status DoBarrier() override;

 private:
  class Pending;
  NcclCommunicator(ncclComm_t comm, cudaStream_t compute, cudaStream_t stream, int rank, int size,
                   std::string group, int* barrier_word, std::shared_ptr<CommWatchdog> watchdog);
  // Turns an NCCL result into a Status naming this communicator, the op and NCCL's message;
  // once aborted, the abort's error whatever the result.
  absl::Status Check(ncclResult_t result, const char* op) const;
  // The comm stream waits (on the device) for the compute stream's work so far: what the
  // next operation sends has been written.
  void AfterCompute();
  // Launches the all-to-all-v's group on the comm stream.
  absl::Status LaunchAllToAllV(InBuffer in, const std::vector<int64_t>& send_counts,
                               const std::vector<int64_t>& send_displs, OutBuffer out,
                               const std::vector<int64_t>& recv_counts,
                               const std::vector<int64_t>& recv_displs);
  // Times `op` under the run's watchdog. Launches are timed too: NCCL connects to a peer
  // inside the first operation that needs it, which blocks until the peer takes part.
  CommWatchdog::Scope Watch(const char* op) const;
  // Waits on the host until `done` (recorded on the comm stream after an operation) has
  // completed, polling NCCL's asynchronous error meanwhile (on one, aborts the
  // communicator); then the compute stream's later work waits for it too.
  absl::Status WaitFor(const cuda::Event& done, const char* op);
  // WaitFor the operation just launched: the interface's blocking calls return with their
  // buffers reusable.
  absl::Status Finish(const char* op);

  ncclComm_t comm_;
  cudaStream_t compute_;  // whose kernels write what is sent and read what is received
  cudaStream_t stream_;   // NCCL's
  int rank_, size_;
  std::string group_;
  int* barrier_word_;  // one device int for Barrier's all-reduce
  std::shared_ptr<CommWatchdog> watchdog_;  // may be null
  absl::Status aborted_;                    // set when NCCL reported a failure
  cuda::Event compute_ready_;               // recorded on compute_, waited for by stream_
  cuda::Event done_;                        // a blocking operation's end on stream_
};

}  // namespace mt

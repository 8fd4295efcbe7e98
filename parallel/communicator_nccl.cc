// parallel/communicator_nccl.cc: NCCL calls behind the Communicator interface.
#include "parallel/communicator_nccl.h"

#include <cstring>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/runtime.h"
#include "kernels/status.h"
#include "parallel/completion_poll.h"

namespace mt {

absl::StatusOr<NcclElements> NcclTypeForReduce(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return NcclElements{ncclFloat32, 1};
    case DType::kF64:
      return NcclElements{ncclFloat64, 1};
    case DType::kBF16:
      return NcclElements{ncclBfloat16, 1};
    case DType::kF16:
      return NcclElements{ncclFloat16, 1};
    case DType::kI32:
      return NcclElements{ncclInt32, 1};
    case DType::kI64:
      return NcclElements{ncclInt64, 1};
    default:
      return absl::InvalidArgumentError(absl::StrCat("NCCL cannot reduce ", DTypeName(dtype)));
  }
}

NcclElements NcclTypeForMove(DType dtype) {
  return NcclElements{ncclUint8, static_cast<int64_t>(DTypeSize(dtype))};
}

ncclRedOp_t NcclOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kMax:
      return ncclMax;
    case ReduceOp::kMin:
      return ncclMin;
  }
  return ncclSum;
}

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(
    Communicator& bootstrap, cudaStream_t compute, cudaStream_t comm, std::string group,
    std::shared_ptr<CommWatchdog> watchdog) {
  if (cuda::DeviceCount() == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("nccl:", group, ": no CUDA device is visible on rank ", bootstrap.rank()));
  }
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  if (bootstrap.rank() == 0) {
    const ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess) {
      return absl::InternalError(absl::StrCat("ncclGetUniqueId: ", ncclGetErrorString(r)));
    }
  }
  RETURN_IF_ERROR(bootstrap.Broadcast(OutBuffer(&id, sizeof(id), DType::kU8), 0));
  ncclComm_t nccl = nullptr;
  ncclResult_t r;
  {  // blocks until every member joins: a rank that never does is the watchdog's
    CommWatchdog::Scope watch =
        watchdog == nullptr
            ? CommWatchdog::Scope()
            : watchdog->Watch(absl::StrCat("ncclCommInitRank of nccl:", group, " (group rank ",
                                           bootstrap.rank(), " of ", bootstrap.size(), ")"));
    r = ncclCommInitRank(&nccl, bootstrap.size(), id, bootstrap.rank());
  }
  if (r != ncclSuccess) {
    return absl::InternalError(absl::StrCat("nccl:", group, " rank ", bootstrap.rank(),
                                            ": ncclCommInitRank: ", ncclGetErrorString(r)));
  }
  int* word = nullptr;
  CUDA_CHECK(cudaMalloc(&word, sizeof(int)));
  return std::unique_ptr<NcclCommunicator>(
      new NcclCommunicator(nccl, compute, comm, bootstrap.rank(), bootstrap.size(),
                           std::move(group), word, std::move(watchdog)));
}

NcclCommunicator::NcclCommunicator(ncclComm_t comm, cudaStream_t compute, cudaStream_t stream,
                                   int rank, int size, std::string group, int* barrier_word,
                                   std::shared_ptr<CommWatchdog> watchdog)
    : comm_(comm),
      compute_(compute),
      stream_(stream),
      rank_(rank),
      size_(size),
      group_(std::move(group)),
      barrier_word_(barrier_word),
      watchdog_(std::move(watchdog)) {}

NcclCommunicator::~NcclCommunicator() {
  FlushHeld();  // while comm_ lives: no peer is left waiting for what we held
  if (comm_ != nullptr) ncclCommDestroy(comm_);
  if (barrier_word_ != nullptr) cudaFree(barrier_word_);
}

absl::Status NcclCommunicator::Check(ncclResult_t result, const char* op) const {
  if (!aborted_.ok()) return aborted_;
  if (result == ncclSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(name(), " rank ", rank_, ": ", op, ": ",
                                          ncclGetErrorString(result), " (", ncclGetLastError(comm_),
                                          ")"));
}

void NcclCommunicator::AfterCompute() {
  if (compute_ == stream_) return;
  compute_ready_.Record(compute_);
  compute_ready_.BlockStream(stream_);
}

absl::Status NcclCommunicator::Finish(const char* op) {
  done_.Record(stream_);
  return WaitFor(done_, op);
}

CommWatchdog::Scope NcclCommunicator::Watch(const char* op) const {
  if (watchdog_ == nullptr) return CommWatchdog::Scope();
  return watchdog_->Watch(
      absl::StrCat("NCCL ", op, " on ", name(), " (group rank ", rank_, " of ", size_, ")"));
}

absl::Status NcclCommunicator::WaitFor(const cuda::Event& done, const char* op) {
  CommWatchdog::Scope watch = Watch(op);
  auto finished = [&]() -> absl::StatusOr<bool> {
    const cudaError_t err = cudaEventQuery(done.get());
    if (err == cudaSuccess) return true;
    if (err == cudaErrorNotReady) {
      // The runtime keeps "not ready" as this thread's last error: left there, the next
      // kernel launch's CUDA_CHECK_LAUNCH (cudaGetLastError) would fail on it.
      if (cudaPeekAtLastError() == cudaErrorNotReady) (void)cudaGetLastError();
      return false;
    }
    return absl::InternalError(
        absl::StrCat(name(), " rank ", rank_, ": ", op, ": ", cudaGetErrorString(err)));
  };
  auto async_error = [&]() -> absl::Status {
    ncclResult_t async = ncclSuccess;
    RETURN_IF_ERROR(Check(ncclCommGetAsyncError(comm_, &async), "ncclCommGetAsyncError"));
    if (async == ncclSuccess || async == ncclInProgress) return absl::OkStatus();
    const absl::Status failed = Check(async, op);
    ncclCommAbort(comm_);  // frees what the failed operation holds; the stream can finish
    comm_ = nullptr;
    aborted_ = absl::UnavailableError(absl::StrCat(
        failed.message(), "; the communicator was aborted (a peer failed or was aborted)"));
    return aborted_;
  };
  RETURN_IF_ERROR(PollUntilDone(finished, async_error));
  // Done already; in stream order too, so that compute's later kernels never depend on the
  // host having waited.
  if (compute_ != stream_) done.BlockStream(compute_);
  return absl::OkStatus();
}

absl::Status NcclCommunicator::LaunchGroup(const std::vector<P2pOp>& group) {
  CommWatchdog::Scope watch = Watch("p2p group");
  // Check reports an abort whatever NCCL returns: refused here, before a group is opened
  // that nothing would close.
  if (!aborted_.ok()) return aborted_;
  AfterCompute();
  RETURN_IF_ERROR(Check(ncclGroupStart(), "p2p group start"));
  for (const P2pOp& op : group) {
    const ncclResult_t r = op.send
                               ? ncclSend(op.data, op.bytes, ncclUint8, op.peer, comm_, stream_)
                               : ncclRecv(op.data, op.bytes, ncclUint8, op.peer, comm_, stream_);
    if (r != ncclSuccess) {
      ncclGroupEnd();
      return Check(r, op.send ? "Send" : "Recv");
    }
  }
  RETURN_IF_ERROR(Check(ncclGroupEnd(), "p2p group"));
  return Finish("p2p group");
}

absl::Status NcclCommunicator::DoAllReduce(OutBuffer inout, ReduceOp op) {
  CommWatchdog::Scope watch = Watch("AllReduce");
  AfterCompute();
  ASSIGN_OR_RETURN(const NcclElements e, NcclTypeForReduce(inout.dtype));
  RETURN_IF_ERROR(
      Check(ncclAllReduce(inout.data, inout.data, inout.count, e.type, NcclOp(op), comm_, stream_),
            "AllReduce"));
  return Finish("AllReduce");
}

absl::Status NcclCommunicator::DoReduceScatter(InBuffer in, OutBuffer out, ReduceOp op) {
  CommWatchdog::Scope watch = Watch("ReduceScatter");
  AfterCompute();
  ASSIGN_OR_RETURN(const NcclElements e, NcclTypeForReduce(in.dtype));
  RETURN_IF_ERROR(
      Check(ncclReduceScatter(in.data, out.data, out.count, e.type, NcclOp(op), comm_, stream_),
            "ReduceScatter"));
  return Finish("ReduceScatter");
}

absl::Status NcclCommunicator::DoAllGather(InBuffer in, OutBuffer out) {
  CommWatchdog::Scope watch = Watch("AllGather");
  AfterCompute();
  const NcclElements e = NcclTypeForMove(in.dtype);
  RETURN_IF_ERROR(
      Check(ncclAllGather(in.data, out.data, in.count * e.multiplier, e.type, comm_, stream_),
            "AllGather"));
  return Finish("AllGather");
}

absl::Status NcclCommunicator::DoAllToAll(InBuffer in, OutBuffer out) {
  const int64_t n = in.count / size_;
  const std::vector<int64_t> counts(size_, n);
  std::vector<int64_t> displs(size_);
  for (int r = 0; r < size_; ++r) displs[r] = r * n;
  return DoAllToAllV(in, counts, displs, out, counts, displs);
}

absl::Status NcclCommunicator::LaunchAllToAllV(InBuffer in, const std::vector<int64_t>& send_counts,
                                               const std::vector<int64_t>& send_displs,
                                               OutBuffer out,
                                               const std::vector<int64_t>& recv_counts,
                                               const std::vector<int64_t>& recv_displs) {
  CommWatchdog::Scope watch = Watch("AllToAllV");
  AfterCompute();
  const NcclElements e = NcclTypeForMove(in.dtype);
  const int64_t bytes = e.multiplier;  // per dtype element, moved as ncclUint8
  const char* src = static_cast<const char*>(in.data);
  char* dst = static_cast<char*>(out.data);
  // One group: NCCL schedules every pair at once, so no ordering of peers can deadlock.
  if (!aborted_.ok()) return aborted_;  // as in LaunchGroup
  RETURN_IF_ERROR(Check(ncclGroupStart(), "AllToAllV group start"));
  for (int r = 0; r < size_; ++r) {
    if (send_counts[r] > 0) {
      const ncclResult_t s = ncclSend(src + send_displs[r] * bytes, send_counts[r] * bytes,
                                      ncclUint8, r, comm_, stream_);
      if (s != ncclSuccess) {
        ncclGroupEnd();
        return Check(s, "AllToAllV send");
      }
    }
    if (recv_counts[r] > 0) {
      const ncclResult_t s = ncclRecv(dst + recv_displs[r] * bytes, recv_counts[r] * bytes,
                                      ncclUint8, r, comm_, stream_);
      if (s != ncclSuccess) {
        ncclGroupEnd();
        return Check(s, "AllToAllV recv");
      }
    }
  }
  return Check(ncclGroupEnd(), "AllToAllV");
}

absl::Status NcclCommunicator::DoAllToAllV(InBuffer in, const std::vector<int64_t>& send_counts,
                                           const std::vector<int64_t>& send_displs, OutBuffer out,
                                           const std::vector<int64_t>& recv_counts,
                                           const std::vector<int64_t>& recv_displs) {
  RETURN_IF_ERROR(LaunchAllToAllV(in, send_counts, send_displs, out, recv_counts, recv_displs));
  return Finish("AllToAllV");
}

// A started all-to-all-v: its own end event, waited for as a blocking call's. It must not
// outlive its communicator. It stays under the watchdog from its launch to the end of its
// Wait: a peer that died leaves NCCL's kernel spinning, and any host call that waits for
// the whole device meanwhile (cudaFree, which the allocator's out-of-memory retry makes)
// would otherwise hang with no deadline.
class NcclCommunicator::Pending : public Request {
 public:
  Pending(NcclCommunicator* comm, CommWatchdog::Scope in_flight)
      : comm_(comm), in_flight_(std::move(in_flight)) {
    done_.Record(comm->stream_);
  }
  ~Pending() override { Wait().IgnoreError(); }  // never leave NCCL writing freed memory
  absl::Status Wait() override {
    if (waited_) return status_;
    waited_ = true;
    status_ = comm_->WaitFor(done_, "IAllToAllV");
    in_flight_.reset();
    return status_;
  }

 private:
  NcclCommunicator* comm_;
  std::optional<CommWatchdog::Scope> in_flight_;
  cuda::Event done_;
  bool waited_ = false;
  absl::Status status_;
};

absl::StatusOr<std::unique_ptr<Request>> NcclCommunicator::DoIAllToAllV(
    InBuffer in, const std::vector<int64_t>& send_counts, const std::vector<int64_t>& send_displs,
    OutBuffer out, const std::vector<int64_t>& recv_counts,
    const std::vector<int64_t>& recv_displs) {
  CommWatchdog::Scope in_flight = Watch("IAllToAllV");
  RETURN_IF_ERROR(LaunchAllToAllV(in, send_counts, send_displs, out, recv_counts, recv_displs));
  return std::unique_ptr<Request>(new Pending(this, std::move(in_flight)));
}

absl::Status NcclCommunicator::DoBroadcast(OutBuffer inout, int root) {
  CommWatchdog::Scope watch = Watch("Broadcast");
  AfterCompute();
  const NcclElements e = NcclTypeForMove(inout.dtype);
  RETURN_IF_ERROR(Check(ncclBroadcast(inout.data, inout.data, inout.count * e.multiplier, e.type,
                                      root, comm_, stream_),
                        "Broadcast"));
  return Finish("Broadcast");
}

absl::Status NcclCommunicator::DoBarrier() {
  CommWatchdog::Scope watch = Watch("Barrier");
  AfterCompute();
  RETURN_IF_ERROR(
      Check(ncclAllReduce(barrier_word_, barrier_word_, 1, ncclInt32, ncclSum, comm_, stream_),
            "Barrier"));
  return Finish("Barrier");
}

}  // namespace mt

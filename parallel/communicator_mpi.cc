// parallel/communicator_mpi.cc: Communicator over MPI (see communicator_mpi.h).
#include "parallel/communicator_mpi.h"

#include <climits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/status.h"

namespace mt {
namespace {

// Movement only needs the element size; reductions need the arithmetic type.
MPI_Datatype MpiType(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return MPI_FLOAT;
    case DType::kF64:
      return MPI_DOUBLE;
    case DType::kI32:
      return MPI_INT32_T;
    case DType::kI64:
      return MPI_INT64_T;
    case DType::kI8:
      return MPI_INT8_T;
    case DType::kI16:
      return MPI_INT16_T;
    case DType::kBF16:
    case DType::kF16:
    case DType::kU16:
      return MPI_UINT16_T;
    case DType::kF8E4M3:
    case DType::kF8E5M2:
    case DType::kU8:
      return MPI_UINT8_T;
  }
  return MPI_BYTE;
}

MPI_Op MpiOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return MPI_SUM;
    case ReduceOp::kMax:
      return MPI_MAX;
    case ReduceOp::kMin:
      return MPI_MIN;
  }
  return MPI_SUM;
}

bool MpiFinalized() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  return finalized != 0;
}

}  // namespace

// A pending ISend, IRecv or IAllToAllV. It must not outlive its communicator.
class MpiRequest : public Request {
 public:
  MpiRequest(const MpiCommunicator* comm, MPI_Request request, MPI_Datatype type, int expected,
             const char* call, std::vector<int> args = {})
      : comm_(comm),
        request_(request),
        type_(type),
        expected_(expected),
        call_(call),
        args_(std::move(args)) {}
  ~MpiRequest() override {
    if (pending_ && !MpiFinalized()) MPI_Wait(&request_, MPI_STATUS_IGNORE);
  }

  absl::Status Wait() override {
    if (!pending_) return absl::OkStatus();
    pending_ = false;
    MPI_Status status;
    {
      CommWatchdog::Scope watch = comm_->Watch(call_);
      RETURN_IF_ERROR(comm_->Check(MPI_Wait(&request_, &status), call_));
    }
    if (expected_ < 0) return absl::OkStatus();  // a send
    int got = 0;
    RETURN_IF_ERROR(comm_->Check(MPI_Get_count(&status, type_, &got), "MPI_Get_count"));
    if (got != expected_)
      return comm_->BadArgument(call_, absl::StrCat("received ", got, " elements from peer ",
                                                    status.MPI_SOURCE, ", expected ", expected_));
    return absl::OkStatus();
  }

 private:
  const MpiCommunicator* comm_;
  MPI_Request request_;
  MPI_Datatype type_;
  int expected_;  // elements a receive must get; -1 for a send
  const char* call_;
  // A nonblocking collective's counts and displacements: MPI reads them until it completes.
  std::vector<int> args_;
  bool pending_ = true;
};

absl::StatusOr<std::unique_ptr<MpiCommunicator>> MpiCommunicator::Create(
    MPI_Comm comm, std::string group, std::shared_ptr<CommWatchdog> watchdog) {
  std::unique_ptr<MpiCommunicator> c(
      new MpiCommunicator(comm, std::move(group), std::move(watchdog)));
  RETURN_IF_ERROR(
      c->Check(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler"));
  RETURN_IF_ERROR(c->Check(MPI_Comm_rank(MPI_COMM_WORLD, &c->world_rank_), "MPI_Comm_rank"));
  RETURN_IF_ERROR(c->Check(MPI_Comm_rank(comm, &c->rank_), "MPI_Comm_rank"));
  RETURN_IF_ERROR(c->Check(MPI_Comm_size(comm, &c->size_), "MPI_Comm_size"));
  int* ub = nullptr;
  int found = 0;
  RETURN_IF_ERROR(c->Check(MPI_Comm_get_attr(comm, MPI_TAG_UB, &ub, &found), "MPI_Comm_get_attr"));
  if (found && ub != nullptr) c->tag_ub_ = *ub;
  return c;
}

MpiCommunicator::~MpiCommunicator() {
  if (comm_ != MPI_COMM_NULL && comm_ != MPI_COMM_WORLD && !MpiFinalized()) MPI_Comm_free(&comm_);
}

absl::Status MpiCommunicator::Check(int rc, const char* call) const {
  if (rc == MPI_SUCCESS) return absl::OkStatus();
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  return absl::InternalError(absl::StrCat("rank ", world_rank_, " (", name(), ", group rank ",
                                          rank_, " of ", size_, "): ", call,
                                          " failed: ", std::string(text, len), " (code ", rc, ")"));
}

CommWatchdog::Scope MpiCommunicator::Watch(const char* call) const {
  if (watchdog_ == nullptr) return CommWatchdog::Scope();
  return watchdog_->Watch(
      absl::StrCat(call, " on ", name(), " (group rank ", rank_, " of ", size_, ")"));
}

absl::StatusOr<int> MpiCommunicator::Count(int64_t n, const char* call) const {
  if (n > INT_MAX)
    return BadArgument(call, absl::StrCat(n, " elements exceed MPI's int count limit"));
  return static_cast<int>(n);
}

absl::Status MpiCommunicator::CheckTag(int tag, const char* call) const {
  if (tag > tag_ub_)
    return BadArgument(call, absl::StrCat("tag ", tag, " is above MPI_TAG_UB (", tag_ub_, ")"));
  return absl::OkStatus();
}

// ---- Point to point --------------------------------------------------------------------------

absl::Status MpiCommunicator::DoSend(InBuffer buf, int peer, int tag) {
  ASSIGN_OR_RETURN(std::unique_ptr<Request> r, DoISend(buf, peer, tag));
  return r->Wait();
}

absl::Status MpiCommunicator::DoRecv(OutBuffer buf, int peer, int tag) {
  ASSIGN_OR_RETURN(std::unique_ptr<Request> r, DoIRecv(buf, peer, tag));
  return r->Wait();
}

absl::StatusOr<std::unique_ptr<Request>> MpiCommunicator::DoISend(InBuffer buf, int peer, int tag) {
  RETURN_IF_ERROR(CheckTag(tag, "MPI_Isend"));
  ASSIGN_OR_RETURN(int n, Count(buf.count, "MPI_Isend"));
  MPI_Request req;
  RETURN_IF_ERROR(
      Check(MPI_Isend(buf.data, n, MpiType(buf.dtype), peer, tag, comm_, &req), "MPI_Isend"));
  return std::unique_ptr<Request>(new MpiRequest(this, req, MpiType(buf.dtype), -1, "MPI_Isend"));
}

absl::StatusOr<std::unique_ptr<Request>> MpiCommunicator::DoIRecv(OutBuffer buf, int peer,
                                                                  int tag) {
  RETURN_IF_ERROR(CheckTag(tag, "MPI_Irecv"));
  ASSIGN_OR_RETURN(int n, Count(buf.count, "MPI_Irecv"));
  MPI_Request req;
  RETURN_IF_ERROR(
      Check(MPI_Irecv(buf.data, n, MpiType(buf.dtype), peer, tag, comm_, &req), "MPI_Irecv"));
  return std::unique_ptr<Request>(new MpiRequest(this, req, MpiType(buf.dtype), n, "MPI_Irecv"));
}

// ---- Collectives --------------------------------------------------------------------------------

absl::Status MpiCommunicator::DoAllReduce(OutBuffer inout, ReduceOp op) {
  ASSIGN_OR_RETURN(int n, Count(inout.count, "MPI_Allreduce"));
  CommWatchdog::Scope watch = Watch("MPI_Allreduce");
  return Check(MPI_Allreduce(MPI_IN_PLACE, inout.data, n, MpiType(inout.dtype), MpiOp(op), comm_),
               "MPI_Allreduce");
}

absl::Status MpiCommunicator::DoReduceScatter(InBuffer in, OutBuffer out, ReduceOp op) {
  ASSIGN_OR_RETURN(int n, Count(out.count, "MPI_Reduce_scatter_block"));
  CommWatchdog::Scope watch = Watch("MPI_Reduce_scatter_block");
  return Check(MPI_Reduce_scatter_block(in.data, out.data, n, MpiType(in.dtype), MpiOp(op), comm_),
               "MPI_Reduce_scatter_block");
}

absl::Status MpiCommunicator::DoAllGather(InBuffer in, OutBuffer out) {
  ASSIGN_OR_RETURN(int n, Count(in.count, "MPI_Allgather"));
  RETURN_IF_ERROR(Count(out.count, "MPI_Allgather").status());
  const MPI_Datatype t = MpiType(in.dtype);
  CommWatchdog::Scope watch = Watch("MPI_Allgather");
  return Check(MPI_Allgather(in.data, n, t, out.data, n, t, comm_), "MPI_Allgather");
}

absl::Status MpiCommunicator::DoAllToAll(InBuffer in, OutBuffer out) {
  ASSIGN_OR_RETURN(int n, Count(in.count / size_, "MPI_Alltoall"));
  RETURN_IF_ERROR(Count(in.count, "MPI_Alltoall").status());
  const MPI_Datatype t = MpiType(in.dtype);
  CommWatchdog::Scope watch = Watch("MPI_Alltoall");
  return Check(MPI_Alltoall(in.data, n, t, out.data, n, t, comm_), "MPI_Alltoall");
}

absl::Status MpiCommunicator::DoAllToAllV(InBuffer in, const std::vector<int64_t>& send_counts,
                                          const std::vector<int64_t>& send_displs, OutBuffer out,
                                          const std::vector<int64_t>& recv_counts,
                                          const std::vector<int64_t>& recv_displs) {
  // Displacement + count <= buffer size was checked, so the buffer sizes bound everything.
  RETURN_IF_ERROR(Count(in.count, "MPI_Alltoallv").status());
  RETURN_IF_ERROR(Count(out.count, "MPI_Alltoallv").status());
  std::vector<int> sc(send_counts.begin(), send_counts.end());
  std::vector<int> sd(send_displs.begin(), send_displs.end());
  std::vector<int> rc(recv_counts.begin(), recv_counts.end());
  std::vector<int> rd(recv_displs.begin(), recv_displs.end());
  const MPI_Datatype t = MpiType(in.dtype);
  CommWatchdog::Scope watch = Watch("MPI_Alltoallv");
  return Check(
      MPI_Alltoallv(in.data, sc.data(), sd.data(), t, out.data, rc.data(), rd.data(), t, comm_),
      "MPI_Alltoallv");
}

absl::StatusOr<std::unique_ptr<Request>> MpiCommunicator::DoIAllToAllV(
    InBuffer in, const std::vector<int64_t>& send_counts, const std::vector<int64_t>& send_displs,
    OutBuffer out, const std::vector<int64_t>& recv_counts,
    const std::vector<int64_t>& recv_displs) {
  RETURN_IF_ERROR(Count(in.count, "MPI_Ialltoallv").status());
  RETURN_IF_ERROR(Count(out.count, "MPI_Ialltoallv").status());
  const size_t p = send_counts.size();
  std::vector<int> args;  // [4p]: send counts, send displs, receive counts, receive displs
  args.reserve(4 * p);
  for (const std::vector<int64_t>* v : {&send_counts, &send_displs, &recv_counts, &recv_displs})
    args.insert(args.end(), v->begin(), v->end());
  const MPI_Datatype t = MpiType(in.dtype);
  MPI_Request req;
  RETURN_IF_ERROR(Check(MPI_Ialltoallv(in.data, &args[0], &args[p], t, out.data, &args[2 * p],
                                       &args[3 * p], t, comm_, &req),
                        "MPI_Ialltoallv"));
  return std::unique_ptr<Request>(
      new MpiRequest(this, req, t, -1, "MPI_Ialltoallv", std::move(args)));
}

absl::Status MpiCommunicator::DoBroadcast(OutBuffer inout, int root) {
  ASSIGN_OR_RETURN(int n, Count(inout.count, "MPI_Bcast"));
  CommWatchdog::Scope watch = Watch("MPI_Bcast");
  return Check(MPI_Bcast(inout.data, n, MpiType(inout.dtype), root, comm_), "MPI_Bcast");
}

absl::Status MpiCommunicator::DoBarrier() {
  CommWatchdog::Scope watch = Watch("MPI_Barrier");
  return Check(MPI_Barrier(comm_), "MPI_Barrier");
}

}  // namespace mt

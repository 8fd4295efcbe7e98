// parallel/communicator.cc: argument checks shared by every backend, the Unimplemented
// defaults, and the single-process LocalCommunicator (see communicator.h).
#include "parallel/communicator.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/status.h"

namespace mt {

const char* ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kMax:
      return "max";
    case ReduceOp::kMin:
      return "min";
  }
  return "?";
}

absl::Status Communicator::Unsupported(const std::string& op) const {
  return absl::UnimplementedError(
      absl::StrCat(backend(), " does not support ", op, " (group ", name(), ")"));
}

absl::Status Communicator::BadArgument(const std::string& op, const std::string& what) const {
  return absl::InvalidArgumentError(
      absl::StrCat(name(), " rank ", rank(), " of ", size(), ": ", op, ": ", what));
}

absl::Status Communicator::CheckPeer(const char* op, int peer, int tag) const {
  if (peer < 0 || peer >= size())
    return BadArgument(op, absl::StrCat("peer ", peer, " is outside the group of ", size()));
  if (tag < 0) return BadArgument(op, absl::StrCat("tag ", tag, " is negative"));
  return absl::OkStatus();
}

absl::Status Communicator::CheckReducible(const char* op, DType dtype) const {
  if (dtype == DType::kF32 || dtype == DType::kF64 || dtype == DType::kI32 || dtype == DType::kI64)
    return absl::OkStatus();
  return BadArgument(op, absl::StrCat("cannot reduce ", DTypeName(dtype),
                                      " (reductions take F32, F64, I32 or I64)"));
}

namespace {

absl::Status SameDType(const Communicator& c, const char* op, DType in, DType out) {
  if (in == out) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(c.name(), " rank ", c.rank(), ": ", op,
                                                 ": input is ", DTypeName(in), " but output is ",
                                                 DTypeName(out)));
}

// Checks ragged counts/displacements against a buffer of `capacity` elements.
absl::Status CheckRagged(const Communicator& c, const char* op, const char* which,
                         const std::vector<int64_t>& counts, const std::vector<int64_t>& displs,
                         int64_t capacity) {
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(
        absl::StrCat(c.name(), " rank ", c.rank(), ": ", op, ": ", which, " ", what));
  };
  if (counts.size() != static_cast<size_t>(c.size()) ||
      displs.size() != static_cast<size_t>(c.size()))
    return bad(absl::StrCat("counts/displacements have ", counts.size(), "/", displs.size(),
                            " entries, expected the group size ", c.size()));
  for (int r = 0; r < c.size(); ++r)
    if (counts[r] < 0 || displs[r] < 0 || displs[r] + counts[r] > capacity)
      return bad(absl::StrCat("block ", r, " [", displs[r], ", +", counts[r],
                              ") does not fit the buffer of ", capacity, " elements"));
  return absl::OkStatus();
}

// An all-to-all-v's buffers, counts and displacements, for `op`.
absl::Status CheckAllToAllV(const Communicator& c, const char* op, InBuffer in,
                            const std::vector<int64_t>& send_counts,
                            const std::vector<int64_t>& send_displs, OutBuffer out,
                            const std::vector<int64_t>& recv_counts,
                            const std::vector<int64_t>& recv_displs) {
  RETURN_IF_ERROR(SameDType(c, op, in.dtype, out.dtype));
  RETURN_IF_ERROR(CheckRagged(c, op, "send", send_counts, send_displs, in.count));
  return CheckRagged(c, op, "receive", recv_counts, recv_displs, out.count);
}

}  // namespace

// ---- Checked entry points -----------------------------------------------------------------

absl::Status Communicator::Send(InBuffer buf, int peer, int tag) {
  RETURN_IF_ERROR(CheckPeer("Send", peer, tag));
  return DoSend(buf, peer, tag);
}

absl::Status Communicator::Recv(OutBuffer buf, int peer, int tag) {
  RETURN_IF_ERROR(CheckPeer("Recv", peer, tag));
  return DoRecv(buf, peer, tag);
}

absl::StatusOr<std::unique_ptr<Request>> Communicator::ISend(InBuffer buf, int peer, int tag) {
  RETURN_IF_ERROR(CheckPeer("ISend", peer, tag));
  return DoISend(buf, peer, tag);
}

absl::StatusOr<std::unique_ptr<Request>> Communicator::IRecv(OutBuffer buf, int peer, int tag) {
  RETURN_IF_ERROR(CheckPeer("IRecv", peer, tag));
  return DoIRecv(buf, peer, tag);
}

absl::Status Communicator::AllReduce(OutBuffer inout, ReduceOp op) {
  RETURN_IF_ERROR(BeforeCollective("AllReduce"));
  RETURN_IF_ERROR(CheckReducible("AllReduce", inout.dtype));
  return DoAllReduce(inout, op);
}

absl::Status Communicator::ReduceScatter(InBuffer in, OutBuffer out, ReduceOp op) {
  RETURN_IF_ERROR(BeforeCollective("ReduceScatter"));
  RETURN_IF_ERROR(CheckReducible("ReduceScatter", in.dtype));
  RETURN_IF_ERROR(SameDType(*this, "ReduceScatter", in.dtype, out.dtype));
  if (in.count != out.count * size())
    return BadArgument("ReduceScatter", absl::StrCat("input has ", in.count,
                                                     " elements, expected group size x output = ",
                                                     size(), " x ", out.count));
  return DoReduceScatter(in, out, op);
}

absl::Status Communicator::AllGather(InBuffer in, OutBuffer out) {
  RETURN_IF_ERROR(BeforeCollective("AllGather"));
  RETURN_IF_ERROR(SameDType(*this, "AllGather", in.dtype, out.dtype));
  if (out.count != in.count * size())
    return BadArgument("AllGather", absl::StrCat("output has ", out.count,
                                                 " elements, expected group size x input = ",
                                                 size(), " x ", in.count));
  return DoAllGather(in, out);
}

absl::Status Communicator::AllToAll(InBuffer in, OutBuffer out) {
  RETURN_IF_ERROR(BeforeCollective("AllToAll"));
  RETURN_IF_ERROR(SameDType(*this, "AllToAll", in.dtype, out.dtype));
  if (in.count != out.count || in.count % size() != 0)
    return BadArgument("AllToAll",
                       absl::StrCat("input and output have ", in.count, " and ", out.count,
                                    " elements, expected equal multiples "
                                    "of the group size ",
                                    size()));
  return DoAllToAll(in, out);
}

absl::Status Communicator::AllToAllV(InBuffer in, const std::vector<int64_t>& send_counts,
                                     const std::vector<int64_t>& send_displs, OutBuffer out,
                                     const std::vector<int64_t>& recv_counts,
                                     const std::vector<int64_t>& recv_displs) {
  RETURN_IF_ERROR(BeforeCollective("AllToAllV"));
  RETURN_IF_ERROR(CheckAllToAllV(*this, "AllToAllV", in, send_counts, send_displs, out, recv_counts,
                                 recv_displs));
  return DoAllToAllV(in, send_counts, send_displs, out, recv_counts, recv_displs);
}

absl::StatusOr<std::unique_ptr<Request>> Communicator::IAllToAllV(
    InBuffer in, const std::vector<int64_t>& send_counts, const std::vector<int64_t>& send_displs,
    OutBuffer out, const std::vector<int64_t>& recv_counts,
    const std::vector<int64_t>& recv_displs) {
  RETURN_IF_ERROR(BeforeCollective("IAllToAllV"));
  RETURN_IF_ERROR(CheckAllToAllV(*this, "IAllToAllV", in, send_counts, send_displs, out,
                                 recv_counts, recv_displs));
  return DoIAllToAllV(in, send_counts, send_displs, out, recv_counts, recv_displs);
}

absl::Status Communicator::Broadcast(OutBuffer inout, int root) {
  RETURN_IF_ERROR(BeforeCollective("Broadcast"));
  if (root < 0 || root >= size())
    return BadArgument("Broadcast", absl::StrCat("root ", root, " is outside the group"));
  return DoBroadcast(inout, root);
}

absl::Status Communicator::Barrier() {
  RETURN_IF_ERROR(BeforeCollective("Barrier"));
  return DoBarrier();
}

// ---- Defaults: the backend does not have the operation -------------------------------------

absl::Status Communicator::DoSend(InBuffer, int, int) { return Unsupported("Send"); }
absl::Status Communicator::DoRecv(OutBuffer, int, int) { return Unsupported("Recv"); }
absl::StatusOr<std::unique_ptr<Request>> Communicator::DoISend(InBuffer, int, int) {
  return Unsupported("ISend");
}
absl::StatusOr<std::unique_ptr<Request>> Communicator::DoIRecv(OutBuffer, int, int) {
  return Unsupported("IRecv");
}
absl::Status Communicator::DoAllReduce(OutBuffer, ReduceOp) { return Unsupported("AllReduce"); }
absl::Status Communicator::DoReduceScatter(InBuffer, OutBuffer, ReduceOp) {
  return Unsupported("ReduceScatter");
}
absl::Status Communicator::DoAllGather(InBuffer, OutBuffer) { return Unsupported("AllGather"); }
absl::Status Communicator::DoAllToAll(InBuffer, OutBuffer) { return Unsupported("AllToAll"); }
absl::Status Communicator::DoAllToAllV(InBuffer, const std::vector<int64_t>&,
                                       const std::vector<int64_t>&, OutBuffer,
                                       const std::vector<int64_t>&, const std::vector<int64_t>&) {
  return Unsupported("AllToAllV");
}

namespace {
// What a backend without an overlapping exchange returns: the work is done already.
class DoneRequest : public Request {
 public:
  absl::Status Wait() override { return absl::OkStatus(); }
};
}  // namespace

absl::StatusOr<std::unique_ptr<Request>> Communicator::DoIAllToAllV(
    InBuffer in, const std::vector<int64_t>& send_counts, const std::vector<int64_t>& send_displs,
    OutBuffer out, const std::vector<int64_t>& recv_counts,
    const std::vector<int64_t>& recv_displs) {
  RETURN_IF_ERROR(DoAllToAllV(in, send_counts, send_displs, out, recv_counts, recv_displs));
  return std::unique_ptr<Request>(new DoneRequest);
}
absl::Status Communicator::DoBroadcast(OutBuffer, int) { return Unsupported("Broadcast"); }
absl::Status Communicator::DoBarrier() { return Unsupported("Barrier"); }

// ---- LocalCommunicator ----------------------------------------------------------------------

namespace {
void CopyElements(const void* from, void* to, int64_t n, DType dtype) {
  if (n > 0 && from != to) std::memmove(to, from, static_cast<size_t>(n) * DTypeSize(dtype));
}
}  // namespace

absl::Status LocalCommunicator::DoAllReduce(OutBuffer, ReduceOp) { return absl::OkStatus(); }

absl::Status LocalCommunicator::DoReduceScatter(InBuffer in, OutBuffer out, ReduceOp) {
  CopyElements(in.data, out.data, out.count, out.dtype);
  return absl::OkStatus();
}

absl::Status LocalCommunicator::DoAllGather(InBuffer in, OutBuffer out) {
  CopyElements(in.data, out.data, in.count, in.dtype);
  return absl::OkStatus();
}

absl::Status LocalCommunicator::DoAllToAll(InBuffer in, OutBuffer out) {
  CopyElements(in.data, out.data, in.count, in.dtype);
  return absl::OkStatus();
}

absl::Status LocalCommunicator::DoAllToAllV(InBuffer in, const std::vector<int64_t>& send_counts,
                                            const std::vector<int64_t>& send_displs, OutBuffer out,
                                            const std::vector<int64_t>& recv_counts,
                                            const std::vector<int64_t>& recv_displs) {
  if (send_counts[0] != recv_counts[0])
    return BadArgument(
        "AllToAllV",
        absl::StrCat("sends ", send_counts[0], " elements to itself but expects ", recv_counts[0]));
  const size_t es = DTypeSize(in.dtype);
  CopyElements(static_cast<const char*>(in.data) + send_displs[0] * es,
               static_cast<char*>(out.data) + recv_displs[0] * es, send_counts[0], in.dtype);
  return absl::OkStatus();
}

absl::Status LocalCommunicator::DoBroadcast(OutBuffer, int) { return absl::OkStatus(); }
absl::Status LocalCommunicator::DoBarrier() { return absl::OkStatus(); }

}  // namespace mt

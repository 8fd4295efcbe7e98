// parallel/p2p_group.cc: GroupedP2p (p2p_group.h).
#include "parallel/p2p_group.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/status.h"

namespace mt {

P2pOp P2pSend(InBuffer buf, int peer, int tag) {
  return {true, const_cast<void*>(buf.data), buf.count * static_cast<int64_t>(DTypeSize(buf.dtype)),
          peer, tag};
}
P2pOp P2pRecv(OutBuffer buf, int peer, int tag) {
  return {false, buf.data, buf.count * static_cast<int64_t>(DTypeSize(buf.dtype)), peer, tag};
}

// A posted operation's Request: its Wait launches the held group when the operation is still
// in it, then reports how that group went.
class GroupedP2p::Ticket : public Request {
 public:
  Ticket(GroupedP2p* owner, uint64_t ticket) : owner_(owner), ticket_(ticket) {}
  ~Ticket() override { Wait().IgnoreError(); }  // never leave a peer waiting on us

  absl::Status Wait() override {
    if (owner_ == nullptr) return absl::OkStatus();
    GroupedP2p* owner = owner_;
    owner_ = nullptr;
    if (ticket_ >= owner->launched_upto_) owner->Flush().IgnoreError();  // in StatusOf too
    return owner->StatusOf(ticket_);
  }

 private:
  GroupedP2p* owner_;
  uint64_t ticket_;
};

GroupedP2p::GroupedP2p(Launch launch, std::function<std::string()> name)
    : launch_(std::move(launch)), name_(std::move(name)) {}

GroupedP2p::~GroupedP2p() { Flush().IgnoreError(); }

std::unique_ptr<Request> GroupedP2p::Post(const P2pOp& op) {
  held_.push_back(op);
  return std::make_unique<Ticket>(this, next_ticket_++);
}

absl::Status GroupedP2p::Run(const P2pOp& op) {
  held_.push_back(op);
  const uint64_t ticket = next_ticket_++;
  RETURN_IF_ERROR(Flush());
  return StatusOf(ticket);
}

absl::Status GroupedP2p::Flush() {
  if (held_.empty()) return absl::OkStatus();
  std::vector<P2pOp> group = std::move(held_);
  held_.clear();
  const uint64_t first = launched_upto_;
  launched_upto_ = next_ticket_;
  if (!error_.ok()) return error_;  // nothing more goes out after a failed group
  const absl::Status s = launch_(group);
  if (!s.ok()) {
    failed_from_ = first;
    error_ = absl::Status(s.code(), absl::StrCat(name_(), ": a group of ", group.size(),
                                                 " point-to-point operations: ", s.message()));
  }
  return error_;
}

absl::Status GroupedP2p::StatusOf(uint64_t ticket) const {
  return ticket >= failed_from_ ? error_ : absl::OkStatus();
}

absl::Status GroupedP2p::CheckIdle(const char* op) const {
  if (held_.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat(name_(), ": ", op, " with ", held_.size(),
                   " point-to-point operations still held: Wait their requests first (a collective "
                   "launched behind them could wait for receives the peers post only after it)"));
}

GroupingCommunicator::GroupingCommunicator()
    : p2p_([this](const std::vector<P2pOp>& g) { return LaunchGroup(g); },
           [this] { return absl::StrCat(name(), " rank ", rank()); }) {}

absl::Status GroupingCommunicator::DoSend(InBuffer b, int peer, int tag) {
  return p2p_.Run(P2pSend(b, peer, tag));
}
absl::Status GroupingCommunicator::DoRecv(OutBuffer b, int peer, int tag) {
  return p2p_.Run(P2pRecv(b, peer, tag));
}
absl::StatusOr<std::unique_ptr<Request>> GroupingCommunicator::DoISend(InBuffer b, int peer,
                                                                       int tag) {
  return p2p_.Post(P2pSend(b, peer, tag));
}
absl::StatusOr<std::unique_ptr<Request>> GroupingCommunicator::DoIRecv(OutBuffer b, int peer,
                                                                       int tag) {
  return p2p_.Post(P2pRecv(b, peer, tag));
}

absl::Status GroupedP2pCommunicator::LaunchGroup(const std::vector<P2pOp>& group) {
  std::vector<std::unique_ptr<Request>> pending;
  for (const P2pOp& op : group) {
    absl::StatusOr<std::unique_ptr<Request>> r =
        op.send ? inner_->ISend(InBuffer(op.data, op.bytes, DType::kU8), op.peer, 0)
                : inner_->IRecv(OutBuffer(op.data, op.bytes, DType::kU8), op.peer, 0);
    if (!r.ok()) return r.status();  // the ones posted are waited for by their destructors
    pending.push_back(*std::move(r));
  }
  for (auto& r : pending) RETURN_IF_ERROR(r->Wait());
  return absl::OkStatus();
}

absl::Status GroupedP2pCommunicator::DoAllReduce(OutBuffer inout, ReduceOp op) {
  return inner_->AllReduce(inout, op);
}
absl::Status GroupedP2pCommunicator::DoReduceScatter(InBuffer in, OutBuffer out, ReduceOp op) {
  return inner_->ReduceScatter(in, out, op);
}
absl::Status GroupedP2pCommunicator::DoAllGather(InBuffer in, OutBuffer out) {
  return inner_->AllGather(in, out);
}
absl::Status GroupedP2pCommunicator::DoAllToAll(InBuffer in, OutBuffer out) {
  return inner_->AllToAll(in, out);
}
absl::Status GroupedP2pCommunicator::DoAllToAllV(InBuffer in,
                                                 const std::vector<int64_t>& send_counts,
                                                 const std::vector<int64_t>& send_displs,
                                                 OutBuffer out,
                                                 const std::vector<int64_t>& recv_counts,
                                                 const std::vector<int64_t>& recv_displs) {
  return inner_->AllToAllV(in, send_counts, send_displs, out, recv_counts, recv_displs);
}

absl::StatusOr<std::unique_ptr<Request>> GroupedP2pCommunicator::DoIAllToAllV(
    InBuffer in, const std::vector<int64_t>& send_counts, const std::vector<int64_t>& send_displs,
    OutBuffer out, const std::vector<int64_t>& recv_counts,
    const std::vector<int64_t>& recv_displs) {
  return inner_->IAllToAllV(in, send_counts, send_displs, out, recv_counts, recv_displs);
}
absl::Status GroupedP2pCommunicator::DoBroadcast(OutBuffer inout, int root) {
  return inner_->Broadcast(inout, root);
}
absl::Status GroupedP2pCommunicator::DoBarrier() { return inner_->Barrier(); }

}  // namespace mt

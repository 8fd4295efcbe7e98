// parallel/p2p_group.h: point-to-point operations held back until this rank's next blocking
// call and then launched together as one group, for a transport whose sends complete only
// when received and whose messages carry no tag (NCCL: NcclCommunicator's ISend and IRecv).
//
// Why: the pipeline runners post a send and go on (parallel/pipeline_schedule.h); over MPI the
// send is buffered. An NCCL send holds the stream until the peer's receive runs, so a send
// launched alone can wait for a receive the peer reaches only after something from us. Held
// back and launched with this rank's next receive in one ncclGroupStart/End, both progress at
// once: 1F1B's steady state becomes Megatron's batched send_forward_recv_backward.
// ValidateGroupedRendezvous (pipeline_schedule.h) proves a schedule deadlock-free under
// exactly these rules: a blocking call launches everything held with itself and waits for
// all of it; a Request's Wait launches what is held if its own operation is among it.
//
// Example (a backend: GroupingCommunicator below does the rest):
//   absl::Status LaunchGroup(const std::vector<P2pOp>& g) override {
//     ncclGroupStart(); for (op : g) ncclSend or ncclRecv; ncclGroupEnd(); wait for the stream
//   }
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "parallel/communicator.h"

namespace mt {

struct P2pOp {
  bool send = false;
  void* data = nullptr;  // read by a send, written by a receive
  int64_t bytes = 0;
  int peer = -1;
  int tag = 0;  // for messages only: the transport matches by order per peer
};

// `buf` sent to (or received from) `peer`, as bytes.
P2pOp P2pSend(InBuffer buf, int peer, int tag);
P2pOp P2pRecv(OutBuffer buf, int peer, int tag);

class GroupedP2p {
 public:
  // Runs one group, every operation at once, and returns when all are done.
  using Launch = std::function<absl::Status(const std::vector<P2pOp>& group)>;
  // `name()` prefixes messages ("nccl:pp rank 1"); it is called only for one.
  GroupedP2p(Launch launch, std::function<std::string()> name);
  ~GroupedP2p();  // launches what is still held, so no peer waits for it forever

  // Holds `op` until the next blocking call (or the returned Request's Wait). The Request
  // must not outlive this object, as a Communicator's must not outlive it.
  std::unique_ptr<Request> Post(const P2pOp& op);
  // Launches what is held with `op` and waits for all of it.
  absl::Status Run(const P2pOp& op);
  // Launches what is held, if anything.
  absl::Status Flush();
  // FailedPrecondition when operations are held: a collective enqueued behind them would
  // wait for receives the peers may post only after that collective.
  absl::Status CheckIdle(const char* op) const;

  int64_t held() const { return static_cast<int64_t>(held_.size()); }

 private:
  class Ticket;
  // A ticket's status once launched: a failed group fails every later operation too (the
  // job cannot recover a half-done exchange).
  absl::Status StatusOf(uint64_t ticket) const;

  Launch launch_;
  std::function<std::string()> name_;
  std::vector<P2pOp> held_;
  uint64_t next_ticket_ = 0;    // the ticket of the next Post or Run
  uint64_t launched_upto_ = 0;  // tickets below it were launched
  uint64_t failed_from_ = UINT64_MAX;
  absl::Status error_;
};

// A Communicator whose point to point goes through a GroupedP2p: ISend and IRecv held, Send,
// Recv and a Request's Wait launching what is held with them as one group, and collectives
// refused while anything is held. A backend supplies LaunchGroup and calls FlushHeld in its
// destructor, while its transport still lives.
class GroupingCommunicator : public Communicator {
 protected:
  GroupingCommunicator();
  // One group, every operation at once; returns when all are done.
  virtual absl::Status LaunchGroup(const std::vector<P2pOp>& group) = 0;
  void FlushHeld() { p2p_.Flush().IgnoreError(); }

  absl::Status DoSend(InBuffer buf, int peer, int tag) final;
  absl::Status DoRecv(OutBuffer buf, int peer, int tag) final;
  absl::StatusOr<std::unique_ptr<Request>> DoISend(InBuffer buf, int peer, int tag) final;
  absl::StatusOr<std::unique_ptr<Request>> DoIRecv(OutBuffer buf, int peer, int tag) final;
  absl::Status BeforeCollective(const char* op) final { return p2p_.CheckIdle(op); }

 private:
  GroupedP2p p2p_;
};

// Point to point as NcclCommunicator does it, over another communicator: untagged (every
// message goes with tag 0, so the inner MPI matches by order per peer, as NCCL does) and
// grouped (GroupingCommunicator), each group waited for whole (over MPI a send above the
// eager limit completes only once received, as NCCL's). Collectives pass through. For
// tests: the device path's pipeline on the CPU backend runs over it
// (MOETRAIN_EMULATE_NCCL_P2P, trainer/device_train.cc), so the NCCL order is checked in CI.
class GroupedP2pCommunicator : public GroupingCommunicator {
 public:
  explicit GroupedP2pCommunicator(Communicator* inner) : inner_(inner) {}  // inner outlives it
  ~GroupedP2pCommunicator() override { FlushHeld(); }

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string name() const override { return "grouped-" + inner_->name(); }
  std::string backend() const override { return "grouped-" + inner_->backend(); }

 protected:
  absl::Status LaunchGroup(const std::vector<P2pOp>& group) override;
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
  Communicator* inner_;
};

}  // namespace mt

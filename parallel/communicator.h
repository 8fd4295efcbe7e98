// parallel/communicator.h: the one narrow interface every rank-to-rank transfer goes through
// (design.md "Communicators"), and its single-process backend.
//
// A Communicator is one process group (world, pp, dp, ep or expert-dp; see
// communicator_groups.h). Backends: LocalCommunicator (one process, here), MpiCommunicator
// (CPU buffers over MPI, communicator_mpi.h) and NcclCommunicator (GPU buffers,
// communicator_nccl.h). Every call blocks until the local buffers may be reused, except
// ISend/IRecv, which return a Request (over NCCL they go out with the next blocking call:
// p2p_group.h), and IAllToAllV, which starts the exchange and returns a Request, so the
// caller can compute while it moves (over NCCL on the comm stream, kernels/cuda/runtime.h).
// Calls are collective over the group unless noted: every member must make the same calls
// in the same order with the same counts (a rank that diverges hangs the others until the
// watchdog of communicator_watchdog.h ends the job).
//
// The public methods check their arguments once (counts, dtypes, peers) and then call the
// backend's Do* method; a backend that lacks an operation inherits the default, which
// returns UnimplementedError("<backend> does not support <op>") as PyTorch c10d does.
//
// Example (average gradients over the data-parallel group):
//   RETURN_IF_ERROR(groups.dp->AllReduce(grad, ReduceOp::kSum));  // grad: Tensor [N]
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/tensor.h"

namespace mt {

enum class ReduceOp { kSum, kMax, kMin };
const char* ReduceOpName(ReduceOp op);  // "sum", "max", "min"

// A contiguous array a call reads: `count` elements of `dtype` at `data`. Implicit from a
// Tensor or a std::vector so that call sites stay short, like absl::Span.
struct InBuffer {
  const void* data = nullptr;
  int64_t count = 0;
  DType dtype = DType::kF32;

  InBuffer(const void* d, int64_t n, DType t) : data(d), count(n), dtype(t) {}
  InBuffer(const Tensor& t) : data(t.raw()), count(t.numel()), dtype(t.dtype()) {}  // NOLINT
  template <typename T>
  InBuffer(const std::vector<T>& v)  // NOLINT
      : data(v.data()), count(static_cast<int64_t>(v.size())), dtype(DTypeOf<T>()) {}
  template <typename T>
  static InBuffer Of(const T* p, int64_t n) {
    return InBuffer(p, n, DTypeOf<T>());
  }
};

// A contiguous array a call writes (or reads and writes, for in-place operations).
struct OutBuffer {
  void* data = nullptr;
  int64_t count = 0;
  DType dtype = DType::kF32;

  OutBuffer(void* d, int64_t n, DType t) : data(d), count(n), dtype(t) {}
  OutBuffer(Tensor& t) : data(t.raw()), count(t.numel()), dtype(t.dtype()) {}  // NOLINT
  template <typename T>
  OutBuffer(std::vector<T>& v)  // NOLINT
      : data(v.data()), count(static_cast<int64_t>(v.size())), dtype(DTypeOf<T>()) {}
  template <typename T>
  static OutBuffer Of(T* p, int64_t n) {
    return OutBuffer(p, n, DTypeOf<T>());
  }
};

// A pending ISend/IRecv. Wait() must be called before the buffer is reused or freed; the
// destructor waits for a request that was never waited on (so it never writes freed memory).
class Request {
 public:
  virtual ~Request() = default;
  virtual absl::Status Wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;  // in [0, size())
  virtual int size() const = 0;
  // "<backend>:<group>", e.g. "mpi:dp" or "local:world"; errors and logs use it.
  virtual std::string name() const = 0;
  virtual std::string backend() const = 0;  // "mpi", "local", ...

  // ---- Point to point (not collective). `tag` >= 0 matches a Send with its Recv.
  absl::Status Send(InBuffer buf, int peer, int tag);
  // The message must have exactly buf.count elements.
  absl::Status Recv(OutBuffer buf, int peer, int tag);
  absl::StatusOr<std::unique_ptr<Request>> ISend(InBuffer buf, int peer, int tag);
  absl::StatusOr<std::unique_ptr<Request>> IRecv(OutBuffer buf, int peer, int tag);

  // ---- Collectives. Reductions take F32, F64, I32 or I64; movement takes any dtype.
  // In place over every member's `inout` [n].
  absl::Status AllReduce(OutBuffer inout, ReduceOp op);
  // in [size * n] on every rank; out [n] = reduction of block rank() over the members.
  absl::Status ReduceScatter(InBuffer in, OutBuffer out, ReduceOp op);
  // in [n]; out [size * n], block r = member r's in.
  absl::Status AllGather(InBuffer in, OutBuffer out);
  // in [size * n], block r goes to member r; out [size * n], block r came from member r.
  absl::Status AllToAll(InBuffer in, OutBuffer out);
  // Ragged all-to-all, counts and displacements in elements ([size] each): member r gets
  // in[send_displs[r], +send_counts[r]) and places what member s sent at out[recv_displs[s],
  // +recv_counts[s]). recv_counts[s] must equal what s sends here (exchange counts first).
  absl::Status AllToAllV(InBuffer in, const std::vector<int64_t>& send_counts,
                         const std::vector<int64_t>& send_displs, OutBuffer out,
                         const std::vector<int64_t>& recv_counts,
                         const std::vector<int64_t>& recv_displs);
  // AllToAllV started: `in` and `out` must stay alive and untouched until the Request's
  // Wait, which returns once `out` holds everything. Members start their exchanges in the
  // same order as any other collective. A backend without an overlapping form runs the
  // exchange here and returns a Request that is already done.
  absl::StatusOr<std::unique_ptr<Request>> IAllToAllV(InBuffer in,
                                                      const std::vector<int64_t>& send_counts,
                                                      const std::vector<int64_t>& send_displs,
                                                      OutBuffer out,
                                                      const std::vector<int64_t>& recv_counts,
                                                      const std::vector<int64_t>& recv_displs);
  // inout [n]: root's values everywhere.
  absl::Status Broadcast(OutBuffer inout, int root);
  absl::Status Barrier();

 protected:
  // Backend hooks, called after the arguments were checked. Defaults: Unimplemented.
  virtual absl::Status DoSend(InBuffer buf, int peer, int tag);
  virtual absl::Status DoRecv(OutBuffer buf, int peer, int tag);
  virtual absl::StatusOr<std::unique_ptr<Request>> DoISend(InBuffer buf, int peer, int tag);
  virtual absl::StatusOr<std::unique_ptr<Request>> DoIRecv(OutBuffer buf, int peer, int tag);
  virtual absl::Status DoAllReduce(OutBuffer inout, ReduceOp op);
  virtual absl::Status DoReduceScatter(InBuffer in, OutBuffer out, ReduceOp op);
  virtual absl::Status DoAllGather(InBuffer in, OutBuffer out);
  virtual absl::Status DoAllToAll(InBuffer in, OutBuffer out);
  virtual absl::Status DoAllToAllV(InBuffer in, const std::vector<int64_t>& send_counts,
                                   const std::vector<int64_t>& send_displs, OutBuffer out,
                                   const std::vector<int64_t>& recv_counts,
                                   const std::vector<int64_t>& recv_displs);
  virtual absl::StatusOr<std::unique_ptr<Request>> DoIAllToAllV(
      InBuffer in, const std::vector<int64_t>& send_counts, const std::vector<int64_t>& send_displs,
      OutBuffer out, const std::vector<int64_t>& recv_counts,
      const std::vector<int64_t>& recv_displs);
  virtual absl::Status DoBroadcast(OutBuffer inout, int root);
  virtual absl::Status DoBarrier();

  // Called by every collective before its arguments are checked; a backend refuses one
  // here when it cannot start (GroupingCommunicator, p2p_group.h: while sends are held).
  virtual absl::Status BeforeCollective(const char* /*op*/) { return absl::OkStatus(); }

  // UnimplementedError("<backend> does not support <op>").
  absl::Status Unsupported(const std::string& op) const;
  // InvalidArgumentError("<name> rank r: <op>: <what>").
  absl::Status BadArgument(const std::string& op, const std::string& what) const;

 private:
  absl::Status CheckPeer(const char* op, int peer, int tag) const;
  absl::Status CheckReducible(const char* op, DType dtype) const;
};

// One process: every collective is the identity (a copy where in and out differ). Send and
// Recv are unsupported, since a group of one has no peer.
class LocalCommunicator : public Communicator {
 public:
  explicit LocalCommunicator(std::string group = "world") : group_(std::move(group)) {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "local:" + group_; }
  std::string backend() const override { return "local"; }

 protected:
  absl::Status DoAllReduce(OutBuffer inout, ReduceOp op) override;
  absl::Status DoReduceScatter(InBuffer in, OutBuffer out, ReduceOp op) override;
  absl::Status DoAllGather(InBuffer in, OutBuffer out) override;
  absl::Status DoAllToAll(InBuffer in, OutBuffer out) override;
  absl::Status DoAllToAllV(InBuffer in, const std::vector<int64_t>& send_counts,
                           const std::vector<int64_t>& send_displs, OutBuffer out,
                           const std::vector<int64_t>& recv_counts,
                           const std::vector<int64_t>& recv_displs) override;
  absl::Status DoBroadcast(OutBuffer inout, int root) override;
  absl::Status DoBarrier() override;

 private:
  std::string group_;
};

}  // namespace mt

// tests/parallel/p2p_group_test.cc: GroupedP2p holds non-blocking operations back until a
// blocking call and launches them with it as one group, on a loopback transport that behaves
// as NCCL would for a rank talking to itself: a receive completes only from a send in the
// same group (launched alone, either would wait forever).
#include "parallel/p2p_group.h"

#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace mt {
namespace {

struct Loopback {
  std::vector<std::vector<P2pOp>> groups;  // as launched
  bool fail = false;

  GroupedP2p::Launch launch() {
    return [this](const std::vector<P2pOp>& group) -> absl::Status {
      groups.push_back(group);
      if (fail) return absl::InternalError("unhandled cuda error");
      std::vector<const P2pOp*> sends;
      for (const P2pOp& op : group)
        if (op.send) sends.push_back(&op);
      size_t next = 0;  // untagged: receives take the sends in order
      for (const P2pOp& op : group) {
        if (op.send) continue;
        if (next == sends.size()) return absl::DeadlineExceededError("a receive without a send");
        if (sends[next]->bytes != op.bytes) return absl::InternalError("size mismatch");
        std::memcpy(op.data, sends[next++]->data, op.bytes);
      }
      if (next != sends.size()) return absl::DeadlineExceededError("a send without a receive");
      return absl::OkStatus();
    };
  }
};

P2pOp Send(std::vector<float>& v, int tag = 0) {
  return {true, v.data(), static_cast<int64_t>(v.size() * sizeof(float)), 0, tag};
}
P2pOp Recv(std::vector<float>& v, int tag = 0) {
  return {false, v.data(), static_cast<int64_t>(v.size() * sizeof(float)), 0, tag};
}

TEST(GroupedP2p, HeldSendsGoOutWithTheNextReceive) {
  Loopback wire;
  GroupedP2p p2p(wire.launch(), [] { return "loop rank 0"; });
  std::vector<float> a = {1, 2}, b = {3, 4, 5}, ra(2), rb(3);
  std::unique_ptr<Request> sa = p2p.Post(Send(a));
  EXPECT_TRUE(wire.groups.empty());  // nothing launched while only a send is posted
  EXPECT_EQ(p2p.held(), 1);
  ASSERT_TRUE(p2p.Run(Recv(ra)).ok());  // a lone receive here would never complete
  ASSERT_EQ(wire.groups.size(), 1u);
  EXPECT_EQ(wire.groups[0].size(), 2u);
  EXPECT_TRUE(wire.groups[0][0].send);
  EXPECT_EQ(ra, a);
  EXPECT_TRUE(sa->Wait().ok());  // done with that group: launches nothing
  std::unique_ptr<Request> sb = p2p.Post(Send(b));
  ASSERT_TRUE(p2p.Run(Recv(rb)).ok());
  EXPECT_EQ(rb, b);
  EXPECT_TRUE(sb->Wait().ok());
  EXPECT_EQ(wire.groups.size(), 2u);
  // Launched alone, a receive is what would hang on NCCL; the loopback says so.
  EXPECT_FALSE(p2p.Run(Recv(rb)).ok());
}

TEST(GroupedP2p, WaitLaunchesTheHeldGroupOnce) {
  Loopback wire;
  GroupedP2p p2p(wire.launch(), [] { return "loop rank 0"; });
  std::vector<float> a = {7, 8, 9}, r(3);
  std::unique_ptr<Request> s = p2p.Post(Send(a, 3));
  std::unique_ptr<Request> q = p2p.Post(Recv(r, 3));
  ASSERT_TRUE(q->Wait().ok());
  EXPECT_EQ(r, a);
  ASSERT_TRUE(s->Wait().ok());
  ASSERT_TRUE(q->Wait().ok());  // a second Wait is a no-op
  EXPECT_EQ(wire.groups.size(), 1u);
  EXPECT_EQ(p2p.held(), 0);
}

TEST(GroupedP2p, ARequestDroppedUnwaitedStillGoesOut) {
  Loopback wire;
  std::vector<float> a = {1}, r(1);
  {
    GroupedP2p p2p(wire.launch(), [] { return "loop rank 0"; });
    {
      std::unique_ptr<Request> s = p2p.Post(Send(a));
      std::unique_ptr<Request> q = p2p.Post(Recv(r));
    }  // destroyed unwaited: launched, together
    ASSERT_EQ(wire.groups.size(), 1u);
    EXPECT_EQ(wire.groups[0].size(), 2u);
    r = {0};
    std::unique_ptr<Request> s = p2p.Post(Send(a));
    std::unique_ptr<Request> q = p2p.Post(Recv(r));
    s.release();  // leaked on purpose: the owner's destructor still launches both
    q.release();
  }
  ASSERT_EQ(wire.groups.size(), 2u);
  EXPECT_EQ(wire.groups[1].size(), 2u);
  EXPECT_EQ(r, a);
}

TEST(GroupedP2p, CollectivesMustNotOvertakeHeldOperations) {
  Loopback wire;
  GroupedP2p p2p(wire.launch(), [] { return "nccl:pp rank 1"; });
  EXPECT_TRUE(p2p.CheckIdle("AllReduce").ok());
  std::vector<float> a = {1};
  std::unique_ptr<Request> s = p2p.Post(Send(a));
  const absl::Status st = p2p.CheckIdle("AllReduce");
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(st.message())
                .find("nccl:pp rank 1: AllReduce with 1 point-to-point operations still held"),
            std::string::npos)
      << st;
  std::vector<float> r(1);
  ASSERT_TRUE(p2p.Run(Recv(r)).ok());
  EXPECT_TRUE(p2p.CheckIdle("AllReduce").ok());
}

TEST(GroupedP2p, AFailedGroupFailsItsRequestsAndEverythingAfter) {
  Loopback wire;
  GroupedP2p p2p(wire.launch(), [] { return "nccl:pp rank 0"; });
  std::vector<float> a = {1}, r(1);
  std::unique_ptr<Request> early = p2p.Post(Send(a));
  ASSERT_TRUE(p2p.Run(Recv(r)).ok());
  wire.fail = true;
  std::unique_ptr<Request> s = p2p.Post(Send(a));
  const absl::Status st = p2p.Run(Recv(r));
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal);
  EXPECT_NE(std::string(st.message())
                .find("nccl:pp rank 0: a group of 2 point-to-point operations: unhandled cuda "
                      "error"),
            std::string::npos)
      << st;
  EXPECT_FALSE(s->Wait().ok());
  EXPECT_TRUE(early->Wait().ok());  // its group had completed
  wire.fail = false;                // nothing more is launched after a failure
  EXPECT_FALSE(p2p.Run(Recv(r)).ok());
  EXPECT_EQ(wire.groups.size(), 2u);
}

}  // namespace
}  // namespace mt

// tests/parallel/pipeline_schedule_p2p_test.cc: ValidateGroupedRendezvous, the check that a
// schedule's point-to-point order also holds over NCCL (untagged, sends that wait for their
// receive, grouped as NcclCommunicator groups them).
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "parallel/pipeline_schedule.h"

namespace mt {
namespace {

PipelineAction Msg(PipelineOp op, int micro_batch, int peer) {
  PipelineAction a;
  a.op = op;
  a.micro_batch = micro_batch;
  a.peer = peer;
  return a;
}
PipelineAction SF(int mb, int peer) { return Msg(PipelineOp::kSendForward, mb, peer); }
PipelineAction RF(int mb, int peer) { return Msg(PipelineOp::kRecvForward, mb, peer); }

PipelineSchedule Lists(std::vector<std::vector<PipelineAction>> actions) {
  PipelineSchedule s;
  s.num_ranks = static_cast<int>(actions.size());
  s.num_micro_batches = 4;
  s.actions = std::move(actions);
  return s;
}

TEST(GroupedRendezvous, TheTrainersSchedulesRunOverNccl) {
  for (int pp : {2, 3, 4, 5, 8, 16}) {
    for (int m : {1, 2, pp, pp + 1, 2 * pp, 4 * pp + 3}) {
      for (ScheduleKind kind : {ScheduleKind::k1F1B, ScheduleKind::kZB1P}) {
        absl::StatusOr<PipelineSchedule> s = MakePipelineSchedule(kind, pp, m);
        ASSERT_TRUE(s.ok()) << s.status();
        EXPECT_TRUE(ValidateGroupedRendezvous(*s).ok())
            << ScheduleKindName(kind) << " pp=" << pp << " m=" << m << ": "
            << ValidateGroupedRendezvous(*s);
      }
    }
  }
}

// Why the device path refuses DualPipe (trainer/device_train.cc): its lists rely on buffered
// tagged sends. When this starts to pass, DualPipe's order has become NCCL's.
TEST(GroupedRendezvous, DualPipeNeedsBufferedTaggedSends) {
  for (int pp : {2, 4, 8}) {
    absl::StatusOr<PipelineSchedule> s = MakeDualPipeSchedule(pp, 2 * pp);
    ASSERT_TRUE(s.ok()) << s.status();
    ASSERT_TRUE(ValidateSchedule(*s).ok()) << ValidateSchedule(*s);
    EXPECT_FALSE(ValidateGroupedRendezvous(*s).ok()) << "pp=" << pp;
  }
}

// Buffered sends get through this (rank 0's send of 0 waits in a buffer while it receives 1
// and sends 2); over NCCL rank 0's first group holds the send of 0, which rank 1 receives
// only after rank 2's 3, which rank 2 sends only after rank 0's 2: a cycle.
TEST(GroupedRendezvous, FindsTheCycleThatBufferedSendsWouldHide) {
  const PipelineSchedule s = Lists({
      {SF(0, 1), RF(1, 2), SF(2, 2)},
      {RF(3, 2), RF(0, 0)},
      {SF(1, 0), RF(2, 0), SF(3, 1)},
  });
  const absl::Status st = ValidateGroupedRendezvous(s);
  ASSERT_FALSE(st.ok());
  const std::string m(st.message());
  EXPECT_NE(m.find("deadlock"), std::string::npos) << m;
  EXPECT_NE(m.find("rank 0's SF0.0->1 (action 0) waits for rank 1's RF0.0<-0"), std::string::npos)
      << m;
  EXPECT_NE(m.find("rank 1's RF3.0<-2"), std::string::npos) << m;
  EXPECT_NE(m.find("rank 2's RF2.0<-0"), std::string::npos) << m;
  // The same messages with rank 1 receiving in the order they can arrive: no cycle.
  const PipelineSchedule fixed = Lists({
      {SF(0, 1), RF(1, 2), SF(2, 2)},
      {RF(0, 0), RF(3, 2)},
      {SF(1, 0), RF(2, 0), SF(3, 1)},
  });
  EXPECT_TRUE(ValidateGroupedRendezvous(fixed).ok()) << ValidateGroupedRendezvous(fixed);
}

TEST(GroupedRendezvous, SendsAndTheirReceiveShareAGroup) {
  // Both ranks send before they receive: a deadlock for two lone NCCL sends, fine in groups.
  const PipelineSchedule s = Lists({{SF(0, 1), RF(1, 1)}, {SF(1, 0), RF(0, 0)}});
  EXPECT_TRUE(ValidateGroupedRendezvous(s).ok()) << ValidateGroupedRendezvous(s);
}

TEST(GroupedRendezvous, MessagesMatchByOrderNotByTag) {
  const PipelineSchedule s = Lists({{SF(0, 1), SF(1, 1)}, {RF(1, 0), RF(0, 0)}});
  const absl::Status st = ValidateGroupedRendezvous(s);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(std::string(st.message())
                .find("rank 0's send 0 to rank 1 is SF0.0->1 but rank 1's receive 0 from rank 0 "
                      "is RF1.0<-0 (NCCL matches by order, not by tag)"),
            std::string::npos)
      << st;
  // A forward message is never a backward one's partner.
  const PipelineSchedule kinds = Lists({{SF(0, 1)}, {Msg(PipelineOp::kRecvBackward, 0, 0)}});
  EXPECT_FALSE(ValidateGroupedRendezvous(kinds).ok());
}

TEST(GroupedRendezvous, EveryMessageHasItsPartner) {
  const absl::Status more = ValidateGroupedRendezvous(Lists({{SF(0, 1), SF(1, 1)}, {RF(0, 0)}}));
  ASSERT_FALSE(more.ok());
  EXPECT_NE(std::string(more.message())
                .find("rank 0 sends 2 messages to rank 1, which receives 1 from it"),
            std::string::npos)
      << more;
  const absl::Status none = ValidateGroupedRendezvous(Lists({{}, {RF(0, 0)}}));
  ASSERT_FALSE(none.ok());
  EXPECT_NE(std::string(none.message())
                .find("rank 1 receives 1 messages from rank 0, which sends it none"),
            std::string::npos)
      << none;
  const absl::Status self = ValidateGroupedRendezvous(Lists({{SF(0, 0)}}));
  ASSERT_FALSE(self.ok());
  EXPECT_NE(std::string(self.message()).find("peer 0 is not another rank"), std::string::npos)
      << self;
}

}  // namespace
}  // namespace mt

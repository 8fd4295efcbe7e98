// tests/parallel/communicator_test.cc: the single-process backend, the argument checks every
// backend shares, the Unimplemented convention, and process groups without MPI.
#include "parallel/communicator.h"

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "parallel/communicator_groups.h"
#include "parallel/communicator_watchdog.h"

namespace mt {
namespace {

void ExpectMessage(const absl::Status& s, absl::StatusCode code, const std::string& needle) {
  EXPECT_EQ(s.code(), code) << s;
  EXPECT_NE(std::string(s.message()).find(needle), std::string::npos) << s.message();
}

TEST(LocalCommunicatorTest, CollectivesAreTheIdentity) {
  LocalCommunicator c("dp");
  EXPECT_EQ(c.rank(), 0);
  EXPECT_EQ(c.size(), 1);
  EXPECT_EQ(c.name(), "local:dp");

  std::vector<float> v = {1.5f, -2.0f, 3.0f};
  ASSERT_TRUE(c.AllReduce(v, ReduceOp::kSum).ok());
  EXPECT_EQ(v, (std::vector<float>{1.5f, -2.0f, 3.0f}));
  std::vector<int64_t> n = {7, -9};
  ASSERT_TRUE(c.AllReduce(n, ReduceOp::kMax).ok());
  EXPECT_EQ(n, (std::vector<int64_t>{7, -9}));

  std::vector<double> out(3, 0);
  std::vector<double> in = {1, 2, 3};
  ASSERT_TRUE(c.ReduceScatter(in, out, ReduceOp::kSum).ok());
  EXPECT_EQ(out, in);
  out.assign(3, 0);
  ASSERT_TRUE(c.AllGather(in, out).ok());
  EXPECT_EQ(out, in);
  out.assign(3, 0);
  ASSERT_TRUE(c.AllToAll(in, out).ok());
  EXPECT_EQ(out, in);

  // Ragged: 2 elements from offset 1 land at offset 3.
  std::vector<double> ragged_out(5, 0);
  ASSERT_TRUE(c.AllToAllV(in, {2}, {1}, ragged_out, {2}, {3}).ok());
  EXPECT_EQ(ragged_out, (std::vector<double>{0, 0, 0, 2, 3}));
  // Started: done by the time it returns here (one process), waited for all the same.
  std::vector<double> started_out(5, 0);
  auto started = c.IAllToAllV(in, {2}, {0}, started_out, {2}, {1});
  ASSERT_TRUE(started.ok()) << started.status();
  EXPECT_TRUE((*started)->Wait().ok());
  EXPECT_EQ(started_out, (std::vector<double>{0, 1, 2, 0, 0}));

  Tensor t({2, 2});
  t.data<float>()[3] = 4;
  ASSERT_TRUE(c.Broadcast(t, 0).ok());
  EXPECT_EQ(t.data<float>()[3], 4);
  EXPECT_TRUE(c.Barrier().ok());
}

TEST(LocalCommunicatorTest, PointToPointIsUnimplemented) {
  LocalCommunicator c;
  std::vector<float> v(4);
  ExpectMessage(c.Send(v, 0, 0), absl::StatusCode::kUnimplemented,
                "local does not support Send (group local:world)");
  ExpectMessage(c.Recv(v, 0, 0), absl::StatusCode::kUnimplemented, "local does not support Recv");
  ExpectMessage(c.ISend(v, 0, 0).status(), absl::StatusCode::kUnimplemented,
                "local does not support ISend");
}

TEST(CommunicatorTest, ArgumentsAreCheckedBeforeTheBackend) {
  LocalCommunicator c("ep");
  std::vector<float> f(4);
  std::vector<double> d(4);
  std::vector<uint16_t> bf(4);
  ExpectMessage(c.Send(f, 1, 0), absl::StatusCode::kInvalidArgument,
                "local:ep rank 0 of 1: Send: peer 1 is outside the group of 1");
  ExpectMessage(c.Recv(f, 0, -3), absl::StatusCode::kInvalidArgument, "tag -3 is negative");
  ExpectMessage(c.AllReduce(bf, ReduceOp::kSum), absl::StatusCode::kInvalidArgument,
                "cannot reduce U16");
  ExpectMessage(c.AllGather(f, d), absl::StatusCode::kInvalidArgument,
                "input is F32 but output is F64");
  std::vector<float> big(5);
  ExpectMessage(c.AllGather(f, big), absl::StatusCode::kInvalidArgument,
                "output has 5 elements, expected group size x input = 1 x 4");
  ExpectMessage(c.ReduceScatter(big, f, ReduceOp::kSum), absl::StatusCode::kInvalidArgument,
                "input has 5 elements");
  ExpectMessage(c.AllToAllV(f, {2}, {3}, f, {2}, {0}), absl::StatusCode::kInvalidArgument,
                "send block 0 [3, +2) does not fit the buffer of 4 elements");
  ExpectMessage(c.AllToAllV(f, {1, 1}, {0, 1}, f, {1}, {0}), absl::StatusCode::kInvalidArgument,
                "expected the group size 1");
  ExpectMessage(c.AllToAllV(f, {2}, {0}, f, {3}, {0}), absl::StatusCode::kInvalidArgument,
                "sends 2 elements to itself but expects 3");
  ExpectMessage(c.IAllToAllV(f, {2}, {3}, f, {2}, {0}).status(), absl::StatusCode::kInvalidArgument,
                "IAllToAllV: send block 0 [3, +2) does not fit the buffer of 4 elements");
  ExpectMessage(c.Broadcast(f, 1), absl::StatusCode::kInvalidArgument, "root 1 is outside");
}

// A backend that implements nothing reports each operation by name.
class NothingCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "nothing:world"; }
  std::string backend() const override { return "nothing"; }
};

TEST(CommunicatorTest, MissingOperationsAreUnimplementedByName) {
  NothingCommunicator c;
  std::vector<float> v(2);
  ExpectMessage(c.AllReduce(v, ReduceOp::kMin), absl::StatusCode::kUnimplemented,
                "nothing does not support AllReduce");
  ExpectMessage(c.AllToAllV(v, {1}, {0}, v, {1}, {1}), absl::StatusCode::kUnimplemented,
                "nothing does not support AllToAllV");
  // The started form falls back to the blocking one, so it is missing under that name.
  ExpectMessage(c.IAllToAllV(v, {1}, {0}, v, {1}, {1}).status(), absl::StatusCode::kUnimplemented,
                "nothing does not support AllToAllV");
  ExpectMessage(c.Barrier(), absl::StatusCode::kUnimplemented, "nothing does not support Barrier");
}

TEST(ProcessGroupsTest, OneProcessWithoutMpiGetsLocalGroups) {
  absl::StatusOr<Topology> topo = Topology::Create(LayoutSpec{}, 1, 0, 1);
  ASSERT_TRUE(topo.ok()) << topo.status();
  absl::StatusOr<ProcessGroups> g = CreateProcessGroups(*topo);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->world->name(), "local:world");
  EXPECT_EQ(g->expert_dp->name(), "local:expert_dp");
  EXPECT_EQ(g->ep->size(), 1);
}

TEST(ProcessGroupsTest, SeveralRanksWithoutMpiIsAnError) {
  LayoutSpec spec;
  spec.dp = 2;
  absl::StatusOr<Topology> topo = Topology::Create(spec, 2, 1, 2);
  ASSERT_TRUE(topo.ok()) << topo.status();
  ExpectMessage(CreateProcessGroups(*topo).status(), absl::StatusCode::kFailedPrecondition,
                "needs 2 processes but MPI is not running");
}

TEST(ProcessGroupsTest, MpiRuntimeDoesNothingWithoutAnMpiLauncher) {
  int argc = 0;
  char** argv = nullptr;
  absl::StatusOr<std::unique_ptr<MpiRuntime>> rt = MpiRuntime::Start(LaunchEnv{}, &argc, &argv);
  ASSERT_TRUE(rt.ok()) << rt.status();
  EXPECT_FALSE((*rt)->active());
}

TEST(CommWatchdogTest, EndsTheProcessNamingTheRankAndTheCall) {
  EXPECT_EXIT(
      {
        CommWatchdog dog(0.05, "rank 7");
        CommWatchdog::Scope s = dog.Watch("MPI_Allreduce on mpi:dp (group rank 1 of 2)");
        std::this_thread::sleep_for(std::chrono::seconds(30));
      },
      ::testing::ExitedWithCode(CommWatchdog::kExitCode),
      "rank 7: MPI_Allreduce on mpi:dp \\(group rank 1 of 2\\) has not completed");
}

// The flight recorder: the last kTraceLength outermost calls, numbered from the first, so
// that two ranks' traces line up; the timeout prints it.
TEST(CommWatchdogTest, TracesTheLastCallsNumbered) {
  std::string t;
  {  // its thread ends before the death test forks
    CommWatchdog dog(600, "rank 0");
    for (int i = 1; i <= CommWatchdog::kTraceLength + 3; ++i) {
      CommWatchdog::Scope outer = dog.Watch("call " + std::to_string(i));
      CommWatchdog::Scope inner = dog.Watch("nested");  // not a call of its own
    }
    CommWatchdog::Scope running = dog.Watch("MPI_Barrier on mpi:pp");
    t = dog.Trace();
  }
  EXPECT_EQ(t.find("#4 call 4"), std::string::npos) << t;  // pushed out of the ring
  EXPECT_EQ(t.find("nested"), std::string::npos) << t;
  EXPECT_EQ(t.find("#5 call 5 ("), 0u) << t;  // oldest first
  EXPECT_NE(t.find("; #11 call 11 ("), std::string::npos) << t;
  EXPECT_NE(t.find("; #12 MPI_Barrier on mpi:pp (running "), std::string::npos) << t;
  EXPECT_EXIT(
      {
        CommWatchdog d(0.05, "rank 3");
        { CommWatchdog::Scope a = d.Watch("MPI_Allreduce on mpi:world"); }
        CommWatchdog::Scope b = d.Watch("MPI_Recv on mpi:pp");
        std::this_thread::sleep_for(std::chrono::seconds(30));
      },
      ::testing::ExitedWithCode(CommWatchdog::kExitCode),
      "rank 3: its last communication calls, oldest first: #1 MPI_Allreduce on mpi:world "
      "\\([0-9.]+ s\\); #2 MPI_Recv on mpi:pp \\(running");
}

TEST(CommWatchdogTest, IdleTimeBetweenCallsDoesNotCount) {
  CommWatchdog dog(0.05, "rank 0");
  for (int i = 0; i < 3; ++i) {
    CommWatchdog::Scope outer = dog.Watch("outer");
    CommWatchdog::Scope inner = dog.Watch("inner");  // nested: the outer one is timed
  }
  // Several deadlines with nothing in flight: a watchdog that miscounted the nesting would
  // end the process here.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CommWatchdog off(0, "rank 0");
  CommWatchdog::Scope s = off.Watch("x");
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(off.deadline_s(), 0);
}

}  // namespace
}  // namespace mt

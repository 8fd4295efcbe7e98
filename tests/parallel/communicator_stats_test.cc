// tests/parallel/communicator_stats_test.cc: StatsCommunicator in one process: it forwards
// every call unchanged (a LocalCommunicator's results, and a recording fake of a 4-member
// group that checks arguments and returns errors), counts calls and bytes as
// communicator_stats.h defines them, and the report's JSON and environment switch.
#include "parallel/communicator_stats.h"

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace mt {
namespace {

// A member (rank 1) of a 4-member group that moves no data: it records each call as
// "<op>:<count>" and fails Barrier, so the tests see what reached the backend.
class RecordingCommunicator : public Communicator {
 public:
  int rank() const override { return 1; }
  int size() const override { return 4; }
  std::string name() const override { return "fake:ep"; }
  std::string backend() const override { return "fake"; }
  std::vector<std::string> log;
  int waits = 0;

 protected:
  class FakeRequest : public Request {
   public:
    explicit FakeRequest(int* waits) : waits_(waits) {}
    absl::Status Wait() override {
      ++*waits_;
      return absl::OkStatus();
    }

   private:
    int* waits_;
  };
  void Log(const char* op, int64_t n) { log.push_back(std::string(op) + ":" + std::to_string(n)); }
  absl::Status DoSend(InBuffer b, int peer, int tag) override {
    Log("send", b.count);
    return absl::OkStatus();
  }
  absl::Status DoRecv(OutBuffer b, int peer, int tag) override {
    Log("recv", b.count);
    return absl::OkStatus();
  }
  absl::StatusOr<std::unique_ptr<Request>> DoISend(InBuffer b, int, int) override {
    Log("isend", b.count);
    return std::unique_ptr<Request>(new FakeRequest(&waits));
  }
  absl::StatusOr<std::unique_ptr<Request>> DoIRecv(OutBuffer b, int, int) override {
    Log("irecv", b.count);
    return std::unique_ptr<Request>(new FakeRequest(&waits));
  }
  absl::Status DoAllReduce(OutBuffer b, ReduceOp) override {
    Log("all_reduce", b.count);
    return absl::OkStatus();
  }
  absl::Status DoReduceScatter(InBuffer in, OutBuffer, ReduceOp) override {
    Log("reduce_scatter", in.count);
    return absl::OkStatus();
  }
  absl::Status DoAllGather(InBuffer in, OutBuffer) override {
    Log("all_gather", in.count);
    return absl::OkStatus();
  }
  absl::Status DoAllToAll(InBuffer in, OutBuffer) override {
    Log("all_to_all", in.count);
    return absl::OkStatus();
  }
  absl::Status DoAllToAllV(InBuffer in, const std::vector<int64_t>&, const std::vector<int64_t>&,
                           OutBuffer, const std::vector<int64_t>&,
                           const std::vector<int64_t>&) override {
    Log("all_to_all_v", in.count);
    return absl::OkStatus();
  }
  absl::Status DoBroadcast(OutBuffer b, int root) override {
    Log("broadcast", b.count);
    return absl::OkStatus();
  }
  absl::Status DoBarrier() override { return absl::InternalError("barrier broke"); }
};

TEST(StatsCommunicatorTest, CountsBytesAsDefinedForAGroupOfFour) {
  RecordingCommunicator fake;
  StatsCommunicator c(&fake);  // not owning
  EXPECT_EQ(c.rank(), 1);
  EXPECT_EQ(c.size(), 4);
  EXPECT_EQ(c.name(), "fake:ep");
  EXPECT_EQ(c.backend(), "fake");

  std::vector<float> f8(8), f2(2);
  std::vector<double> d3(3), d12(12);
  ASSERT_TRUE(c.Send(f8, 0, 0).ok());                         // 32 bytes
  ASSERT_TRUE(c.Recv(f8, 0, 0).ok());                         // 0
  ASSERT_TRUE(c.AllReduce(f8, ReduceOp::kSum).ok());          // 2 * 32 * 3 / 4 = 48
  ASSERT_TRUE(c.ReduceScatter(f8, f2, ReduceOp::kMax).ok());  // 3 blocks of 8 bytes = 24
  ASSERT_TRUE(c.AllGather(d3, d12).ok());                     // 24 bytes to 3 members = 72
  ASSERT_TRUE(c.AllToAll(d12, d12).ok());                     // 3 blocks of 24 bytes = 72
  // Rows for ranks 0..3: 2, 5 (itself, not counted), 1, 4 doubles: (2 + 1 + 4) x 8 = 56.
  ASSERT_TRUE(c.AllToAllV(d12, {2, 5, 1, 4}, {0, 2, 7, 8}, d12, {1, 1, 1, 1}, {0, 1, 2, 3}).ok());
  {  // started: counted as one more all-to-all-v of 56 bytes (the fake runs it at once)
    auto started = c.IAllToAllV(d12, {2, 5, 1, 4}, {0, 2, 7, 8}, d12, {1, 1, 1, 1}, {0, 1, 2, 3});
    ASSERT_TRUE(started.ok());
    ASSERT_TRUE((*started)->Wait().ok());
  }
  ASSERT_TRUE(c.Broadcast(d3, /*root=*/1).ok());  // the root: 24
  ASSERT_TRUE(c.Broadcast(d3, /*root=*/2).ok());  // not the root: 0
  {
    absl::StatusOr<std::unique_ptr<Request>> s = c.ISend(d3, 2, 7);  // 24
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->Wait().ok());
    ASSERT_TRUE((*s)->Wait().ok());  // a second Wait is forwarded but not timed again
    absl::StatusOr<std::unique_ptr<Request>> r = c.IRecv(d3, 2, 7);
    ASSERT_TRUE(r.ok());  // destroyed without Wait
  }
  absl::Status b = c.Barrier();
  EXPECT_EQ(b.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(b.message(), "barrier broke");

  EXPECT_EQ(fake.log, (std::vector<std::string>{"send:8", "recv:8", "all_reduce:8",
                                                "reduce_scatter:8", "all_gather:3", "all_to_all:12",
                                                "all_to_all_v:12", "all_to_all_v:12", "broadcast:3",
                                                "broadcast:3", "isend:3", "irecv:3"}));
  EXPECT_EQ(fake.waits, 2);  // the FakeRequest of IRecv is only destroyed, not waited

  const CommStats s = c.stats();
  auto bytes = [&](CommOp op) { return s.op(op).bytes_sent; };
  auto calls = [&](CommOp op) { return s.op(op).calls; };
  EXPECT_EQ(bytes(CommOp::kSend), 32);
  EXPECT_EQ(bytes(CommOp::kRecv), 0);
  EXPECT_EQ(bytes(CommOp::kAllReduce), 48);
  EXPECT_EQ(bytes(CommOp::kReduceScatter), 24);
  EXPECT_EQ(bytes(CommOp::kAllGather), 72);
  EXPECT_EQ(bytes(CommOp::kAllToAll), 72);
  EXPECT_EQ(bytes(CommOp::kAllToAllV), 112);
  EXPECT_EQ(calls(CommOp::kAllToAllV), 2);
  EXPECT_EQ(bytes(CommOp::kBroadcast), 24);
  EXPECT_EQ(bytes(CommOp::kISend), 24);
  EXPECT_EQ(bytes(CommOp::kIRecv), 0);
  EXPECT_EQ(bytes(CommOp::kBarrier), 0);
  EXPECT_EQ(calls(CommOp::kBroadcast), 2);
  EXPECT_EQ(calls(CommOp::kISend), 1);  // the Waits add time, not calls
  EXPECT_EQ(calls(CommOp::kIRecv), 1);
  EXPECT_EQ(calls(CommOp::kBarrier), 1);  // failed calls count, with no bytes
  EXPECT_EQ(s.Total().calls, 13);
  EXPECT_EQ(s.Total().bytes_sent, 32 + 48 + 24 + 72 + 72 + 112 + 24 + 24);
  for (const CommOpStats& o : s.ops) EXPECT_GE(o.seconds, 0.0);

  c.Reset();
  EXPECT_EQ(c.stats().Total().calls, 0);
  EXPECT_EQ(c.stats().Total().bytes_sent, 0);
}

// Argument errors come from the wrapper's own checks, worded as the backend's would be.
TEST(StatsCommunicatorTest, BadArgumentsFailBeforeTheBackendAndSendNothing) {
  RecordingCommunicator fake;
  StatsCommunicator c(&fake);
  std::vector<float> f3(3), f2(2);
  absl::Status s = c.AllGather(f3, f2);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("fake:ep rank 1"), std::string::npos) << s;
  EXPECT_FALSE(c.Send(f3, 4, 0).ok());  // no peer 4 in a group of 4
  EXPECT_TRUE(fake.log.empty());
  EXPECT_EQ(c.stats().Total().calls, 0);
}

TEST(StatsCommunicatorTest, ForwardsLocalResultsUnchanged) {
  StatsCommunicator c(std::make_unique<LocalCommunicator>("dp"));  // owning
  EXPECT_EQ(c.name(), "local:dp");
  std::vector<float> x = {1.5f, -2.0f, 3.25f}, y(3);
  ASSERT_TRUE(c.AllReduce(x, ReduceOp::kSum).ok());
  EXPECT_EQ(x, (std::vector<float>{1.5f, -2.0f, 3.25f}));
  ASSERT_TRUE(c.AllGather(x, y).ok());
  EXPECT_EQ(y, x);
  std::vector<int64_t> a = {4, 5, 6}, b(3, 0);
  ASSERT_TRUE(c.AllToAllV(a, {2}, {1}, b, {2}, {0}).ok());
  EXPECT_EQ(b, (std::vector<int64_t>{5, 6, 0}));
  EXPECT_EQ(c.Send(x, 0, 0).code(), absl::StatusCode::kUnimplemented);  // as LocalCommunicator
  const CommStats s = c.stats();
  EXPECT_EQ(s.op(CommOp::kAllReduce).calls, 1);
  EXPECT_EQ(s.op(CommOp::kAllToAllV).calls, 1);
  EXPECT_EQ(s.op(CommOp::kSend).calls, 1);
  EXPECT_EQ(s.Total().bytes_sent, 0);  // a group of one sends nothing
}

TEST(CommStatsTest, OneProcessGroupsAreWrappedOnRequest) {
  absl::StatusOr<Topology> topo = Topology::Create(LayoutSpec{}, 1, 0, 1);
  ASSERT_TRUE(topo.ok()) << topo.status();
  absl::StatusOr<ProcessGroups> plain = CreateProcessGroups(*topo, {});
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(dynamic_cast<StatsCommunicator*>(plain->dp.get()), nullptr);
  absl::StatusOr<ProcessGroups> g = CreateProcessGroups(*topo, {.collect_stats = true});
  ASSERT_TRUE(g.ok()) << g.status();
  for (Communicator* c :
       {g->world.get(), g->pp.get(), g->dp.get(), g->ep.get(), g->expert_dp.get()})
    EXPECT_NE(dynamic_cast<StatsCommunicator*>(c), nullptr) << c->name();
  EXPECT_EQ(g->expert_dp->name(), "local:expert_dp");

  // A window that starts after 1 warm-up step of a run resumed at step 10.
  CommStatsWindow w(&*g, {.enabled = true, .warmup_steps = 1}, /*first_step=*/10);
  std::vector<float> x(4);
  w.BeginStep(10);
  ASSERT_TRUE(g->dp->AllReduce(x, ReduceOp::kSum).ok());  // warm-up: reset away
  EXPECT_EQ(w.Collect(11).steps, 0);                      // not started yet
  for (int64_t step = 11; step < 14; ++step) {
    w.BeginStep(step);
    ASSERT_TRUE(g->dp->AllReduce(x, ReduceOp::kSum).ok());
    ASSERT_TRUE(g->ep->Barrier().ok());
  }
  absl::StatusOr<std::vector<RankCommStats>> all = w.Gather(14);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].steps, 3);
  EXPECT_EQ((*all)[0].groups[2].op(CommOp::kAllReduce).calls, 3);  // dp
  EXPECT_EQ((*all)[0].groups[3].op(CommOp::kBarrier).calls, 3);    // ep
  EXPECT_EQ((*all)[0].groups[0].Total().calls, 0);                 // world: the gather came after
  EXPECT_EQ(std::string(StatsGroupName(2)), "dp");
  EXPECT_TRUE(w.Report(14).ok());
}

TEST(CommStatsTest, JsonHasPerRankFiguresPerStep) {
  std::vector<RankCommStats> ranks(2);
  for (int r = 0; r < 2; ++r) {
    ranks[r].steps = 4;
    ranks[r].seconds = 2.0;
    CommOpStats& a2a = ranks[r].groups[3].op(CommOp::kAllToAllV);  // ep
    a2a.calls = 8;
    a2a.bytes_sent = 400 * (r + 1);
    a2a.seconds = 0.5;
  }
  ranks[1].groups[1].op(CommOp::kSend).calls = 4;  // pp, rank 1 only
  ranks[1].groups[1].op(CommOp::kSend).bytes_sent = 40;
  const std::string j = CommStatsJson(ranks, 2);
  EXPECT_EQ(j.rfind("{\"ranks\":2,\"steps\":4,\"warmup_steps\":2,\"step_s\":[0.5,0.5]", 0), 0u)
      << j;
  EXPECT_NE(j.find("\"total\":{\"bytes_per_step\":[100,210],\"comm_s_per_step\":[0.125,0.125],"
                   "\"calls_per_step\":[2,3]}"),
            std::string::npos)
      << j;
  EXPECT_NE(j.find("\"pp\":{\"bytes_per_step\":[0,10],\"comm_s_per_step\":[0,0],"
                   "\"calls_per_step\":[0,1],\"ops\":{\"send\":{\"calls_per_step\":[0,1],"
                   "\"bytes_per_step\":[0,10],\"s_per_step\":[0,0]}}}"),
            std::string::npos)
      << j;
  EXPECT_NE(j.find("\"ep\":{\"bytes_per_step\":[100,200]"), std::string::npos) << j;
  EXPECT_NE(j.find("\"dp\":{\"bytes_per_step\":[0,0],\"comm_s_per_step\":[0,0],"
                   "\"calls_per_step\":[0,0],\"ops\":{}}"),
            std::string::npos)
      << j;
  EXPECT_EQ(j.back(), '}');
}

TEST(CommStatsTest, SettingsFromTheEnvironment) {
  unsetenv("MOETRAIN_COMM_STATS");
  unsetenv("MOETRAIN_COMM_STATS_WARMUP");
  absl::StatusOr<CommStatsSettings> s = CommStatsSettingsFromEnv();
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE(s->enabled);
  setenv("MOETRAIN_COMM_STATS", "1", 1);
  setenv("MOETRAIN_COMM_STATS_WARMUP", "5", 1);
  s = CommStatsSettingsFromEnv();
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->enabled);
  EXPECT_EQ(s->warmup_steps, 5);
  setenv("MOETRAIN_COMM_STATS_WARMUP", "-1", 1);
  EXPECT_EQ(CommStatsSettingsFromEnv().status().code(), absl::StatusCode::kInvalidArgument);
  setenv("MOETRAIN_COMM_STATS_WARMUP", "0", 1);
  setenv("MOETRAIN_COMM_STATS", "yes", 1);
  s = CommStatsSettingsFromEnv();
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.status().message()).find("MOETRAIN_COMM_STATS is 'yes'"),
            std::string::npos);
  unsetenv("MOETRAIN_COMM_STATS");
  unsetenv("MOETRAIN_COMM_STATS_WARMUP");
}

}  // namespace
}  // namespace mt

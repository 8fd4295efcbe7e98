// tests/parallel/pipeline_schedule_test.cc: the schedule generators are valid, the simulator
// reproduces the published bubble formulas (perf.md §4, DualPipe README table), and the
// activation bounds hold.
#include "parallel/pipeline_schedule.h"

#include <algorithm>

#include "gtest/gtest.h"

namespace mt {
namespace {

PipelineSchedule Make(ScheduleKind kind, int pp, int m) {
  absl::StatusOr<PipelineSchedule> s = MakePipelineSchedule(kind, pp, m);
  EXPECT_TRUE(s.ok()) << s.status();
  return *s;
}

PipelineTimeline Simulate(const PipelineSchedule& s, const PipelineCosts& c) {
  absl::StatusOr<PipelineTimeline> t = SimulateSchedule(s, c);
  EXPECT_TRUE(t.ok()) << t.status();
  return *t;
}

int CountOps(const PipelineSchedule& s, PipelineOp op) {
  int n = 0;
  for (const auto& list : s.actions) {
    n += std::count_if(list.begin(), list.end(),
                       [op](const PipelineAction& a) { return a.op == op; });
  }
  return n;
}

TEST(PipelineSchedule, GeneratedSchedulesValidate) {
  for (int pp : {1, 2, 3, 4, 5, 8, 16}) {
    for (int m : {1, 2, pp, pp + 1, 2 * pp, 4 * pp + 3}) {
      for (ScheduleKind kind : {ScheduleKind::k1F1B, ScheduleKind::kZB1P}) {
        PipelineSchedule s = Make(kind, pp, m);
        EXPECT_TRUE(ValidateSchedule(s).ok())
            << ScheduleKindName(kind) << " pp=" << pp << " m=" << m << ": " << ValidateSchedule(s);
      }
    }
  }
  for (int pp : {2, 4, 6, 8, 16}) {
    for (int m : {2 * pp, 2 * pp + 2, 3 * pp, 8 * pp}) {
      PipelineSchedule s = Make(ScheduleKind::kDualPipe, pp, m);
      EXPECT_TRUE(ValidateSchedule(s).ok())
          << "pp=" << pp << " m=" << m << ": " << ValidateSchedule(s);
      // Every rank computes one forward and one backward per micro-batch of each direction.
      EXPECT_EQ(CountOps(s, PipelineOp::kForward) + CountOps(s, PipelineOp::kForwardBackward),
                pp * m);
      EXPECT_EQ(CountOps(s, PipelineOp::kBackwardInput), CountOps(s, PipelineOp::kBackwardWeight));
    }
  }
}

TEST(PipelineSchedule, DualPipeRejectsBadSizes) {
  EXPECT_FALSE(MakeDualPipeSchedule(3, 12).ok());  // odd pp
  EXPECT_FALSE(MakeDualPipeSchedule(4, 9).ok());   // odd m
  EXPECT_FALSE(MakeDualPipeSchedule(4, 6).ok());   // m < 2 pp
  EXPECT_FALSE(Make1F1BSchedule(0, 4).ok());
  EXPECT_FALSE(Make1F1BSchedule(4, 0).ok());
  EXPECT_FALSE(ParseScheduleKind("gpipe").ok());
  EXPECT_EQ(*ParseScheduleKind("dualpipe"), ScheduleKind::kDualPipe);
}

TEST(PipelineSchedule, ValidatorCatchesBrokenSchedules) {
  PipelineSchedule base = Make(ScheduleKind::k1F1B, 4, 8);
  ASSERT_TRUE(ValidateSchedule(base).ok());

  PipelineSchedule missing = base;  // a backward disappears
  auto& r1 = missing.actions[1];
  r1.erase(std::find_if(r1.begin(), r1.end(),
                        [](const PipelineAction& a) { return a.op == PipelineOp::kBackward; }));
  EXPECT_FALSE(ValidateSchedule(missing).ok());

  PipelineSchedule wrong_peer = base;
  for (auto& a : wrong_peer.actions[2]) {
    if (a.op == PipelineOp::kSendForward) {
      a.peer = 0;
      break;
    }
  }
  EXPECT_FALSE(ValidateSchedule(wrong_peer).ok());

  // The last stage runs its backwards before its forwards: it waits for itself.
  PipelineSchedule deadlock = base;
  auto& last = deadlock.actions[3];
  std::stable_partition(last.begin(), last.end(), [](const PipelineAction& a) {
    return a.op == PipelineOp::kBackward || a.op == PipelineOp::kSendBackward;
  });
  EXPECT_FALSE(ValidateSchedule(deadlock).ok());
  EXPECT_FALSE(SimulateSchedule(deadlock, PipelineCosts::Uniform(4, 1, 2, 1)).ok());

  // Too many forwards before the first backward breaks the 1F1B activation bound (pp).
  PipelineSchedule greedy = base;
  auto& r0 = greedy.actions[0];
  std::stable_partition(r0.begin(), r0.end(), [](const PipelineAction& a) {
    return a.op == PipelineOp::kForward || a.op == PipelineOp::kSendForward;
  });
  absl::Status greedy_status = ValidateSchedule(greedy);
  EXPECT_FALSE(greedy_status.ok());
  EXPECT_NE(greedy_status.message().find("holds 8"), std::string::npos) << greedy_status;
}

TEST(PipelineSchedule, OneFOneBBubbleMatchesFormula) {
  for (int pp : {2, 4, 8, 16}) {
    for (int m : {pp, 2 * pp, 4 * pp + 3}) {
      for (auto [f, b] : {std::pair{1.0, 2.0}, {1.13, 1.99}, {2.0, 1.0}, {0.7, 0.7}}) {
        PipelineTimeline t =
            Simulate(Make(ScheduleKind::k1F1B, pp, m), PipelineCosts::Uniform(pp, f, b, 0));
        for (int r = 0; r < pp; ++r) {
          EXPECT_NEAR(t.bubble[r], BubbleFormula1F1B(pp, f, b), 1e-9)
              << "pp=" << pp << " m=" << m << " rank " << r;
        }
        EXPECT_NEAR(t.makespan, (m + pp - 1) * (f + b), 1e-9);
      }
    }
  }
}

TEST(PipelineSchedule, ZB1PBubbleMatchesFormula) {
  // (F, full B, W) with W <= F and W <= B - W, as ZB-H1 assumes.
  for (int pp : {2, 4, 8, 16}) {
    for (int m : {pp, 2 * pp, 4 * pp + 1}) {
      for (auto [f, b, w] :
           {std::tuple{1.0, 2.0, 1.0}, {1.0, 1.7, 0.5}, {1.13, 1.99, 0.48}, {2.0, 2.0, 1.0}}) {
        PipelineTimeline t =
            Simulate(Make(ScheduleKind::kZB1P, pp, m), PipelineCosts::Uniform(pp, f, b, w));
        EXPECT_NEAR(t.MaxBubble(), BubbleFormulaZB1P(pp, f, b, w), 1e-9)
            << "pp=" << pp << " m=" << m << " F=" << f << " B=" << b << " W=" << w;
      }
    }
  }
  // perf.md §4 worked example: F = B_in = W = t at p = 16 gives 15t (1F1B: 45t).
  PipelineTimeline zb =
      Simulate(Make(ScheduleKind::kZB1P, 16, 64), PipelineCosts::Uniform(16, 1, 2, 1));
  EXPECT_NEAR(zb.MaxBubble(), 15.0, 1e-9);
  PipelineTimeline ofob =
      Simulate(Make(ScheduleKind::k1F1B, 16, 64), PipelineCosts::Uniform(16, 1, 2, 1));
  EXPECT_NEAR(ofob.MaxBubble(), 45.0, 1e-9);
}

TEST(PipelineSchedule, DualPipeBubbleMatchesTableRow) {
  // The DualPipe row (PP/2 - 1)(F&B + B - 3W) holds with F = B_in = W = t (full B = 2t) and
  // an overlapped pair between B and F + B.
  for (int pp : {4, 8, 16}) {
    for (int m : {2 * pp, 2 * pp + 4, 4 * pp}) {
      for (double t : {1.0, 0.7}) {
        for (double fb : {3 * t, 2.8 * t, 2.5 * t, 2.2 * t, 2 * t}) {
          PipelineTimeline tl = Simulate(Make(ScheduleKind::kDualPipe, pp, m),
                                         PipelineCosts::Uniform(pp, t, 2 * t, t, fb));
          EXPECT_NEAR(tl.MaxBubble(), BubbleFormulaDualPipe(pp, fb, 2 * t, t), 1e-9)
              << "pp=" << pp << " m=" << m << " t=" << t << " F&B=" << fb;
        }
      }
    }
  }
  // perf.md §4: at p = 16 with no overlap gain (F&B = 3t) DualPipe's bubble is 14t, below
  // ZB1P's 15t and 1F1B's 45t; overlap (F&B = 2.5t) shrinks it to 10.5t.
  PipelineSchedule dp16 = Make(ScheduleKind::kDualPipe, 16, 64);
  EXPECT_NEAR(Simulate(dp16, PipelineCosts::Uniform(16, 1, 2, 1, 3)).MaxBubble(), 14.0, 1e-9);
  EXPECT_NEAR(Simulate(dp16, PipelineCosts::Uniform(16, 1, 2, 1, 2.5)).MaxBubble(), 10.5, 1e-9);
}

TEST(PipelineSchedule, ActivationsInFlight) {
  for (int pp : {2, 4, 8, 16}) {
    for (int m : {pp / 2 + 1, 2 * pp, 5 * pp}) {
      std::vector<int> peak = PeakActivationsInFlight(Make(ScheduleKind::k1F1B, pp, m));
      for (int r = 0; r < pp; ++r)
        EXPECT_EQ(peak[r], std::min(pp - r, m)) << "pp=" << pp << " r=" << r;
      std::vector<int> zb = PeakActivationsInFlight(Make(ScheduleKind::kZB1P, pp, m));
      EXPECT_EQ(*std::max_element(zb.begin(), zb.end()), std::min(pp, m));
    }
    // DualPipe: PP + 1 on every rank (its table row), one more than 1F1B's first stage.
    std::vector<int> dual = PeakActivationsInFlight(Make(ScheduleKind::kDualPipe, pp, 4 * pp));
    for (int r = 0; r < pp; ++r) EXPECT_EQ(dual[r], pp + 1) << "pp=" << pp << " r=" << r;
  }
}

TEST(PipelineSchedule, OverlapHidesCommunicationOnlyInPairs) {
  // Each stage: 1 compute + 0.5 communication forward, 2 + 1 backward. An F&B pair costs
  // max(compute 3, communication 1.5) = 3 instead of 4.5 unoverlapped.
  const int pp = 8, m = 32;
  PipelineCosts c;
  c.stages.assign(pp, StageCost{1.5, 3.0, 0.6, 0.5, 1.0});
  PipelineSchedule dual = Make(ScheduleKind::kDualPipe, pp, m);
  PipelineTimeline t = Simulate(dual, c);
  int pairs = 0;
  for (size_t i = 0; i < dual.actions[0].size(); ++i) {
    if (dual.actions[0][i].op == PipelineOp::kForwardBackward) {
      EXPECT_NEAR(t.end[0][i] - t.start[0][i], 3.0, 1e-12);
      ++pairs;
    }
  }
  EXPECT_GT(pairs, m / 2);
  PipelineTimeline ofob = Simulate(Make(ScheduleKind::k1F1B, pp, m), c);
  EXPECT_LT(t.makespan, ofob.makespan);
  // The P2P latency lengthens the critical path of both.
  c.p2p = 0.1;
  EXPECT_GT(Simulate(dual, c).makespan, t.makespan);
}

TEST(PipelineSchedule, SlowStageSetsThePace) {
  // 1F1B with one stage twice as slow: the steady state runs at that stage's rate.
  const int pp = 4, m = 40;
  PipelineCosts c = PipelineCosts::Uniform(pp, 1, 2, 0);
  c.stages[2] = StageCost{2, 4, 0, 0, 0};
  PipelineTimeline t = Simulate(Make(ScheduleKind::k1F1B, pp, m), c);
  EXPECT_GE(t.makespan, m * 6.0);
  EXPECT_NEAR(t.bubble[2], t.makespan - m * 6.0, 1e-9);
}

}  // namespace
}  // namespace mt

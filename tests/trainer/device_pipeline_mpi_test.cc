// tests/trainer/device_pipeline_mpi_test.cc: the device path's pipeline runner
// (trainer/device_pipeline.h) on the CPU backend against the CPU path's (trainer/
// pipeline_runner.h), both running one ZB1P action list over two MPI ranks, one stage each:
// the split backward's passes (BackwardInput now, BackwardWeight later) in the schedule's
// order must give each rank's losses, loads and every gradient to the last bit, at every
// precision, also with NCCL's point-to-point rules. And the split under expert parallelism (two EP
// ranks, one stage): DeviceModel's BackwardInput and BackwardWeight against ModelChunk's with the
// expert dispatcher, and against its own whole Backward. Run under `mpirun -np 2`
// (tests/parallel/CMakeLists.txt).
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend_cpu.h"
#include "parallel/expert_dispatch.h"
#include "parallel/p2p_group.h"
#include "parallel/pipeline_schedule.h"
#include "tests/parallel/mpi_test_util.h"
#include "tests/trainer/host_stage.h"
#include "tests/trainer/tiny_model.h"
#include "trainer/device_model.h"
#include "trainer/device_pipeline.h"
#include "trainer/pipeline_runner.h"

namespace mt {
namespace {

// With nccl_rules the device runner's point to point goes as over NCCL (untagged, grouped:
// parallel/p2p_group.h GroupedP2pCommunicator), which ZB1P's lists must survive too.
void CheckZb1p(const ProcessGroups& g, Precision precision, const std::string& what,
               bool nccl_rules = false) {
  const int rank = g.pp->rank(), n = 4;
  ModelConfig m = testing_tiny::TinyConfig();
  m.num_hidden_layers = 4;  // stage 0: the embedding, layers 0 (dense) and 1; stage 1: the rest
  absl::StatusOr<PipelineSchedule> schedule = MakeZB1PSchedule(2, n);
  ASSERT_TRUE(schedule.ok()) << schedule.status();
  int split = 0;  // this rank's input halves: the schedule does split the backward
  for (const PipelineAction& a : schedule->actions[rank])
    split += a.op == PipelineOp::kBackwardInput;
  EXPECT_EQ(split, n);

  Model whole(m, /*seed=*/5, precision);
  PrecisionPolicy policy(precision);
  testing_stage::HostStage cpu(m, rank, whole, &policy), dev_host(m, rank, whole, &policy);
  CpuBackend be;
  DeviceModel dev(m, precision, &dev_host.ps, &be, {}, {}, rank, 2);
  dev.ZeroGrads();
  std::vector<std::vector<int32_t>> tokens;
  // Over NCCL's rules, activations of 5 KiB: above Open MPI's shared-memory eager limit, so
  // a send completes only once received, as NCCL's does.
  const int64_t B = 2, S = nccl_rules ? 40 : 10;
  for (int i = 0; i < n; ++i)
    tokens.push_back(testing_tiny::RandomTokens(B * (S + 1), m.vocab_size, 60 + i));
  const ObjectiveWeights w{0.3, 0.01};
  int num_moe = 0;
  for (int64_t l = 0; l < m.num_hidden_layers + m.num_nextn_predict_layers; ++l)
    num_moe += m.IsMoeLayer(l);

  PipelineRun run;
  run.schedule = &*schedule;
  run.rank = rank;
  run.chunks = {&cpu.chunk};
  run.pp = g.pp.get();
  run.batch = [&](int i) { return MicroBatch{tokens[i].data(), B, S}; };
  run.weights = w;
  run.grad_scale = 1.0 / n;
  run.hidden = m.hidden_size;
  Losses cpu_losses;
  std::vector<std::vector<int64_t>> cpu_loads(num_moe, std::vector<int64_t>(m.n_routed_experts));
  ASSERT_TRUE(RunPipeline(run, 1.0 / n, &cpu_losses, &cpu_loads).ok());

  train_internal::DevicePipelineRun drun;
  drun.schedule = &*schedule;
  drun.rank = rank;
  drun.model = &dev;
  GroupedP2pCommunicator grouped(g.pp.get());
  drun.pp = nccl_rules ? static_cast<Communicator*>(&grouped) : g.pp.get();
  drun.tokens = [&](int i) { return tokens[i].data(); };
  drun.B = B;
  drun.S = S;
  drun.weights = w;
  drun.grad_scale = 1.0 / n;
  Losses dev_losses;
  std::vector<std::vector<int64_t>> dev_loads(num_moe, std::vector<int64_t>(m.n_routed_experts));
  const absl::Status s = train_internal::RunDevicePipeline(drun, 1.0 / n, &dev_losses, &dev_loads);
  ASSERT_TRUE(s.ok()) << s;

  EXPECT_EQ(cpu_losses.main, dev_losses.main) << what;
  EXPECT_EQ(cpu_losses.mtp, dev_losses.mtp) << what;
  EXPECT_EQ(cpu_losses.balance, dev_losses.balance) << what;
  EXPECT_EQ(cpu_loads, dev_loads) << what;
  dev.Download(/*grads=*/true);
  EXPECT_GT(testing_stage::ExpectSameGrads(cpu.ps, dev_host.ps, what), 10);
}

TEST(DevicePipelineMpiTest, Zb1pMatchesTheCpuRunner) {
  if (mpi_test::Env().world_size != 2) GTEST_SKIP() << "run under mpirun -np 2";
  LayoutSpec spec;
  spec.pp = 2;
  absl::StatusOr<ProcessGroups> g = mpi_test::MakeGroups(spec);
  ASSERT_TRUE(g.ok()) << g.status();
  CheckZb1p(*g, Precision::kFp32, "fp32");
  CheckZb1p(*g, Precision::kBf16, "bf16");
  CheckZb1p(*g, Precision::kFp8, "fp8");
  CheckZb1p(*g, Precision::kFp32, "fp32 over NCCL's point-to-point rules", /*nccl_rules=*/true);
}

// The EP group's device side with every started exchange (IAllToAllV) moving nothing until
// its Wait, and what it receives into poisoned (all bits set: NaN) meanwhile: a caller that
// read what it receives, or changed or freed what it sends, before the Wait would change the
// bits compared below. On a GPU the exchange runs on the comm stream meanwhile.
class DeferredExchange : public Communicator {
 public:
  explicit DeferredExchange(Communicator* inner) : inner_(inner) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string name() const override { return "deferred-" + inner_->name(); }
  std::string backend() const override { return "deferred"; }
  int started = 0, waited = 0;

 protected:
  absl::Status DoAllToAllV(InBuffer in, const std::vector<int64_t>& sc,
                           const std::vector<int64_t>& sd, OutBuffer out,
                           const std::vector<int64_t>& rc,
                           const std::vector<int64_t>& rd) override {
    return inner_->AllToAllV(in, sc, sd, out, rc, rd);
  }
  absl::StatusOr<std::unique_ptr<Request>> DoIAllToAllV(InBuffer in, const std::vector<int64_t>& sc,
                                                        const std::vector<int64_t>& sd,
                                                        OutBuffer out,
                                                        const std::vector<int64_t>& rc,
                                                        const std::vector<int64_t>& rd) override {
    std::memset(out.data, 0xff, out.count * DTypeSize(out.dtype));
    ++started;
    return std::unique_ptr<Request>(new Pending(this, in, sc, sd, out, rc, rd));
  }

 private:
  class Pending : public Request {
   public:
    Pending(DeferredExchange* owner, InBuffer in, std::vector<int64_t> sc, std::vector<int64_t> sd,
            OutBuffer out, std::vector<int64_t> rc, std::vector<int64_t> rd)
        : owner_(owner), in_(in), out_(out), sc_(sc), sd_(sd), rc_(rc), rd_(rd) {}
    ~Pending() override { EXPECT_TRUE(done_) << "a started exchange was never waited for"; }
    absl::Status Wait() override {
      if (done_) return absl::OkStatus();
      done_ = true;
      ++owner_->waited;
      return owner_->inner_->AllToAllV(in_, sc_, sd_, out_, rc_, rd_);
    }

   private:
    DeferredExchange* owner_;
    InBuffer in_;
    OutBuffer out_;
    std::vector<int64_t> sc_, sd_, rc_, rd_;
    bool done_ = false;
  };
  Communicator* inner_;
};

// One stage of the whole model on two EP ranks, each routing its own tokens: the split
// device model runs F0 F1 I0 I1 W0 F2 I2 W1 W2 (input and weight halves), as does the CPU
// chunk; the whole-backward device model F0 F1 B0 B1 F2 B2. Their exchanges are deferred.
void CheckExpertParallelSplit(const ProcessGroups& g, ExpertDispatcher* dispatcher,
                              Precision precision, const std::string& what) {
  const int rank = g.ep->rank(), n = 3;
  const ModelConfig m = testing_tiny::TinyConfig();
  Model whole(m, /*seed=*/5, precision);
  PrecisionPolicy policy(precision);
  testing_stage::HostStage cpu(m, 0, whole, &policy, 1, dispatcher),
      split_host(m, 0, whole, &policy, 1, dispatcher),
      whole_host(m, 0, whole, &policy, 1, dispatcher);
  CpuBackend be;
  DeviceOptimizerLayout layout;
  layout.expert_dp_size = 1;  // the experts' own region, as the trainer lays it out under EP
  DeferredExchange deferred(g.ep.get());
  const DeviceExpertGroup ep{2, rank, g.ep.get(), &deferred};
  DeviceModel split(m, precision, &split_host.ps, &be, layout, ep, 0, 1);
  DeviceModel full(m, precision, &whole_host.ps, &be, layout, ep, 0, 1);
  split.ZeroGrads();
  full.ZeroGrads();
  const int64_t B = 2, S = 10;
  std::vector<std::vector<int32_t>> tokens;
  for (int i = 0; i < n; ++i)
    tokens.push_back(testing_tiny::RandomTokens(B * (S + 1), m.vocab_size, 80 + 10 * rank + i));
  const ObjectiveWeights w{0.3, 0.01};
  const double scale = 1.0 / n;
  auto fwd = [&](DeviceModel& d, int i) {
    d.Forward(i, tokens[i].data(), B, S, Tensor(), w, scale, /*backward=*/true);
  };
  auto cpu_fwd = [&](int i) {
    Losses l;
    cpu.chunk.Forward(i, MicroBatch{tokens[i].data(), B, S}, Tensor(), w, scale, true, &l, nullptr);
  };
  fwd(split, 0);
  fwd(split, 1);
  split.BackwardInput(0, Tensor());
  split.BackwardInput(1, Tensor());
  cpu_fwd(0);
  cpu_fwd(1);
  cpu.chunk.BackwardInput(0, Tensor());
  cpu.chunk.BackwardInput(1, Tensor());
  // Two input halves in: the same gradients taken and the same waiting (the experts').
  split.Download(/*grads=*/true);
  EXPECT_GT(testing_stage::ExpectSameGrads(cpu.ps, split_host.ps, what + " midpoint"), 20);
  split.BackwardWeight(0);
  fwd(split, 2);
  split.BackwardInput(2, Tensor());
  split.BackwardWeight(1);
  split.BackwardWeight(2);
  cpu.chunk.BackwardWeight(0);
  cpu_fwd(2);
  cpu.chunk.BackwardInput(2, Tensor());
  cpu.chunk.BackwardWeight(1);
  cpu.chunk.BackwardWeight(2);
  fwd(full, 0);
  fwd(full, 1);
  full.Backward(0, Tensor());
  full.Backward(1, Tensor());
  fwd(full, 2);
  full.Backward(2, Tensor());
  for (int i = 0; i < n; ++i) {
    split.TakeLosses(i, nullptr);
    full.TakeLosses(i, nullptr);
  }
  split.Download(/*grads=*/true);
  full.Download(/*grads=*/true);
  EXPECT_GT(testing_stage::ExpectSameGrads(cpu.ps, split_host.ps, what + " vs ModelChunk"), 20);
  // The whole backward: every gradient but the embedding's, whose MTP (input half) and main
  // (weight half) terms the two orders add differently.
  int compared = 0;
  for (const auto& p : whole_host.ps.all()) {
    if (!p->trainable || p->name == "model.embed_tokens.weight") continue;
    EXPECT_TRUE(testing_stage::SameBits(p->grad, split_host.ps.Find(p->name)->grad))
        << what << " vs the whole backward: " << p->name;
    compared += p->expert;
  }
  EXPECT_GT(compared, 0);  // this rank's experts among them
  // Per MoE layer and micro-batch: the dispatch (fp8: its codes and their scales in one
  // row), the combine's backward and the dispatch's backward, each started and waited for
  // once.
  int moe_layers = 0;
  for (int64_t l = 0; l < m.num_hidden_layers + m.num_nextn_predict_layers; ++l)
    moe_layers += m.IsMoeLayer(l);
  EXPECT_EQ(deferred.started, 2 * n * moe_layers * 3) << what;
  EXPECT_EQ(deferred.waited, deferred.started) << what;
}

TEST(DevicePipelineMpiTest, SplitBackwardUnderExpertParallelismMatchesTheCpuChunk) {
  if (mpi_test::Env().world_size != 2) GTEST_SKIP() << "run under mpirun -np 2";
  LayoutSpec spec;
  spec.dp = 2;
  spec.ep = 2;
  absl::StatusOr<ProcessGroups> g = mpi_test::MakeGroups(spec);
  ASSERT_TRUE(g.ok()) << g.status();
  const ModelConfig m = testing_tiny::TinyConfig();
  ExpertDispatcher::Options o;
  o.num_experts = m.n_routed_experts;
  o.hidden = m.hidden_size;
  o.topk = m.num_experts_per_tok;
  absl::StatusOr<ExpertDispatcher> d = ExpertDispatcher::Create(g->ep.get(), o);
  ASSERT_TRUE(d.ok()) << d.status();
  CheckExpertParallelSplit(*g, &*d, Precision::kFp32, "fp32");
  CheckExpertParallelSplit(*g, &*d, Precision::kBf16, "bf16");
  CheckExpertParallelSplit(*g, &*d, Precision::kFp8, "fp8");
}

}  // namespace
}  // namespace mt

// trainer/trainer.cc: RunTraining, the training loop every rank runs.
#include "trainer/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>

#include "absl/strings/str_cat.h"
#include "parallel/communicator_groups.h"
#include "parallel/communicator_stats.h"
#include "trainer/device_train.h"
#include "trainer/flops.h"
#include "trainer/generate.h"
#include "trainer/train_run.h"

namespace mt {
namespace {

using train_internal::Clock;
using train_internal::DeviceTrainer;
using train_internal::Interval;
using train_internal::Run;
using train_internal::Seconds;

// Validation on the model that trains: the device model when there is one.
absl::StatusOr<Losses> Validate(Run& r, DeviceTrainer* dev, int64_t batches,
                                double* unigram_entropy = nullptr) {
  const int64_t S = r.cfg.training.seq_len, mb = r.cfg.training.micro_batch_size;
  const int64_t windows = std::min(r.val->num_windows(), batches * mb);
  if (unigram_entropy) {
    std::vector<int64_t> counts(r.cfg.model.vocab_size, 0);
    std::vector<int32_t> tokens(S + 1);
    for (int64_t j = 0; j < windows; ++j) {
      r.val->Sample(j, tokens.data());
      for (int64_t i = 1; i <= S; ++i) ++counts[tokens[i]];
    }
    double total = static_cast<double>(windows * S), h = 0;
    for (int64_t c : counts)
      if (c > 0) h -= c / total * std::log(c / total);
    *unigram_entropy = h;
  }
  if (dev) return dev->Evaluate(*r.val, windows, mb, r.Weights(r.Tokens()));
  return r.model->Evaluate(*r.val, windows, mb, r.Weights(r.Tokens()));
}

// max over MoE layers of (max expert load / mean expert load) in one step.
double WorstLoadRatio(const std::vector<std::vector<int64_t>>& loads) {
  double worst = 0;
  for (const auto& l : loads) {
    double sum = 0, mx = 0;
    for (int64_t x : l) {
      sum += static_cast<double>(x);
      mx = std::max(mx, static_cast<double>(x));
    }
    if (sum > 0) worst = std::max(worst, mx / (sum / static_cast<double>(l.size())));
  }
  return worst;
}

// Fault injection: a NaN in the loss and in one gradient, as an overflow would leave them.
void InjectNan(ParallelModel& model, Losses* losses) {
  losses->main = std::numeric_limits<double>::quiet_NaN();
  for (const auto& p : model.params().all()) {
    if (!p->trainable) continue;
    p->grad.data<Real>()[0] = std::numeric_limits<Real>::quiet_NaN();
    break;
  }
}

}  // namespace

int64_t GlobalBatchAt(const Config& c, double tokens) {
  const int64_t G = c.training.global_batch_size;
  if (!c.training.batch_ramp || tokens >= c.training.batch_ramp->tokens) return G;
  const int64_t unit = c.training.micro_batch_size * c.parallel.dp;
  const double start = static_cast<double>(c.training.batch_ramp->start);
  const double b = start + (G - start) * tokens / c.training.batch_ramp->tokens;
  return std::max<int64_t>(unit, static_cast<int64_t>(b) / unit * unit);
}

bool FaultInjectedAt(const TrainingConfig& t, int64_t step) {
  return t.fault_inject_nan_step >= 0 && step >= t.fault_inject_nan_step &&
         step < t.fault_inject_nan_step + t.fault_inject_nan_count;
}

namespace {

absl::StatusOr<TrainOutcome> Train(const Config& cfg, const Topology& topo, ProcessGroups* groups,
                                   const CommStatsSettings& comm_stats, int local_rank) {
  Run r(cfg);
  r.rank0 = topo.rank() == 0;
  ASSIGN_OR_RETURN(const train_internal::DeviceChoice device,
                   train_internal::ChooseDevice(cfg, topo.world_size()));
  const int64_t S = cfg.training.seq_len, mb = cfg.training.micro_batch_size;
  RETURN_IF_ERROR(train_internal::OpenData(r));
  ASSIGN_OR_RETURN(const Precision precision, ParsePrecision(cfg.training.precision));
  ASSIGN_OR_RETURN(r.model, ParallelModel::Create(cfg, precision, topo, groups));
  ParallelModel& pm = *r.model;
  ASSIGN_OR_RETURN(r.opt, ZeroAdamW::Create(pm.params(), cfg.optimizer, groups->dp.get(),
                                            groups->expert_dp.get(), groups->world.get(),
                                            [&pm](const Param& p) { return pm.CountsInNorm(p); }));
  r.interval.mtp.assign(cfg.model.num_nextn_predict_layers, 0.0);
  RETURN_IF_ERROR(train_internal::Restore(r));
  // The device path: the step runs on a Backend; pm and r.opt stay the host mirror.
  std::unique_ptr<DeviceTrainer> dev;
  if (device.device_path) {
    ASSIGN_OR_RETURN(dev, DeviceTrainer::Create(r, device, local_rank));
  }
  if (r.rank0)
    std::printf("[moetrain] device: %s (%s)\n", dev ? dev->Describe().c_str() : "cpu",
                device.why.c_str());
  ASSIGN_OR_RETURN(
      r.log, r.rank0 ? MetricsLogger::Create(cfg.logging.metrics_file, cfg.logging.tensorboard_dir,
                                             /*print=*/true)
                     : MetricsLogger::Create("", "", /*print=*/false));
  RETURN_IF_ERROR(r.log->LogRunStart(cfg, r.step));

  const double flops_per_token = TrainingFlopsPerToken(cfg.model, S, /*with_mtp=*/true).total();
  // MFU needs the peak of what runs the step: a GPU's published dense peak at the run's
  // precision (0 for a board not in the table: no MFU), else the CPU's measured sgemm rate.
  const bool gpu = dev && dev->on_gpu();
  const double peak = (gpu ? GpuDensePeakFlops(dev->device_name(), cfg.training.precision)
                           : MeasureCpuGemmFlops()) *
                      topo.world_size();
  // The figure comes from one forward of the host model on the CPU: cheap for the models a
  // CPU trains, too slow for the ones a GPU trains, so a GPU run does not measure it.
  const int64_t activation_bytes = gpu ? 0 : pm.MeasureActivationBytes(mb, S);
  if (r.rank0) {
    std::printf("[moetrain] layout: %s, schedule %s\n", topo.Describe().c_str(),
                cfg.parallel.schedule.c_str());
    std::printf(
        "[moetrain] model: %d MoE layers x %lld experts (top-%lld), MTP depth %lld; "
        "rank 0 holds %.2fM parameters\n",
        static_cast<int>(pm.moe_layers().size()),
        static_cast<long long>(cfg.model.n_routed_experts),
        static_cast<long long>(cfg.model.num_experts_per_tok),
        static_cast<long long>(cfg.model.num_nextn_predict_layers),
        pm.params().NumElements() / 1e6);
    if (gpu && peak == 0)
      std::printf(
          "[moetrain] MFU: not computed, the dense peak of %s is not tabled (trainer/flops.h; "
          "FLOPs/token, Megatron formula, causal, with MTP: %.3f MFLOP; logged as 0)\n",
          dev->device_name().c_str(), flops_per_token / 1e6);
    else if (gpu)
      std::printf(
          "[moetrain] MFU = FLOPs/token (Megatron formula, causal, with MTP: %.3f MFLOP) x "
          "tokens/s over the dense %s peak of %s x ranks (%.1f TFLOP/s)\n",
          flops_per_token / 1e6, cfg.training.precision.c_str(), dev->device_name().c_str(),
          peak / 1e12);
    else
      std::printf(
          "[moetrain] MFU = FLOPs/token (Megatron formula, causal, with MTP: %.3f MFLOP) x "
          "tokens/s over the measured CPU sgemm rate x ranks (%.1f GFLOP/s)\n",
          flops_per_token / 1e6, peak / 1e9);
    if (gpu)
      std::printf("[moetrain] precision %s (activation memory is measured on CPU runs only)\n",
                  PrecisionName(precision));
    else
      std::printf(
          "[moetrain] precision %s: activations held per micro-batch (%lld x %lld tokens) "
          "after its forward: %.2f MiB\n",
          PrecisionName(precision), static_cast<long long>(mb), static_cast<long long>(S),
          static_cast<double>(activation_bytes) / (1 << 20));
  }

  TrainOutcome out;
  out.rank0 = r.rank0;
  Interval& acc = r.interval;
  acc.start = Clock::now();
  const auto run_start = Clock::now();
  const int64_t first_step = r.step;
  // MOETRAIN_COMM_STATS=1: communication per step, printed after the loop (no-op when off).
  CommStatsWindow comm_window(groups, comm_stats, first_step);

  while (r.step < cfg.training.steps) {
    comm_window.BeginStep(r.step);
    const double tokens_before = r.Tokens();
    const int64_t G = GlobalBatchAt(cfg, tokens_before);
    ASSIGN_OR_RETURN(GlobalBatchResult batch,
                     dev ? dev->ForwardBackward(*r.train, r.cursor, G, mb, r.Weights(tokens_before))
                         : pm.ForwardBackward(*r.train, r.cursor, G, mb, r.Weights(tokens_before)));
    r.cursor += G;
    ++r.step;
    // The first step allocated what every step needs: count device allocations after it.
    if (dev && r.step == first_step + 1) dev->backend().MarkWarmupDone();
    acc.tokens += G * S;
    if (FaultInjectedAt(cfg.training, r.step)) {
      InjectNan(pm, &batch.losses);
      if (dev) dev->InjectNan();
    }
    const Losses& loss = batch.losses;
    const double lr = cfg.optimizer.lr.Value(tokens_before);
    double gnorm = 0;
    if (dev) {
      ASSIGN_OR_RETURN(gnorm, dev->GradNorm());
    } else {
      ASSIGN_OR_RETURN(gnorm, r.opt->ReduceGradients());
    }
    if (!std::isfinite(loss.main) || !std::isfinite(gnorm)) {
      // Skip: no parameter, moment or bias update; the data cursor still advances, so the
      // step's data is not retried (a bad batch would fail again).
      ++r.consecutive_skips;
      ++r.skipped_total;
      if (r.rank0)
        std::printf("[moetrain] step %lld skipped: non-finite %s (%lld in a row)\n",
                    static_cast<long long>(r.step), std::isfinite(loss.main) ? "gradient" : "loss",
                    static_cast<long long>(r.consecutive_skips));
      RETURN_IF_ERROR(r.log->LogEvent({{"event", "skipped_step"}, {"step", r.step}}));
      // Stop before this step could be checkpointed: the newest checkpoint stays the last
      // one written before the streak reached the limit.
      if (r.consecutive_skips >= cfg.training.max_consecutive_skips)
        return absl::AbortedError(absl::StrCat(
            "stopping at step ", r.step, ": ", r.consecutive_skips,
            " consecutive steps had non-finite loss or gradients (training.max_consecutive_skips "
            "= ",
            cfg.training.max_consecutive_skips, "); the last good checkpoint in ",
            cfg.checkpoint.dir.empty() ? "(none configured)" : cfg.checkpoint.dir, " is intact"));
    } else {
      r.consecutive_skips = 0;
      const double gamma = cfg.training.bias_update_speed.Value(tokens_before);
      std::vector<std::vector<float>> biases;  // [MoE layer][expert]; empty: another stage's
      if (dev) {
        RETURN_IF_ERROR(dev->Step(lr, gnorm, batch.loads, gamma));
        biases = dev->Biases();
      } else {
        RETURN_IF_ERROR(r.opt->Step(lr, gnorm, cfg.optimizer.grad_clip));
        UpdateExpertBiases(pm.moe_layers(), batch.loads, gamma);
        for (const Moe* moe : pm.moe_layers()) {
          biases.emplace_back();
          if (!moe) continue;
          const Tensor& bias = moe->bias()->value;
          biases.back().assign(bias.data<Real>(), bias.data<Real>() + bias.numel());
        }
      }
      RETURN_IF_ERROR(r.log->ObserveExperts(r.step, r.Tokens(), batch.loads, biases));
      acc.loss += loss.main;
      acc.balance += loss.balance;
      acc.grad_norm += gnorm;
      for (size_t k = 0; k < acc.mtp.size(); ++k) acc.mtp[k] += loss.mtp[k];
      acc.load += WorstLoadRatio(batch.loads);
      ++acc.steps;
    }

    const bool last = r.step == cfg.training.steps;
    // The last step of a run that ends inside a logging interval prints that partial
    // interval, but keeps its sums and leaves it out of the history: a run resumed from the
    // checkpoint below then logs the interval exactly as an uninterrupted run does.
    const bool boundary = r.step % cfg.logging.interval == 0;
    if ((boundary || last) && acc.steps > 0) {
      const auto now = Clock::now();
      StepMetrics m;
      m.step = r.step;
      m.total_steps = cfg.training.steps;
      m.tokens = r.Tokens();
      m.loss = acc.loss / acc.steps;
      for (double x : acc.mtp) m.mtp_loss.push_back(x / acc.steps);
      m.balance_loss = acc.balance / acc.steps;
      m.lr = lr;
      m.grad_norm = acc.grad_norm / acc.steps;
      m.tokens_per_s = acc.tokens / Seconds(acc.start, now);
      m.mfu = peak > 0 ? m.tokens_per_s * flops_per_token / peak : 0.0;
      m.expert_load_max_over_mean = acc.load / acc.steps;
      m.eta_s = Seconds(run_start, now) / (r.step - first_step) * (cfg.training.steps - r.step);
      m.skipped_steps = r.skipped_total;
      RETURN_IF_ERROR(r.log->Log(m));
      out.last_train_loss = m.loss;
      if (boundary) {
        r.history.push_back({{"step", m.step}, {"loss", m.loss}});
        acc.Reset();
      }
    }
    if (r.val && cfg.training.eval_interval > 0 && r.step % cfg.training.eval_interval == 0 &&
        !last) {
      ASSIGN_OR_RETURN(Losses v, Validate(r, dev.get(), cfg.training.eval_batches));
      if (r.rank0)
        std::printf("[moetrain] validation at step %lld: loss %.4f\n",
                    static_cast<long long>(r.step), v.main);
      RETURN_IF_ERROR(
          r.log->LogEvent({{"event", "validation"}, {"step", r.step}, {"val_loss", v.main}}));
      acc.start = Clock::now();  // keep eval time out of tokens/s
      acc.tokens = 0;
    }
    if (!cfg.checkpoint.dir.empty() &&
        ((cfg.checkpoint.interval > 0 && r.step % cfg.checkpoint.interval == 0) || last)) {
      if (dev) RETURN_IF_ERROR(dev->SyncToHost(/*moments=*/true));
      RETURN_IF_ERROR(train_internal::Save(r));
      acc.start = Clock::now();
      acc.tokens = 0;
    }
  }
  out.steps = r.step - first_step;
  if (dev && r.rank0 && !dev->backend().MemorySummary().empty())
    std::printf("[moetrain] %s\n", dev->backend().MemorySummary().c_str());
  RETURN_IF_ERROR(comm_window.Report(r.step));  // before validation, which is not a step
  out.skipped_steps = r.skipped_total;

  if (r.val) {
    ASSIGN_OR_RETURN(Losses v,
                     Validate(r, dev.get(), cfg.training.eval_batches, &out.val_unigram_entropy));
    out.val_loss = v.main;
    RETURN_IF_ERROR(
        r.log->LogEvent({{"event", "validation"}, {"step", r.step}, {"val_loss", v.main}}));
  }
  // A sample needs the whole model on one rank; a multi-rank run samples with `generate`
  // from its checkpoint.
  ModelChunk* whole = pm.whole_model();
  if (r.tokenizer && cfg.training.generate_tokens > 0 && whole && r.rank0) {
    if (dev) RETURN_IF_ERROR(dev->SyncToHost(/*moments=*/false));
    std::vector<int32_t> prompt = r.tokenizer->Encode(cfg.training.generate_prompt);
    if (prompt.empty()) prompt.push_back(r.tokenizer->bos_id());
    SamplingOptions so;
    so.max_tokens = cfg.training.generate_tokens;
    so.seed = cfg.training.seed;
    so.stop_token = r.tokenizer->eos_id();
    so.context = S;
    so.vocab_limit = r.tokenizer->vocab_size();
    std::vector<int32_t> gen = Generate(*whole, prompt, so);
    prompt.insert(prompt.end(), gen.begin(), gen.end());
    out.sample = r.tokenizer->Decode(prompt);
  }
  return out;
}

}  // namespace

absl::StatusOr<TrainOutcome> RunTraining(const Config& cfg) {
  ASSIGN_OR_RETURN(const LaunchEnv env, DetectLaunchEnv());
  ASSIGN_OR_RETURN(auto mpi, MpiRuntime::Start(env, nullptr, nullptr));
  // Destroyed before `mpi`, which finalises MPI.
  auto fail = [&](const absl::Status& s) {
    if (env.world_size > 1) MpiRuntime::AbortJob(s);
    return s;
  };
  auto topo = Topology::Create(LayoutOf(cfg, cfg.training.global_batch_size), env.world_size,
                               env.rank, env.local_size);
  if (!topo.ok()) return fail(Annotate(topo.status(), cfg.source + ": parallel"));
  auto comm_stats = CommStatsSettingsFromEnv();
  if (!comm_stats.ok()) return fail(comm_stats.status());
  CommOptions options;
  options.timeout_s = cfg.parallel.timeout_s;
  options.collect_stats = comm_stats->enabled;
  auto groups = CreateProcessGroups(*topo, options);
  if (!groups.ok()) return fail(groups.status());
  auto out = Train(cfg, *topo, &*groups, *comm_stats, env.local_rank);
  if (!out.ok()) return fail(out.status());
  return out;
}

}  // namespace mt

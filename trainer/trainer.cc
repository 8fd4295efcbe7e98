// trainer/trainer.cc: RunTraining, one process's training loop.
#include "trainer/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>

#include "absl/strings/str_cat.h"
#include "trainer/flops.h"
#include "trainer/generate.h"
#include "trainer/train_run.h"

namespace mt {
namespace {

using train_internal::Clock;
using train_internal::Interval;
using train_internal::Run;
using train_internal::Seconds;

Losses Validate(Run& r, int64_t batches, double* unigram_entropy = nullptr) {
  const int64_t S = r.cfg.training.seq_len, mb = r.cfg.training.micro_batch_size;
  const int64_t windows = std::min(r.val->num_windows(), batches * mb);
  Losses sum;
  int64_t n = 0;
  std::vector<int32_t> tokens(mb * (S + 1));
  std::vector<int64_t> counts(r.cfg.model.vocab_size, 0);
  for (int64_t j0 = 0; j0 < windows; j0 += mb) {
    const int64_t B = std::min(mb, windows - j0);
    for (int64_t b = 0; b < B; ++b) {
      r.val->Sample(j0 + b, tokens.data() + b * (S + 1));
      for (int64_t i = 1; i <= S; ++i) ++counts[tokens[b * (S + 1) + i]];
    }
    Losses l = r.model->Evaluate(tokens.data(), B, S, r.Weights(r.Tokens()));
    sum.main += l.main * B;
    sum.balance += l.balance * B;
    sum.mtp.resize(l.mtp.size());
    for (size_t k = 0; k < l.mtp.size(); ++k) sum.mtp[k] += l.mtp[k] * B;
    n += B;
  }
  if (unigram_entropy) {
    double total = static_cast<double>(n * S), h = 0;
    for (int64_t c : counts)
      if (c > 0) h -= c / total * std::log(c / total);
    *unigram_entropy = h;
  }
  if (n > 0) {
    sum.main /= n;
    sum.balance /= n;
    for (double& x : sum.mtp) x /= n;
  }
  return sum;
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
void InjectNan(Model& model, Losses* losses) {
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

GlobalBatchResult ForwardBackwardGlobalBatch(Model& model, const data::TrainSampleSource& samples,
                                             int64_t cursor, int64_t global_batch,
                                             int64_t micro_batch, const ObjectiveWeights& w) {
  const ModelConfig& mc = model.config();
  const int64_t S = samples.seq_len(), n_micro = global_batch / micro_batch;
  GlobalBatchResult out;
  out.loads.assign(model.moe_layers().size(), std::vector<int64_t>(mc.n_routed_experts, 0));
  out.losses.mtp.assign(mc.num_nextn_predict_layers, 0.0);
  std::vector<int32_t> tokens(micro_batch * (S + 1));  // [mb, S + 1]
  for (int64_t m = 0; m < n_micro; ++m) {
    for (int64_t b = 0; b < micro_batch; ++b)
      samples.Sample(cursor + m * micro_batch + b, tokens.data() + b * (S + 1));
    // Model::ForwardBackward adds this micro-batch's loads into out.loads.
    Losses l = model.ForwardBackward(tokens.data(), micro_batch, S, w, 1.0 / n_micro, &out.loads);
    out.losses.main += l.main / n_micro;
    out.losses.balance += l.balance / n_micro;
    for (size_t k = 0; k < l.mtp.size(); ++k) out.losses.mtp[k] += l.mtp[k] / n_micro;
  }
  return out;
}

bool FaultInjectedAt(const TrainingConfig& t, int64_t step) {
  return t.fault_inject_nan_step >= 0 && step >= t.fault_inject_nan_step &&
         step < t.fault_inject_nan_step + t.fault_inject_nan_count;
}

absl::StatusOr<TrainOutcome> RunTraining(const Config& cfg) {
  // The parallel building blocks (parallel/) are not wired into this loop yet: refuse a
  // layout it would silently run as one process.
  const ParallelConfig& par = cfg.parallel;
  if (par.pp * par.ep * par.dp != 1)
    return absl::UnimplementedError(absl::StrCat(
        cfg.source, ": parallel.pp (", par.pp, "), parallel.ep (", par.ep, ") and parallel.dp (",
        par.dp, ") must be 1: multi-rank training is not wired into the trainer yet"));
  Run r(cfg);
  const int64_t S = cfg.training.seq_len, mb = cfg.training.micro_batch_size;
  RETURN_IF_ERROR(train_internal::OpenData(r));
  ASSIGN_OR_RETURN(const Precision precision, ParsePrecision(cfg.training.precision));
  r.model = std::make_unique<Model>(cfg.model, cfg.training.seed, precision);
  r.opt = std::make_unique<AdamW>(r.model->params(), cfg.optimizer);
  r.interval.mtp.assign(cfg.model.num_nextn_predict_layers, 0.0);
  RETURN_IF_ERROR(train_internal::Restore(r));
  ASSIGN_OR_RETURN(r.log, MetricsLogger::Create(cfg.logging.metrics_file,
                                                cfg.logging.tensorboard_dir, /*print=*/true));

  const double flops_per_token = TrainingFlopsPerToken(cfg.model, S, /*with_mtp=*/true).total();
  const double peak = MeasureCpuGemmFlops();
  std::printf(
      "[moetrain] model: %.2fM parameters, %d MoE layers x %lld experts (top-%lld), MTP depth "
      "%lld\n"
      "[moetrain] MFU = FLOPs/token (Megatron formula, causal, with MTP: %.3f MFLOP) x tokens/s "
      "over the measured CPU sgemm rate (%.1f GFLOP/s)\n",
      r.model->params().NumElements() / 1e6, static_cast<int>(r.model->moe_layers().size()),
      static_cast<long long>(cfg.model.n_routed_experts),
      static_cast<long long>(cfg.model.num_experts_per_tok),
      static_cast<long long>(cfg.model.num_nextn_predict_layers), flops_per_token / 1e6,
      peak / 1e9);
  std::printf(
      "[moetrain] precision %s: activations held per micro-batch (%lld x %lld tokens) "
      "after its forward: %.2f MiB\n",
      PrecisionName(precision), static_cast<long long>(mb), static_cast<long long>(S),
      static_cast<double>(r.model->MeasureActivationBytes(mb, S)) / (1 << 20));

  TrainOutcome out;
  Interval& acc = r.interval;
  acc.start = Clock::now();
  const auto run_start = Clock::now();
  const int64_t first_step = r.step;

  while (r.step < cfg.training.steps) {
    const double tokens_before = r.Tokens();
    const int64_t G = GlobalBatchAt(cfg, tokens_before);
    r.model->params().ZeroGrads();
    GlobalBatchResult batch =
        ForwardBackwardGlobalBatch(*r.model, *r.train, r.cursor, G, mb, r.Weights(tokens_before));
    r.cursor += G;
    ++r.step;
    acc.tokens += G * S;
    if (FaultInjectedAt(cfg.training, r.step)) InjectNan(*r.model, &batch.losses);
    const Losses& loss = batch.losses;
    const double lr = cfg.optimizer.lr.Value(tokens_before);
    const double gnorm = r.opt->GradNorm();
    if (!std::isfinite(loss.main) || !std::isfinite(gnorm)) {
      // Skip: no parameter, moment or bias update; the data cursor still advances, so the
      // step's data is not retried (a bad batch would fail again).
      ++r.consecutive_skips;
      ++r.skipped_total;
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
      r.opt->ClipGradients(gnorm, cfg.optimizer.grad_clip);
      r.opt->Step(lr);
      UpdateExpertBiases(r.model->moe_layers(), batch.loads,
                         cfg.training.bias_update_speed.Value(tokens_before));
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
      m.mfu = m.tokens_per_s * flops_per_token / peak;
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
      Losses v = Validate(r, cfg.training.eval_batches);
      std::printf("[moetrain] validation at step %lld: loss %.4f\n", static_cast<long long>(r.step),
                  v.main);
      RETURN_IF_ERROR(
          r.log->LogEvent({{"event", "validation"}, {"step", r.step}, {"val_loss", v.main}}));
      acc.start = Clock::now();  // keep eval time out of tokens/s
      acc.tokens = 0;
    }
    if (!cfg.checkpoint.dir.empty() &&
        ((cfg.checkpoint.interval > 0 && r.step % cfg.checkpoint.interval == 0) || last)) {
      RETURN_IF_ERROR(train_internal::Save(r));
      acc.start = Clock::now();
      acc.tokens = 0;
    }
  }
  out.steps = r.step - first_step;
  out.skipped_steps = r.skipped_total;

  if (r.val) {
    Losses v = Validate(r, cfg.training.eval_batches, &out.val_unigram_entropy);
    out.val_loss = v.main;
    RETURN_IF_ERROR(
        r.log->LogEvent({{"event", "validation"}, {"step", r.step}, {"val_loss", v.main}}));
  }
  if (r.tokenizer && cfg.training.generate_tokens > 0) {
    std::vector<int32_t> prompt = r.tokenizer->Encode(cfg.training.generate_prompt);
    if (prompt.empty()) prompt.push_back(r.tokenizer->bos_id());
    SamplingOptions so;
    so.max_tokens = cfg.training.generate_tokens;
    so.seed = cfg.training.seed;
    so.stop_token = r.tokenizer->eos_id();
    so.context = S;
    so.vocab_limit = r.tokenizer->vocab_size();
    std::vector<int32_t> gen = Generate(*r.model, prompt, so);
    prompt.insert(prompt.end(), gen.begin(), gen.end());
    out.sample = r.tokenizer->Decode(prompt);
  }
  return out;
}

}  // namespace mt

#include "trainer/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "data/sampler.h"
#include "data/tokenizer.h"
#include "trainer/checkpoint.h"
#include "trainer/flops.h"
#include "trainer/generate.h"
#include "trainer/hf_import.h"
#include "trainer/metrics.h"
#include "trainer/model_io.h"

namespace mt {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Everything one run holds; the loop below is its only user.
struct Run {
  explicit Run(const Config& c) : cfg(c) {}
  const Config& cfg;
  std::unique_ptr<data::TrainSampleSource> train;
  std::unique_ptr<data::ValidationSource> val;
  std::unique_ptr<data::Tokenizer> tokenizer;
  std::unique_ptr<Model> model;
  std::unique_ptr<AdamW> opt;
  std::unique_ptr<MetricsLogger> log;
  int64_t step = 0;    // optimizer steps done
  int64_t cursor = 0;  // global samples consumed
  int64_t consecutive_skips = 0;
  int64_t skipped_total = 0;
  ObjectiveWeights Weights(double tokens) const {
    return {cfg.training.mtp_lambda.Value(tokens), cfg.training.balance_loss_alpha};
  }
  double Tokens() const { return static_cast<double>(cursor) * cfg.training.seq_len; }
};

absl::Status OpenData(Run& r) {
  const Config& c = r.cfg;
  if (c.data.train_path.empty())
    return absl::InvalidArgumentError(absl::StrCat(c.source, ": data.train_path is not set"));
  std::vector<std::pair<double, std::string>> weighted;
  for (size_t i = 0; i < c.data.train_path.size(); ++i)
    weighted.push_back(
        {i < c.data.train_weights.size() ? c.data.train_weights[i] : 1.0, c.data.train_path[i]});
  ASSIGN_OR_RETURN(std::vector<data::BlendSource> blend, data::OpenBlend(weighted));
  for (const auto& b : blend) RETURN_IF_ERROR(b.dataset->CheckVocab(c.model.vocab_size));
  ASSIGN_OR_RETURN(r.train, data::TrainSampleSource::Create(std::move(blend), c.training.seq_len,
                                                            c.training.seed));
  if (!c.data.val_path.empty()) {
    ASSIGN_OR_RETURN(std::unique_ptr<data::IndexedDataset> vds,
                     data::IndexedDataset::Open(c.data.val_path));
    RETURN_IF_ERROR(vds->CheckVocab(c.model.vocab_size));
    ASSIGN_OR_RETURN(r.val, data::ValidationSource::Create(
                                std::shared_ptr<const data::IndexedDataset>(std::move(vds)),
                                c.training.seq_len));
  }
  if (!c.data.tokenizer.empty()) {
    ASSIGN_OR_RETURN(r.tokenizer, data::SentencePieceTokenizer::Load(c.data.tokenizer));
    if (r.tokenizer->vocab_size() > c.model.vocab_size)
      return absl::InvalidArgumentError(
          absl::StrCat(c.data.tokenizer, ": tokenizer has ", r.tokenizer->vocab_size(),
                       " tokens but model.vocab_size is ", c.model.vocab_size));
  }
  return absl::OkStatus();
}

absl::Status Restore(Run& r) {
  const Config& c = r.cfg;
  if (!c.training.init_from.empty()) {
    Model& model = *r.model;
    ASSIGN_OR_RETURN(HfModelDir hf,
                     LoadHfModelDir(c.training.init_from, [&](const std::string& name) {
                       return IsModelTensorName(model, name);
                     }));
    RETURN_IF_ERROR(LoadModelTensors(model, hf.tensors, c.training.init_from));
    std::printf("[moetrain] initialised weights from %s\n", c.training.init_from.c_str());
  }
  std::string step_dir;
  if (c.checkpoint.resume == "auto") {
    if (c.checkpoint.dir.empty())
      return absl::InvalidArgumentError(
          absl::StrCat(c.source, ": checkpoint.resume is auto but checkpoint.dir is not set"));
    ASSIGN_OR_RETURN(auto choice, FindResumeCheckpoint(c.checkpoint.dir));
    if (!choice) {
      std::printf("[moetrain] resume auto: no checkpoint in %s, starting fresh\n",
                  c.checkpoint.dir.c_str());
      return absl::OkStatus();
    }
    for (const auto& why : choice->skipped)
      std::printf("[moetrain] resume: skipped %s\n", why.c_str());
    std::printf("[moetrain] resume: taking %s (newest committed step whose manifest verifies)\n",
                choice->step_dir.c_str());
    step_dir = choice->step_dir;
  } else if (c.checkpoint.resume != "none") {
    step_dir = c.checkpoint.resume;
  }
  if (step_dir.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(CheckpointData ck, LoadCheckpoint(step_dir));
  RETURN_IF_ERROR(LoadModelTensors(*r.model, ck.model, step_dir));
  RETURN_IF_ERROR(LoadOptimizerState(*r.opt, ck.state_files, step_dir));
  const nlohmann::json& ts = ck.train_state;
  try {
    r.step = ts.at("step").get<int64_t>();
    r.opt->set_step(ts.at("optimizer_step").get<int64_t>());
    r.consecutive_skips = ts.at("consecutive_skips").get<int64_t>();
    r.skipped_total = ts.at("skipped_steps").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(step_dir, "/train_state.json: ", e.what()));
  }
  ASSIGN_OR_RETURN(r.cursor, r.train->RestoreCursor(ts.at("sampler")));
  return absl::OkStatus();
}

absl::Status Save(Run& r, const nlohmann::json& history) {
  const Config& c = r.cfg;
  CheckpointData ck;
  ck.config_json = ModelConfigToHfJson(c.model);
  ck.model = ModelTensors(*r.model);
  OptimizerStateFiles(*r.opt, &ck.state_files);
  ck.train_state = {
      {"step", r.step},
      {"tokens", r.Tokens()},
      {"optimizer_step", r.opt->step()},
      {"consecutive_skips", r.consecutive_skips},
      {"skipped_steps", r.skipped_total},
      {"sampler", r.train->SamplerState(r.cursor)},
      {"rng", {{"seed", c.training.seed}, {"generator", "counter-based (seed, name, index)"}}},
      {"schedules",
       {{"lr", c.optimizer.lr.Value(r.Tokens())},
        {"mtp_lambda", c.training.mtp_lambda.Value(r.Tokens())},
        {"bias_update_speed", c.training.bias_update_speed.Value(r.Tokens())}}},
      {"metrics_history", history},
      {"config_source", c.source}};
  SaveOptions opts;
  opts.keep_last = c.checkpoint.keep_last;
  opts.model_dtype = c.checkpoint.dtype == "bf16" ? DType::kBF16 : DType::kF32;
  const auto t0 = Clock::now();
  RETURN_IF_ERROR(SaveCheckpoint(c.checkpoint.dir, r.step, ck, opts));
  std::printf("[moetrain] checkpoint %s/%s written in %.2fs\n", c.checkpoint.dir.c_str(),
              StepDirName(r.step).c_str(), Seconds(t0, Clock::now()));
  return absl::OkStatus();
}

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

}  // namespace

int64_t GlobalBatchAt(const Config& c, double tokens) {
  const int64_t G = c.training.global_batch_size;
  if (!c.training.batch_ramp || tokens >= c.training.batch_ramp->tokens) return G;
  const int64_t unit = c.training.micro_batch_size * c.parallel.dp;
  const double start = static_cast<double>(c.training.batch_ramp->start);
  const double b = start + (G - start) * tokens / c.training.batch_ramp->tokens;
  return std::max<int64_t>(unit, static_cast<int64_t>(b) / unit * unit);
}

absl::StatusOr<TrainOutcome> RunTraining(const Config& cfg) {
  Run r(cfg);
  const int64_t S = cfg.training.seq_len, mb = cfg.training.micro_batch_size;
  RETURN_IF_ERROR(OpenData(r));
  r.model = std::make_unique<Model>(cfg.model, cfg.training.seed);
  r.opt = std::make_unique<AdamW>(r.model->params(), cfg.optimizer);
  RETURN_IF_ERROR(Restore(r));
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

  TrainOutcome out;
  const int64_t n_moe = static_cast<int64_t>(r.model->moe_layers().size());
  std::vector<int32_t> tokens(mb * (S + 1));
  // Interval accumulators for the progress line.
  double acc_loss = 0, acc_bal = 0, acc_gnorm = 0, acc_load = 0;
  std::vector<double> acc_mtp(cfg.model.num_nextn_predict_layers, 0.0);
  int64_t acc_n = 0, acc_tokens = 0;
  auto interval_start = Clock::now();
  const auto run_start = Clock::now();
  const int64_t first_step = r.step;
  nlohmann::json history = nlohmann::json::array();

  while (r.step < cfg.training.steps) {
    const double tokens_before = r.Tokens();
    const int64_t G = GlobalBatchAt(cfg, tokens_before);
    const int64_t n_micro = G / mb;
    const ObjectiveWeights w = r.Weights(tokens_before);
    r.model->params().ZeroGrads();
    std::vector<std::vector<int64_t>> loads(n_moe,
                                            std::vector<int64_t>(cfg.model.n_routed_experts, 0));
    Losses step_loss;
    step_loss.mtp.assign(cfg.model.num_nextn_predict_layers, 0.0);
    for (int64_t m = 0; m < n_micro; ++m) {
      for (int64_t b = 0; b < mb; ++b)
        r.train->Sample(r.cursor + m * mb + b, tokens.data() + b * (S + 1));
      Losses l = r.model->ForwardBackward(tokens.data(), mb, S, w, 1.0 / n_micro, &loads);
      step_loss.main += l.main / n_micro;
      step_loss.balance += l.balance / n_micro;
      for (size_t k = 0; k < l.mtp.size(); ++k) step_loss.mtp[k] += l.mtp[k] / n_micro;
    }
    r.cursor += G;
    ++r.step;
    if (cfg.training.fault_inject_nan_step == r.step) step_loss.main = std::nan("");

    const double gnorm = r.opt->GradNorm();
    if (!std::isfinite(step_loss.main) || !std::isfinite(gnorm)) {
      // Skip: no parameter, moment or bias update; the data cursor still advances.
      ++r.consecutive_skips;
      ++r.skipped_total;
      std::printf("[moetrain] step %lld skipped: non-finite %s (%lld in a row)\n",
                  static_cast<long long>(r.step),
                  std::isfinite(step_loss.main) ? "gradient" : "loss",
                  static_cast<long long>(r.consecutive_skips));
      RETURN_IF_ERROR(r.log->LogEvent({{"event", "skipped_step"}, {"step", r.step}}));
      if (r.consecutive_skips >= cfg.training.max_consecutive_skips)
        return absl::AbortedError(absl::StrCat(
            "stopping: ", r.consecutive_skips,
            " consecutive steps had non-finite loss or gradients (training.max_consecutive_skips "
            "= ",
            cfg.training.max_consecutive_skips, "); the last good checkpoint in ",
            cfg.checkpoint.dir.empty() ? "(none configured)" : cfg.checkpoint.dir, " is intact"));
      continue;
    }
    r.consecutive_skips = 0;
    r.opt->ClipGradients(gnorm, cfg.optimizer.grad_clip);
    const double lr = cfg.optimizer.lr.Value(tokens_before);
    r.opt->Step(lr);
    UpdateExpertBiases(r.model->moe_layers(), loads,
                       cfg.training.bias_update_speed.Value(tokens_before));

    // Progress accounting.
    acc_loss += step_loss.main;
    acc_bal += step_loss.balance;
    acc_gnorm += gnorm;
    for (size_t k = 0; k < acc_mtp.size(); ++k) acc_mtp[k] += step_loss.mtp[k];
    double worst = 0;
    for (const auto& l : loads) {
      double sum = 0, mx = 0;
      for (int64_t x : l) {
        sum += static_cast<double>(x);
        mx = std::max(mx, static_cast<double>(x));
      }
      if (sum > 0) worst = std::max(worst, mx / (sum / static_cast<double>(l.size())));
    }
    acc_load += worst;
    ++acc_n;
    acc_tokens += G * S;
    const bool last = r.step == cfg.training.steps;
    if (r.step % cfg.logging.interval == 0 || last) {
      const auto now = Clock::now();
      const double dt = Seconds(interval_start, now);
      StepMetrics m;
      m.step = r.step;
      m.total_steps = cfg.training.steps;
      m.tokens = r.Tokens();
      m.loss = acc_loss / acc_n;
      for (double x : acc_mtp) m.mtp_loss.push_back(x / acc_n);
      m.balance_loss = acc_bal / acc_n;
      m.lr = lr;
      m.grad_norm = acc_gnorm / acc_n;
      m.tokens_per_s = acc_tokens / dt;
      m.mfu = m.tokens_per_s * flops_per_token / peak;
      m.expert_load_max_over_mean = acc_load / acc_n;
      const double elapsed = Seconds(run_start, now);
      m.eta_s = elapsed / (r.step - first_step) * (cfg.training.steps - r.step);
      m.skipped_steps = r.skipped_total;
      RETURN_IF_ERROR(r.log->Log(m));
      history.push_back({{"step", m.step}, {"loss", m.loss}});
      out.last_train_loss = m.loss;
      acc_loss = acc_bal = acc_gnorm = acc_load = 0;
      std::fill(acc_mtp.begin(), acc_mtp.end(), 0.0);
      acc_n = acc_tokens = 0;
      interval_start = Clock::now();
    }
    if (r.val && cfg.training.eval_interval > 0 && r.step % cfg.training.eval_interval == 0 &&
        !last) {
      Losses v = Validate(r, cfg.training.eval_batches);
      std::printf("[moetrain] validation at step %lld: loss %.4f\n", static_cast<long long>(r.step),
                  v.main);
      RETURN_IF_ERROR(
          r.log->LogEvent({{"event", "validation"}, {"step", r.step}, {"val_loss", v.main}}));
      interval_start = Clock::now();  // keep eval time out of tokens/s
    }
    if (!cfg.checkpoint.dir.empty() &&
        ((cfg.checkpoint.interval > 0 && r.step % cfg.checkpoint.interval == 0) || last)) {
      RETURN_IF_ERROR(Save(r, history));
      interval_start = Clock::now();
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
    std::vector<int32_t> gen = Generate(*r.model, prompt, so);
    prompt.insert(prompt.end(), gen.begin(), gen.end());
    out.sample = r.tokenizer->Decode(prompt);
  }
  return out;
}

}  // namespace mt

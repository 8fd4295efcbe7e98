// trainer/config_validate.cc: the consistency rules of a Config, checked before anything runs.
//
// Each rule names its key (and the other keys involved, with their values) and points at the
// line where the key was set when the config came from a file; configs built in code get the
// source name only. The first broken rule is the error: fixing one at a time is clearer than
// a wall of consequences of the same typo.
#include <cmath>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "trainer/config_internal.h"

namespace mt {
namespace config_internal {
namespace {

class Checker {
 public:
  Checker(const Config& config, const KeyLocations& locations)
      : config_(config), locations_(locations) {}

  // Unless `ok`: "<where key was set>: <key>: <what>; expected <expected>". For a rule that
  // spans keys, `related` names the others: when one of those came from --set, the message
  // points at that --set, the likelier culprit, rather than at the file.
  absl::Status Require(bool ok, const std::string& key, absl::string_view what,
                       absl::string_view expected,
                       std::initializer_list<const char*> related = {}) const {
    if (ok) return absl::OkStatus();
    std::string where = Where(key);
    for (const char* other : related) {
      const std::string other_where = Where(other);
      if (where.rfind("--set ", 0) != 0 && other_where.rfind("--set ", 0) == 0) {
        where = other_where;
      }
    }
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": ", key, ": ", what, "; expected ", expected));
  }
  absl::Status AtLeast(const std::string& key, int64_t v, int64_t min) const {
    return Require(v >= min, key, absl::StrCat("got ", v), absl::StrCat("an integer >= ", min));
  }
  absl::Status Positive(const std::string& key, double v) const {
    return Require(v > 0, key, absl::StrCat("got ", v), "a number > 0");
  }
  absl::Status NonNegative(const std::string& key, double v) const {
    return Require(v >= 0, key, absl::StrCat("got ", v), "a number >= 0");
  }
  absl::Status OneOf(const std::string& key, const std::string& v,
                     std::initializer_list<absl::string_view> allowed) const {
    for (absl::string_view a : allowed) {
      if (v == a) return absl::OkStatus();
    }
    return Require(false, key, absl::StrCat("got \"", v, "\""),
                   absl::StrCat("one of ", absl::StrJoin(allowed, ", ")));
  }
  absl::Status CheckSchedule(const std::string& key, const Schedule& s) const {
    RETURN_IF_ERROR(Require(!s.segments.empty(), key, "the schedule has no segments",
                            "a number or a list of {until, constant|linear|cosine} segments"));
    for (size_t i = 0; i < s.segments.size(); ++i) {
      const Schedule::Segment& seg = s.segments[i];
      const double prev = i == 0 ? 0 : s.segments[i - 1].end_tokens;
      RETURN_IF_ERROR(Require(
          i == 0 ? seg.end_tokens >= 0 : seg.end_tokens > prev, key,
          absl::StrCat("segment ", i, " ends at ", seg.end_tokens, " tokens, not after ", prev),
          "until values strictly increasing"));
      RETURN_IF_ERROR(Require(
          std::isfinite(seg.start_value) && std::isfinite(seg.end_value) && seg.start_value >= 0 &&
              seg.end_value >= 0,
          key, absl::StrCat("segment ", i, " goes from ", seg.start_value, " to ", seg.end_value),
          "finite values >= 0"));
    }
    return absl::OkStatus();
  }

 private:
  // The line that set `key`, else that of the nearest map above it, else the source.
  std::string Where(std::string key) const {
    while (!key.empty()) {
      auto it = locations_.find(key);
      if (it != locations_.end()) return it->second;
      const size_t dot = key.rfind('.');
      key = dot == std::string::npos ? "" : key.substr(0, dot);
    }
    return config_.source.empty() ? "config" : config_.source;
  }

  const Config& config_;
  const KeyLocations& locations_;
};

absl::Status ValidateModel(const Checker& v, const ModelConfig& m) {
  const std::pair<const char*, int64_t> sizes[] = {
      {"vocab_size", m.vocab_size},
      {"hidden_size", m.hidden_size},
      {"intermediate_size", m.intermediate_size},
      {"moe_intermediate_size", m.moe_intermediate_size},
      {"num_hidden_layers", m.num_hidden_layers},
      {"num_attention_heads", m.num_attention_heads},
      {"num_key_value_heads", m.num_key_value_heads},
      {"n_routed_experts", m.n_routed_experts},
      {"num_experts_per_tok", m.num_experts_per_tok},
      {"n_group", m.n_group},
      {"topk_group", m.topk_group},
      {"moe_layer_freq", m.moe_layer_freq},
      {"kv_lora_rank", m.kv_lora_rank},
      {"qk_nope_head_dim", m.qk_nope_head_dim},
      {"qk_rope_head_dim", m.qk_rope_head_dim},
      {"v_head_dim", m.v_head_dim},
      {"max_position_embeddings", m.max_position_embeddings},
  };
  for (const auto& [name, value] : sizes) {
    RETURN_IF_ERROR(v.AtLeast(absl::StrCat("model.", name), value, 1));
  }
  // Zero is meaningful for these: no shared expert, no q compression, no dense layer, no MTP.
  RETURN_IF_ERROR(v.AtLeast("model.n_shared_experts", m.n_shared_experts, 0));
  RETURN_IF_ERROR(v.AtLeast("model.q_lora_rank", m.q_lora_rank, 0));
  RETURN_IF_ERROR(v.AtLeast("model.first_k_dense_replace", m.first_k_dense_replace, 0));
  RETURN_IF_ERROR(v.AtLeast("model.num_nextn_predict_layers", m.num_nextn_predict_layers, 0));
  RETURN_IF_ERROR(v.Positive("model.routed_scaling_factor", m.routed_scaling_factor));
  RETURN_IF_ERROR(v.Positive("model.rope_theta", m.rope_theta));
  RETURN_IF_ERROR(v.Positive("model.rms_norm_eps", m.rms_norm_eps));
  RETURN_IF_ERROR(v.Positive("model.initializer_range", m.initializer_range));
  RETURN_IF_ERROR(v.Require(m.attention_dropout == 0, "model.attention_dropout",
                            absl::StrCat("got ", m.attention_dropout),
                            "0.0 (DeepseekV3 trains without attention dropout)"));

  RETURN_IF_ERROR(
      v.Require(m.n_routed_experts % m.n_group == 0, "model.n_routed_experts",
                absl::StrCat("model.n_routed_experts (", m.n_routed_experts,
                             ") is not divisible by model.n_group (", m.n_group, ")"),
                "n_routed_experts a multiple of n_group (experts split evenly into groups)",
                {"model.n_group"}));
  RETURN_IF_ERROR(v.Require(m.topk_group <= m.n_group, "model.topk_group",
                            absl::StrCat("model.topk_group (", m.topk_group,
                                         ") is larger than model.n_group (", m.n_group, ")"),
                            "topk_group <= n_group", {"model.n_group"}));
  RETURN_IF_ERROR(
      v.Require(m.num_experts_per_tok <= m.n_routed_experts, "model.num_experts_per_tok",
                absl::StrCat("model.num_experts_per_tok (", m.num_experts_per_tok,
                             ") is larger than model.n_routed_experts (", m.n_routed_experts, ")"),
                "num_experts_per_tok <= n_routed_experts", {"model.n_routed_experts"}));
  const int64_t reachable = m.topk_group * (m.n_routed_experts / m.n_group);
  RETURN_IF_ERROR(
      v.Require(m.num_experts_per_tok <= reachable, "model.num_experts_per_tok",
                absl::StrCat("model.num_experts_per_tok (", m.num_experts_per_tok,
                             ") is more than the experts in the kept groups: model.topk_group (",
                             m.topk_group, ") x model.n_routed_experts / model.n_group (",
                             m.n_routed_experts / m.n_group, ") = ", reachable),
                "num_experts_per_tok <= topk_group * n_routed_experts / n_group",
                {"model.topk_group", "model.n_routed_experts", "model.n_group"}));
  RETURN_IF_ERROR(v.Require(
      m.num_key_value_heads == m.num_attention_heads, "model.num_key_value_heads",
      absl::StrCat("model.num_key_value_heads (", m.num_key_value_heads,
                   ") differs from model.num_attention_heads (", m.num_attention_heads, ")"),
      "num_key_value_heads == num_attention_heads (MLA has no grouped KV heads)",
      {"model.num_attention_heads"}));
  RETURN_IF_ERROR(v.Require(m.qk_rope_head_dim % 2 == 0, "model.qk_rope_head_dim",
                            absl::StrCat("got ", m.qk_rope_head_dim, ", which is odd"),
                            "an even number (RoPE rotates pairs of dimensions)"));
  RETURN_IF_ERROR(v.Require(
      m.first_k_dense_replace <= m.num_hidden_layers, "model.first_k_dense_replace",
      absl::StrCat("model.first_k_dense_replace (", m.first_k_dense_replace,
                   ") is larger than model.num_hidden_layers (", m.num_hidden_layers, ")"),
      "first_k_dense_replace <= num_hidden_layers", {"model.num_hidden_layers"}));
  RETURN_IF_ERROR(v.OneOf("model.scoring_func", m.scoring_func, {"sigmoid"}));
  RETURN_IF_ERROR(v.OneOf("model.topk_method", m.topk_method, {"noaux_tc"}));
  RETURN_IF_ERROR(v.OneOf("model.hidden_act", m.hidden_act, {"silu"}));
  RETURN_IF_ERROR(v.Require(!m.tie_word_embeddings, "model.tie_word_embeddings", "got true",
                            "false (DeepseekV3 has a separate lm_head)"));
  RETURN_IF_ERROR(v.Require(!m.attention_bias, "model.attention_bias", "got true",
                            "false (DeepseekV3 projections have no bias)"));
  for (const auto& [name, id] : {std::pair{"model.bos_token_id", m.bos_token_id},
                                 std::pair{"model.eos_token_id", m.eos_token_id}}) {
    RETURN_IF_ERROR(v.Require(id >= 0 && id < m.vocab_size, name,
                              absl::StrCat("got ", id, " with model.vocab_size ", m.vocab_size),
                              "a token id in [0, vocab_size)", {"model.vocab_size"}));
  }
  RETURN_IF_ERROR(v.OneOf("model.torch_dtype", m.torch_dtype, {"bfloat16", "float32", "float16"}));
  if (m.rope_scaling) {
    const RopeScaling& rs = *m.rope_scaling;
    RETURN_IF_ERROR(v.OneOf("model.rope_scaling.type", rs.type, {"yarn"}));
    RETURN_IF_ERROR(v.Require(rs.factor >= 1, "model.rope_scaling.factor",
                              absl::StrCat("got ", rs.factor), "a context extension factor >= 1"));
    RETURN_IF_ERROR(v.Positive("model.rope_scaling.beta_slow", rs.beta_slow));
    RETURN_IF_ERROR(v.Require(rs.beta_fast > rs.beta_slow, "model.rope_scaling.beta_fast",
                              absl::StrCat("model.rope_scaling.beta_fast (", rs.beta_fast,
                                           ") is not above beta_slow (", rs.beta_slow, ")"),
                              "beta_fast > beta_slow (the YaRN ramp runs between them)",
                              {"model.rope_scaling.beta_slow"}));
    RETURN_IF_ERROR(v.NonNegative("model.rope_scaling.mscale", rs.mscale));
    RETURN_IF_ERROR(v.NonNegative("model.rope_scaling.mscale_all_dim", rs.mscale_all_dim));
    RETURN_IF_ERROR(v.AtLeast("model.rope_scaling.original_max_position_embeddings",
                              rs.original_max_position_embeddings, 1));
  }
  return absl::OkStatus();
}

absl::Status ValidateParallel(const Checker& v, const Config& c) {
  const ParallelConfig& p = c.parallel;
  RETURN_IF_ERROR(v.AtLeast("parallel.pp", p.pp, 1));
  RETURN_IF_ERROR(v.AtLeast("parallel.ep", p.ep, 1));
  RETURN_IF_ERROR(v.AtLeast("parallel.dp", p.dp, 1));
  RETURN_IF_ERROR(v.AtLeast("parallel.ranks_per_node", p.ranks_per_node, 0));
  RETURN_IF_ERROR(v.Require(p.timeout_s >= 0, "parallel.timeout_s",
                            absl::StrCat("parallel.timeout_s is ", p.timeout_s),
                            "a number of seconds >= 0 (0 = no limit)", {}));
  RETURN_IF_ERROR(v.Require(
      p.dp % p.ep == 0, "parallel.ep",
      absl::StrCat("parallel.dp (", p.dp, ") is not divisible by parallel.ep (", p.ep, ")"),
      "ep dividing dp (expert parallelism runs inside data parallelism)", {"parallel.dp"}));
  RETURN_IF_ERROR(
      v.Require(c.model.n_routed_experts % p.ep == 0, "parallel.ep",
                absl::StrCat("model.n_routed_experts (", c.model.n_routed_experts,
                             ") is not divisible by parallel.ep (", p.ep, ")"),
                "ep dividing n_routed_experts (each EP rank holds the same number of experts)",
                {"model.n_routed_experts"}));
  RETURN_IF_ERROR(
      v.Require(c.model.num_hidden_layers >= p.pp, "parallel.pp",
                absl::StrCat("parallel.pp (", p.pp, ") is more than model.num_hidden_layers (",
                             c.model.num_hidden_layers, ")"),
                "at least one layer per pipeline stage", {"model.num_hidden_layers"}));
  return v.OneOf("parallel.schedule", p.schedule, {"1f1b", "dualpipe"});
}

absl::Status ValidateTraining(const Checker& v, const Config& c) {
  const TrainingConfig& t = c.training;
  RETURN_IF_ERROR(v.AtLeast("training.steps", t.steps, 1));
  RETURN_IF_ERROR(v.AtLeast("training.seq_len", t.seq_len, 1));
  RETURN_IF_ERROR(v.Require(
      t.seq_len <= c.model.max_position_embeddings, "training.seq_len",
      absl::StrCat("training.seq_len (", t.seq_len, ") exceeds model.max_position_embeddings (",
                   c.model.max_position_embeddings, ")"),
      "seq_len <= max_position_embeddings", {"model.max_position_embeddings"}));
  RETURN_IF_ERROR(v.AtLeast("training.micro_batch_size", t.micro_batch_size, 1));
  RETURN_IF_ERROR(v.AtLeast("training.global_batch_size", t.global_batch_size, 1));
  const int64_t unit = t.micro_batch_size * c.parallel.dp;
  RETURN_IF_ERROR(
      v.Require(t.global_batch_size % unit == 0, "training.global_batch_size",
                absl::StrCat("training.global_batch_size (", t.global_batch_size,
                             ") is not a multiple of training.micro_batch_size (",
                             t.micro_batch_size, ") x parallel.dp (", c.parallel.dp, ") = ", unit),
                "a whole number of micro-batches per data-parallel rank",
                {"training.micro_batch_size", "parallel.dp"}));
  RETURN_IF_ERROR(v.OneOf("training.precision", t.precision, {"fp32", "bf16", "fp8"}));
  RETURN_IF_ERROR(v.OneOf("training.device", t.device, {"auto", "cpu", "cuda"}));
  // What the config alone rules out; the trainer checks the build and the GPU
  // (trainer/device_train.h).
  const std::vector<std::string> blockers = DevicePathBlockers(c);
  RETURN_IF_ERROR(
      v.Require(t.device != "cuda" || blockers.empty(), "training.device",
                absl::StrCat("cuda, but ", absl::StrJoin(blockers, ", ")),
                "parallel.schedule 1f1b (the GPU step runs pipeline stages with 1F1B only), "
                "or training.device auto or cpu",
                {"parallel.schedule"}));
  RETURN_IF_ERROR(v.CheckSchedule("training.mtp_lambda", t.mtp_lambda));
  RETURN_IF_ERROR(v.CheckSchedule("training.bias_update_speed", t.bias_update_speed));
  RETURN_IF_ERROR(v.NonNegative("training.balance_loss_alpha", t.balance_loss_alpha));
  if (t.batch_ramp) {
    const BatchRamp& r = *t.batch_ramp;
    RETURN_IF_ERROR(v.AtLeast("training.batch_ramp.start", r.start, 1));
    RETURN_IF_ERROR(
        v.Require(r.start % unit == 0, "training.batch_ramp.start",
                  absl::StrCat("training.batch_ramp.start (", r.start,
                               ") is not a multiple of micro_batch_size x dp (", unit, ")"),
                  "a whole number of micro-batches per data-parallel rank",
                  {"training.micro_batch_size", "parallel.dp"}));
    RETURN_IF_ERROR(v.Require(
        r.start <= t.global_batch_size, "training.batch_ramp.start",
        absl::StrCat("training.batch_ramp.start (", r.start,
                     ") exceeds training.global_batch_size (", t.global_batch_size, ")"),
        "start <= global_batch_size (the ramp grows the batch)", {"training.global_batch_size"}));
    RETURN_IF_ERROR(v.Positive("training.batch_ramp.tokens", r.tokens));
  }
  RETURN_IF_ERROR(v.AtLeast("training.eval_interval", t.eval_interval, 0));
  RETURN_IF_ERROR(v.AtLeast("training.eval_batches", t.eval_batches, 0));
  RETURN_IF_ERROR(v.AtLeast("training.max_consecutive_skips", t.max_consecutive_skips, 0));
  RETURN_IF_ERROR(v.AtLeast("training.fault_inject_nan_step", t.fault_inject_nan_step, -1));
  RETURN_IF_ERROR(v.AtLeast("training.fault_inject_nan_count", t.fault_inject_nan_count, 1));
  RETURN_IF_ERROR(v.OneOf("training.recompute", t.recompute, {"none", "selective"}));
  return v.AtLeast("training.generate_tokens", t.generate_tokens, 0);
}

// DualPipe feeds micro-batches from both ends of a pipeline folded in two.
absl::Status ValidateDualPipe(const Checker& v, const Config& c) {
  if (c.parallel.schedule != "dualpipe") return absl::OkStatus();
  const int64_t pp = c.parallel.pp;
  RETURN_IF_ERROR(
      v.Require(pp % 2 == 0, "parallel.pp",
                absl::StrCat("parallel.schedule dualpipe with an odd parallel.pp (", pp, ")"),
                "an even pp for dualpipe", {"parallel.schedule"}));
  const int64_t unit = c.training.micro_batch_size * c.parallel.dp;
  auto check = [&](const std::string& key, int64_t batch) {
    const int64_t n = batch / unit;
    return v.Require(
        n % 2 == 0 && n >= 2 * pp, key,
        absl::StrCat("parallel.schedule dualpipe with ", n, " micro-batches per step (", key, " ",
                     batch, " / (micro_batch_size x dp = ", unit, ")) and parallel.pp ", pp),
        "an even number of micro-batches per step, at least 2 x pp (half enter from each end)",
        {"parallel.schedule", "parallel.pp", "training.micro_batch_size", "parallel.dp"});
  };
  // Only the full batch: while a batch ramp is below 2 x pp micro-batches the steps run
  // 1F1B (DeepSeek-V3's own ramp starts at 24 micro-batches with PP16), as the planner
  // times them.
  return check("training.global_batch_size", c.training.global_batch_size);
}

absl::Status ValidateOptimizer(const Checker& v, const OptimizerConfig& o) {
  RETURN_IF_ERROR(v.CheckSchedule("optimizer.lr", o.lr));
  for (const auto& [key, beta] :
       {std::pair{"optimizer.beta1", o.beta1}, std::pair{"optimizer.beta2", o.beta2}}) {
    RETURN_IF_ERROR(
        v.Require(beta >= 0 && beta < 1, key, absl::StrCat("got ", beta), "a number in [0, 1)"));
  }
  RETURN_IF_ERROR(v.Positive("optimizer.eps", o.eps));
  RETURN_IF_ERROR(v.NonNegative("optimizer.weight_decay", o.weight_decay));
  RETURN_IF_ERROR(v.NonNegative("optimizer.grad_clip", o.grad_clip));
  return v.OneOf("optimizer.moment_dtype", o.moment_dtype, {"fp32", "bf16"});
}

absl::Status ValidateData(const Checker& v, const DataConfig& d) {
  RETURN_IF_ERROR(v.Require(!d.train_path.empty(), "data.train_path", "no dataset given",
                            "a dataset prefix (PREFIX.bin/.idx), or a list of them"));
  RETURN_IF_ERROR(v.Require(
      d.train_weights.size() == d.train_path.size(), "data.train_path",
      absl::StrCat(d.train_path.size(), " prefixes but ", d.train_weights.size(), " weights"),
      "one weight per prefix"));
  for (size_t i = 0; i < d.train_path.size(); ++i) {
    RETURN_IF_ERROR(v.Require(!d.train_path[i].empty(), "data.train_path",
                              absl::StrCat("prefix ", i, " is empty"), "a dataset prefix"));
    RETURN_IF_ERROR(v.Require(d.train_weights[i] > 0, "data.train_path",
                              absl::StrCat("weight ", i, " is ", d.train_weights[i]),
                              "weights > 0"));
  }
  return absl::OkStatus();
}

absl::Status ValidateCheckpoint(const Checker& v, const CheckpointConfig& k) {
  RETURN_IF_ERROR(v.AtLeast("checkpoint.interval", k.interval, 0));
  RETURN_IF_ERROR(v.AtLeast("checkpoint.keep_last", k.keep_last, 1));
  RETURN_IF_ERROR(v.OneOf("checkpoint.dtype", k.dtype, {"fp32", "bf16"}));
  RETURN_IF_ERROR(v.Require(!k.resume.empty(), "checkpoint.resume", "got an empty string",
                            "none, auto or the path of a checkpoint step directory"));
  return v.Require(k.resume != "auto" || !k.dir.empty(), "checkpoint.resume",
                   "auto with no checkpoint.dir to look in",
                   "checkpoint.dir set, or resume: none or a step directory", {"checkpoint.dir"});
}

}  // namespace

absl::Status ValidateConfigAt(const Config& config, const KeyLocations& locations) {
  const Checker v(config, locations);
  RETURN_IF_ERROR(ValidateModel(v, config.model));
  RETURN_IF_ERROR(ValidateParallel(v, config));
  RETURN_IF_ERROR(ValidateTraining(v, config));
  RETURN_IF_ERROR(ValidateDualPipe(v, config));
  RETURN_IF_ERROR(ValidateOptimizer(v, config.optimizer));
  RETURN_IF_ERROR(ValidateData(v, config.data));
  RETURN_IF_ERROR(ValidateCheckpoint(v, config.checkpoint));
  RETURN_IF_ERROR(v.AtLeast("logging.interval", config.logging.interval, 1));
  return v.AtLeast("logging.expert_load_interval", config.logging.expert_load_interval, 0);
}

}  // namespace config_internal

std::vector<std::string> DevicePathBlockers(const Config& c) {
  std::vector<std::string> out;
  // Expert parallelism and pipeline stages under 1F1B run on the device path
  // (trainer/device_moe_ep.cc, device_pipeline.h); DualPipe's two chunks per rank do not,
  // and its lists need MPI's buffered tagged sends (not NCCL's: ValidateGroupedRendezvous).
  if (c.parallel.pp != 1 && c.parallel.schedule == "dualpipe")
    out.push_back("parallel.schedule is dualpipe, which the device path does not run (1f1b does)");
  return out;
}

absl::Status ValidateConfig(const Config& config) {
  return config_internal::ValidateConfigAt(config, {});
}

}  // namespace mt

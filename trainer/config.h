// trainer/config.h: the run configuration, as read from YAML and validated up front.
//
// The `model:` section uses Hugging Face DeepseekV3 config.json keys verbatim (or
// `model.hf_config: path/to/config.json`), so a Hub config drops in unchanged. Every
// other section is ours. LoadConfig() rejects unknown keys, wrong types and inconsistent
// values with one message naming the file, line, key and what was expected, before any
// communicator or device is touched.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace mt {

// YaRN context extension (HF `rope_scaling` with type/rope_type "yarn").
struct RopeScaling {
  std::string type = "yarn";
  double factor = 1.0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 0.0;
  int64_t original_max_position_embeddings = 4096;
};

// Hugging Face DeepseekV3Config, same names and meanings (reference/ecosystem.md §1.1).
struct ModelConfig {
  int64_t vocab_size = 129280;
  int64_t hidden_size = 7168;
  int64_t intermediate_size = 18432;
  int64_t moe_intermediate_size = 2048;
  int64_t num_hidden_layers = 61;
  int64_t num_attention_heads = 128;
  int64_t num_key_value_heads = 128;
  int64_t n_routed_experts = 256;
  int64_t n_shared_experts = 1;
  int64_t num_experts_per_tok = 8;
  int64_t n_group = 8;
  int64_t topk_group = 4;
  int64_t first_k_dense_replace = 3;
  int64_t moe_layer_freq = 1;
  int64_t q_lora_rank = 1536;  // 0 = null in config.json: a plain q_proj
  int64_t kv_lora_rank = 512;
  int64_t qk_nope_head_dim = 128;
  int64_t qk_rope_head_dim = 64;
  int64_t v_head_dim = 128;
  int64_t num_nextn_predict_layers = 1;
  int64_t max_position_embeddings = 163840;
  double routed_scaling_factor = 2.5;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-6;
  double initializer_range = 0.02;
  bool norm_topk_prob = true;
  bool tie_word_embeddings = false;
  bool attention_bias = false;
  double attention_dropout = 0.0;
  std::string scoring_func = "sigmoid";
  std::string topk_method = "noaux_tc";
  std::string hidden_act = "silu";
  std::optional<RopeScaling> rope_scaling;
  int64_t bos_token_id = 0;
  int64_t eos_token_id = 1;
  std::string torch_dtype = "bfloat16";

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool IsMoeLayer(int64_t layer) const {
    return layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
  }
  int64_t num_moe_layers() const;  // main layers only
};

// A value that changes with consumed tokens: consecutive segments, the first starting at
// 0 tokens, each ending at `end_tokens`, shaped constant, linear or cosine between its
// start and end values. After the last segment the last value holds.
//   YAML: 2.2e-4                                  (constant)
//         [{until: 25B, linear: [0, 2.2e-4]},     (warm-up)
//          {until: 10T, constant: 2.2e-4},
//          {until: 14.3T, cosine: [2.2e-4, 2.2e-5]}]
// `until` is a token count, optionally with a K/M/B/T suffix (powers of 1000).
struct Schedule {
  enum class Shape { kConstant, kLinear, kCosine };
  struct Segment {
    double end_tokens = 0;
    Shape shape = Shape::kConstant;
    double start_value = 0;
    double end_value = 0;
  };
  std::vector<Segment> segments;

  static Schedule Constant(double v) { return Schedule{{Segment{0, Shape::kConstant, v, v}}}; }
  double Value(double tokens) const;
};

// Global batch grows linearly (in consumed tokens) from `start` sequences to
// training.global_batch_size over the first `tokens`, in multiples of micro_batch x dp.
struct BatchRamp {
  int64_t start = 0;
  double tokens = 0;
};

struct TrainingConfig {
  int64_t steps = 100;
  uint64_t seed = 1234;
  int64_t seq_len = 128;
  int64_t micro_batch_size = 4;
  int64_t global_batch_size = 8;  // sequences per optimizer step
  std::string precision = "fp32";  // fp32 | bf16 | fp8
  // Where the step runs: cpu (the module model, any layout), cuda (every layer on each
  // data-parallel rank's GPU, trainer/device_train.h), auto (cuda when DevicePathBlockers is empty
  // and a GPU is visible, else cpu).
  std::string device = "auto";
  Schedule mtp_lambda = Schedule::Constant(0.3);
  Schedule bias_update_speed = Schedule::Constant(0.001);  // gamma
  double balance_loss_alpha = 0.0001;
  std::optional<BatchRamp> batch_ramp;
  int64_t eval_interval = 0;  // steps; 0 = only at the end
  int64_t eval_batches = 8;
  int64_t max_consecutive_skips = 5;  // non-finite steps in a row before the run stops
  int64_t fault_inject_nan_step = -1;  // tests: force a NaN loss and gradient at this step
  int64_t fault_inject_nan_count = 1;  // ... and at the count - 1 steps after it
  std::string init_from;  // Hugging Face directory to fine-tune from
  std::string recompute = "none";  // none | selective (RMSNorm, MLA up-proj, SwiGLU)
  int64_t generate_tokens = 48;  // sample printed at the end of `train` (0 = none)
  std::string generate_prompt = "The";
};

struct OptimizerConfig {
  Schedule lr = Schedule::Constant(1e-3);
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  double grad_clip = 1.0;  // global norm; 0 = off
  std::string moment_dtype = "fp32";  // fp32 | bf16
};

struct DataConfig {
  // Dataset prefixes (PREFIX.bin/.idx). Several train prefixes blend by weight.
  std::vector<std::string> train_path;
  std::vector<double> train_weights;
  std::string val_path;
  std::string tokenizer;  // SentencePiece .model (default: <train prefix stem>.model)
};

struct ParallelConfig {
  int64_t pp = 1;
  int64_t ep = 1;
  int64_t dp = 1;
  std::string schedule = "1f1b";  // 1f1b | dualpipe
  int64_t ranks_per_node = 0;  // 0 = from the launcher
  // Seconds any rank may wait in one communication call before the job is ended with a
  // message naming it (parallel/communicator_watchdog.h); 0 = wait forever.
  double timeout_s = 600;
};

struct CheckpointConfig {
  std::string dir;  // empty = no checkpoints
  int64_t interval = 0;  // steps; 0 = only at the end
  int64_t keep_last = 3;
  std::string dtype = "fp32";  // fp32 | bf16 (model weights; optimizer state stays fp32)
  std::string resume = "none";  // none | auto | path to a step directory
};

struct LoggingConfig {
  int64_t interval = 10;  // steps between progress lines
  std::string metrics_file;  // JSON lines
  std::string tensorboard_dir;
  // Steps between the per-layer, per-expert load and bias records in metrics_file (what
  // `moetrain report` draws its heatmaps from); 0 = none.
  int64_t expert_load_interval = 10;
};

struct Config {
  std::string source;  // the file it came from, for messages
  ModelConfig model;
  TrainingConfig training;
  OptimizerConfig optimizer;
  DataConfig data;
  ParallelConfig parallel;
  CheckpointConfig checkpoint;
  LoggingConfig logging;
};

// Reads `path`, applies `overrides` ("training.steps=10", YAML-typed values), validates.
absl::StatusOr<Config> LoadConfig(const std::string& path,
                                  const std::vector<std::string>& overrides = {});
// Parses YAML text (tests, embedded configs); `source` names it in messages.
absl::StatusOr<Config> ParseConfig(const std::string& yaml_text, const std::string& source,
                                   const std::vector<std::string>& overrides = {});
// The consistency rules between keys (also called by the parsers above).
absl::Status ValidateConfig(const Config& config);

// What in `config` keeps a run off the device path (training.device cuda), one phrase each
// ("parallel.schedule is dualpipe ..."): it runs pipeline stages with the 1F1B schedule
// (experts split over EP ranks when parallel.ep > 1), in any training.precision and
// optimizer.moment_dtype. Empty when the config allows it.
std::vector<std::string> DevicePathBlockers(const Config& config);

// Hugging Face config.json <-> ModelConfig. FromHfJson ignores keys HF defines but we do
// not use (auto_map, quantization_config, ...) and rejects wrong types.
absl::StatusOr<ModelConfig> ModelConfigFromHfJson(const nlohmann::json& j, const std::string& source);
nlohmann::json ModelConfigToHfJson(const ModelConfig& m);

// "14.8T" -> 1.48e13; plain numbers pass through.
absl::StatusOr<double> ParseTokenCount(const std::string& text);

}  // namespace mt

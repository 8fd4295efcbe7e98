// tests/trainer/config_validate_test.cc: one negative test per ValidateConfig rule.
//
// Each case breaks one rule of an otherwise valid config through --set and checks that the
// error is the one for that rule (its key and wording), in the one-line format
// "<where>: <key>: <what>; expected <what>". The base config is checked to pass, so every
// failure below is caused by its override alone.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "trainer/config.h"

namespace mt {
namespace {

constexpr char kBase[] = R"(
model:
  vocab_size: 4096
  hidden_size: 128
  intermediate_size: 384
  moe_intermediate_size: 96
  num_hidden_layers: 4
  num_attention_heads: 4
  num_key_value_heads: 4
  n_routed_experts: 8
  n_shared_experts: 1
  num_experts_per_tok: 2
  n_group: 4
  topk_group: 2
  first_k_dense_replace: 1
  q_lora_rank: 96
  kv_lora_rank: 64
  qk_nope_head_dim: 32
  qk_rope_head_dim: 16
  v_head_dim: 32
  num_nextn_predict_layers: 1
  max_position_embeddings: 2048
  rope_scaling: {type: yarn, factor: 4, beta_fast: 32, beta_slow: 1, mscale: 1.0,
                 mscale_all_dim: 1.0, original_max_position_embeddings: 512}
  bos_token_id: 1
  eos_token_id: 2
training:
  steps: 10
  seq_len: 128
  micro_batch_size: 16
  global_batch_size: 32
  batch_ramp: {start: 16, tokens: 1M}
optimizer:
  lr: [{until: 200K, linear: [0, 3e-3]}, {until: 5M, cosine: [3e-3, 3e-4]}]
data:
  train_path: data/cache/brown-train
checkpoint:
  dir: runs/test
)";

struct RuleCase {
  const char* name;
  std::vector<std::string> overrides;
  const char* expected;  // a substring of the one error message
};

class RuleTest : public testing::TestWithParam<RuleCase> {};

TEST(RuleBase, BaseConfigIsValid) {
  absl::StatusOr<Config> c = ParseConfig(kBase, "base.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(ValidateConfig(*c).ok());
}

TEST(RuleBase, DevicePathTakesExpertParallelism) {
  // parallel.ep > 1 runs on the device path (trainer/device_moe_ep.cc): not a blocker.
  absl::StatusOr<Config> c = ParseConfig(
      kBase, "base.yaml",
      {"training.device=cuda", "training.micro_batch_size=8", "parallel.dp=2", "parallel.ep=2"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(DevicePathBlockers(*c).empty());
  EXPECT_TRUE(ValidateConfig(*c).ok());
}

TEST(RuleBase, DevicePathTakesPipelineStagesUnder1F1B) {
  // parallel.pp > 1 with the 1F1B schedule runs on the device path
  // (trainer/device_pipeline.h), with data and expert parallelism inside each stage.
  absl::StatusOr<Config> c = ParseConfig(kBase, "base.yaml",
                                         {"training.device=cuda", "training.micro_batch_size=8",
                                          "parallel.pp=2", "parallel.dp=2", "parallel.ep=2"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(DevicePathBlockers(*c).empty());
  EXPECT_TRUE(ValidateConfig(*c).ok());
}

TEST_P(RuleTest, IsRejected) {
  const RuleCase& rc = GetParam();
  absl::StatusOr<Config> c = ParseConfig(kBase, "base.yaml", rc.overrides);
  ASSERT_FALSE(c.ok()) << "accepted: " << rc.name;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(c.status().message());
  EXPECT_NE(msg.find(rc.expected), std::string::npos) << msg;
  EXPECT_NE(msg.find("; expected "), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

const RuleCase kRules[] = {
    // Sizes.
    {"vocab_size", {"model.vocab_size=0"}, "model.vocab_size: got 0; expected an integer >= 1"},
    {"hidden_size", {"model.hidden_size=0"}, "model.hidden_size: got 0"},
    {"intermediate_size", {"model.intermediate_size=0"}, "model.intermediate_size: got 0"},
    {"moe_intermediate_size",
     {"model.moe_intermediate_size=0"},
     "model.moe_intermediate_size: got 0"},
    {"num_hidden_layers", {"model.num_hidden_layers=0"}, "model.num_hidden_layers: got 0"},
    {"num_attention_heads", {"model.num_attention_heads=0"}, "model.num_attention_heads: got 0"},
    {"num_key_value_heads", {"model.num_key_value_heads=0"}, "model.num_key_value_heads: got 0"},
    {"n_routed_experts", {"model.n_routed_experts=0"}, "model.n_routed_experts: got 0"},
    {"num_experts_per_tok", {"model.num_experts_per_tok=0"}, "model.num_experts_per_tok: got 0"},
    {"n_group", {"model.n_group=0"}, "model.n_group: got 0"},
    {"topk_group", {"model.topk_group=0"}, "model.topk_group: got 0"},
    {"moe_layer_freq", {"model.moe_layer_freq=0"}, "model.moe_layer_freq: got 0"},
    {"kv_lora_rank", {"model.kv_lora_rank=0"}, "model.kv_lora_rank: got 0"},
    {"qk_nope_head_dim", {"model.qk_nope_head_dim=0"}, "model.qk_nope_head_dim: got 0"},
    {"qk_rope_head_dim", {"model.qk_rope_head_dim=0"}, "model.qk_rope_head_dim: got 0"},
    {"v_head_dim", {"model.v_head_dim=0"}, "model.v_head_dim: got 0"},
    {"max_position_embeddings",
     {"model.max_position_embeddings=0"},
     "model.max_position_embeddings: got 0"},
    {"n_shared_experts",
     {"model.n_shared_experts=-1"},
     "model.n_shared_experts: got -1; expected an integer >= 0"},
    {"q_lora_rank", {"model.q_lora_rank=-1"}, "model.q_lora_rank: got -1"},
    {"first_k_dense_replace_negative",
     {"model.first_k_dense_replace=-1"},
     "model.first_k_dense_replace: got -1"},
    {"num_nextn_predict_layers",
     {"model.num_nextn_predict_layers=-1"},
     "model.num_nextn_predict_layers: got -1"},
    {"routed_scaling_factor",
     {"model.routed_scaling_factor=0"},
     "model.routed_scaling_factor: got 0; expected a number > 0"},
    {"rope_theta", {"model.rope_theta=-1"}, "model.rope_theta: got -1"},
    {"rms_norm_eps", {"model.rms_norm_eps=0"}, "model.rms_norm_eps: got 0"},
    {"initializer_range", {"model.initializer_range=0"}, "model.initializer_range: got 0"},
    {"attention_dropout", {"model.attention_dropout=0.1"}, "model.attention_dropout: got 0.1"},
    // Routing.
    {"experts_by_groups",
     {"model.n_routed_experts=10"},
     "model.n_routed_experts (10) is not divisible by model.n_group (4)"},
    {"topk_group_by_n_group",
     {"model.topk_group=5"},
     "model.topk_group (5) is larger than model.n_group (4)"},
    {"experts_per_tok_by_experts",
     {"model.num_experts_per_tok=9"},
     "model.num_experts_per_tok (9) is larger than model.n_routed_experts (8)"},
    {"experts_per_tok_by_kept_groups",
     {"model.num_experts_per_tok=5"},
     "model.num_experts_per_tok (5) is more than the experts in the kept groups"},
    {"kv_heads_equal_heads",
     {"model.num_key_value_heads=2"},
     "model.num_key_value_heads (2) differs from model.num_attention_heads (4)"},
    {"rope_dim_even",
     {"model.qk_rope_head_dim=15"},
     "model.qk_rope_head_dim: got 15, which is odd"},
    {"dense_layers_by_layers",
     {"model.first_k_dense_replace=5"},
     "model.first_k_dense_replace (5) is larger than model.num_hidden_layers (4)"},
    {"scoring_func",
     {"model.scoring_func=softmax"},
     "model.scoring_func: got \"softmax\"; expected one of sigmoid"},
    {"topk_method", {"model.topk_method=greedy"}, "model.topk_method: got \"greedy\""},
    {"hidden_act", {"model.hidden_act=gelu"}, "model.hidden_act: got \"gelu\""},
    {"tie_word_embeddings",
     {"model.tie_word_embeddings=true"},
     "model.tie_word_embeddings: got true"},
    {"attention_bias", {"model.attention_bias=true"}, "model.attention_bias: got true"},
    {"bos_token_id", {"model.bos_token_id=4096"}, "model.bos_token_id: got 4096"},
    {"eos_token_id", {"model.eos_token_id=-1"}, "model.eos_token_id: got -1"},
    {"torch_dtype", {"model.torch_dtype=int8"}, "model.torch_dtype: got \"int8\""},
    // YaRN.
    {"rope_factor",
     {"model.rope_scaling={type: yarn, factor: 0.5}"},
     "model.rope_scaling.factor: got 0.5; expected a context extension factor >= 1"},
    {"rope_beta_slow",
     {"model.rope_scaling={type: yarn, factor: 4, beta_slow: 0}"},
     "model.rope_scaling.beta_slow: got 0"},
    {"rope_beta_order",
     {"model.rope_scaling={type: yarn, factor: 4, beta_fast: 1, beta_slow: 2}"},
     "model.rope_scaling.beta_fast (1) is not above beta_slow (2)"},
    {"rope_mscale",
     {"model.rope_scaling={type: yarn, mscale: -1}"},
     "model.rope_scaling.mscale: got -1"},
    {"rope_mscale_all_dim",
     {"model.rope_scaling={type: yarn, mscale_all_dim: -1}"},
     "model.rope_scaling.mscale_all_dim: got -1"},
    {"rope_original_max",
     {"model.rope_scaling={type: yarn, original_max_position_embeddings: 0}"},
     "model.rope_scaling.original_max_position_embeddings: got 0"},
    // Parallelism.
    {"pp", {"parallel.pp=0"}, "parallel.pp: got 0; expected an integer >= 1"},
    {"ep", {"parallel.ep=0"}, "parallel.ep: got 0"},
    {"dp", {"parallel.dp=0"}, "parallel.dp: got 0"},
    {"ranks_per_node", {"parallel.ranks_per_node=-1"}, "parallel.ranks_per_node: got -1"},
    {"dp_by_ep",
     {"parallel.dp=2", "parallel.ep=4"},
     "parallel.dp (2) is not divisible by parallel.ep (4)"},
    {"experts_by_ep",
     {"parallel.dp=3", "parallel.ep=3"},
     "model.n_routed_experts (8) is not divisible by parallel.ep (3)"},
    {"layers_by_pp", {"parallel.pp=5"}, "parallel.pp (5) is more than model.num_hidden_layers (4)"},
    {"schedule",
     {"parallel.schedule=gpipe"},
     "parallel.schedule: got \"gpipe\"; expected one of 1f1b, dualpipe"},
    {"dualpipe_odd_pp",
     {"parallel.schedule=dualpipe", "parallel.pp=3"},
     "parallel.schedule dualpipe with an odd parallel.pp (3)"},
    {"dualpipe_odd_micro_batches",
     {"parallel.schedule=dualpipe", "parallel.pp=2", "training.global_batch_size=48",
      "training.batch_ramp=null"},
     "parallel.schedule dualpipe with 3 micro-batches per step"},
    {"dualpipe_micro_batches_below_pp",
     {"parallel.schedule=dualpipe", "parallel.pp=4", "training.batch_ramp=null"},
     "parallel.schedule dualpipe with 2 micro-batches per step"},
    // Training.
    {"steps", {"training.steps=0"}, "training.steps: got 0; expected an integer >= 1"},
    {"seq_len", {"training.seq_len=0"}, "training.seq_len: got 0"},
    {"seq_len_by_positions",
     {"training.seq_len=4096"},
     "training.seq_len (4096) exceeds model.max_position_embeddings (2048)"},
    {"micro_batch_size", {"training.micro_batch_size=0"}, "training.micro_batch_size: got 0"},
    {"global_batch_size", {"training.global_batch_size=0"}, "training.global_batch_size: got 0"},
    {"global_by_micro_dp",
     {"training.global_batch_size=40"},
     "training.global_batch_size (40) is not a multiple of training.micro_batch_size (16) x "
     "parallel.dp (1) = 16"},
    {"precision",
     {"training.precision=fp16"},
     "training.precision: got \"fp16\"; expected one of fp32, bf16, fp8"},
    {"device",
     {"training.device=gpu"},
     "training.device: got \"gpu\"; expected one of auto, cpu, cuda"},
    {"device_cuda_dualpipe",
     {"training.device=cuda", "parallel.pp=2", "parallel.schedule=dualpipe",
      "training.micro_batch_size=8", "training.batch_ramp=null"},
     "training.device: cuda, but parallel.schedule is dualpipe, which the device path does not "
     "run (1f1b does); expected parallel.schedule 1f1b"},
    {"device_cuda_dualpipe_with_experts_split",
     {"training.device=cuda", "parallel.pp=2", "parallel.schedule=dualpipe", "parallel.dp=2",
      "parallel.ep=2", "training.micro_batch_size=4", "training.batch_ramp=null"},
     "training.device: cuda, but parallel.schedule is dualpipe"},
    {"mtp_lambda", {"training.mtp_lambda=-0.1"}, "training.mtp_lambda: segment 0 goes from -0.1"},
    {"bias_update_speed",
     {"training.bias_update_speed=[{until: 1T, constant: -1}]"},
     "training.bias_update_speed: segment 0 goes from -1"},
    {"balance_loss_alpha",
     {"training.balance_loss_alpha=-1"},
     "training.balance_loss_alpha: got -1"},
    {"ramp_start",
     {"training.batch_ramp={start: 0, tokens: 1M}"},
     "training.batch_ramp.start: got 0"},
    {"ramp_start_multiple",
     {"training.batch_ramp={start: 8, tokens: 1M}"},
     "training.batch_ramp.start (8) is not a multiple of micro_batch_size x dp (16)"},
    {"ramp_start_by_global",
     {"training.batch_ramp={start: 48, tokens: 1M}"},
     "training.batch_ramp.start (48) exceeds training.global_batch_size (32)"},
    {"ramp_tokens",
     {"training.batch_ramp={start: 16, tokens: 0}"},
     "training.batch_ramp.tokens: got 0"},
    {"eval_interval", {"training.eval_interval=-1"}, "training.eval_interval: got -1"},
    {"eval_batches", {"training.eval_batches=-1"}, "training.eval_batches: got -1"},
    {"max_consecutive_skips",
     {"training.max_consecutive_skips=-1"},
     "training.max_consecutive_skips: got -1"},
    {"fault_inject_nan_step",
     {"training.fault_inject_nan_step=-2"},
     "training.fault_inject_nan_step: got -2"},
    {"fault_inject_nan_count",
     {"training.fault_inject_nan_count=0"},
     "training.fault_inject_nan_count: got 0"},
    {"recompute",
     {"training.recompute=full"},
     "training.recompute: got \"full\"; expected one of none, selective"},
    {"generate_tokens", {"training.generate_tokens=-1"}, "training.generate_tokens: got -1"},
    // Optimizer.
    {"lr", {"optimizer.lr=-1e-3"}, "optimizer.lr: segment 0 goes from -0.001"},
    {"beta1", {"optimizer.beta1=1.0"}, "optimizer.beta1: got 1; expected a number in [0, 1)"},
    {"beta2", {"optimizer.beta2=-0.1"}, "optimizer.beta2: got -0.1"},
    {"eps", {"optimizer.eps=0"}, "optimizer.eps: got 0; expected a number > 0"},
    {"weight_decay", {"optimizer.weight_decay=-0.1"}, "optimizer.weight_decay: got -0.1"},
    {"grad_clip",
     {"optimizer.grad_clip=-1"},
     "optimizer.grad_clip: got -1; expected a number >= 0"},
    {"moment_dtype",
     {"optimizer.moment_dtype=fp16"},
     "optimizer.moment_dtype: got \"fp16\"; expected one of fp32, bf16"},
    // Data, checkpoints, logging.
    {"train_path_missing", {"data.train_path=null"}, "data.train_path: no dataset given"},
    {"train_path_empty_prefix", {"data.train_path=\"\""}, "data.train_path: prefix 0 is empty"},
    {"checkpoint_interval", {"checkpoint.interval=-1"}, "checkpoint.interval: got -1"},
    {"keep_last",
     {"checkpoint.keep_last=0"},
     "checkpoint.keep_last: got 0; expected an integer >= 1"},
    {"checkpoint_dtype",
     {"checkpoint.dtype=fp8"},
     "checkpoint.dtype: got \"fp8\"; expected one of fp32, bf16"},
    {"resume_empty", {"checkpoint.resume=\"\""}, "checkpoint.resume: got an empty string"},
    {"resume_auto_without_dir",
     {"checkpoint.resume=auto", "checkpoint.dir=null"},
     "checkpoint.resume: auto with no checkpoint.dir"},
    {"logging_interval",
     {"logging.interval=0"},
     "logging.interval: got 0; expected an integer >= 1"},
};

INSTANTIATE_TEST_SUITE_P(ConfigRules, RuleTest, testing::ValuesIn(kRules),
                         [](const testing::TestParamInfo<RuleCase>& info) {
                           return std::string(info.param.name);
                         });

// Rules the YAML reader already enforces, checked on configs built in code.
Config ValidBase() {
  absl::StatusOr<Config> c = ParseConfig(kBase, "base.yaml");
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : Config();
}

TEST(RuleInCode, RopeScalingTypeMustBeYarn) {
  Config c = ValidBase();
  c.model.rope_scaling->type = "linear";
  absl::Status s = ValidateConfig(c);
  EXPECT_EQ(s.message(),
            "base.yaml: model.rope_scaling.type: got \"linear\"; expected one of yarn");
}

TEST(RuleInCode, ScheduleMustIncrease) {
  Config c = ValidBase();
  c.optimizer.lr.segments[1].end_tokens = c.optimizer.lr.segments[0].end_tokens;
  EXPECT_NE(ValidateConfig(c).message().find("optimizer.lr: segment 1 ends at 200000 tokens"),
            std::string::npos)
      << ValidateConfig(c);
}

TEST(RuleInCode, ScheduleMustHaveSegments) {
  Config c = ValidBase();
  c.training.mtp_lambda.segments.clear();
  EXPECT_NE(ValidateConfig(c).message().find("training.mtp_lambda: the schedule has no segments"),
            std::string::npos);
}

TEST(RuleInCode, OneWeightPerPrefix) {
  Config c = ValidBase();
  c.data.train_weights.push_back(0.5);
  EXPECT_NE(ValidateConfig(c).message().find("data.train_path: 1 prefixes but 2 weights"),
            std::string::npos);
}

TEST(RuleInCode, WeightsPositive) {
  Config c = ValidBase();
  c.data.train_weights[0] = 0;
  EXPECT_NE(ValidateConfig(c).message().find("data.train_path: weight 0 is 0"), std::string::npos);
}

TEST(RuleInCode, MessagesPointAtTheLineOfTheKey) {
  // The same rule broken in the file rather than by --set names the line that set the key.
  std::string text = kBase;
  text.replace(text.find("n_group: 4"), 10, "n_group: 3");
  absl::StatusOr<Config> c = ParseConfig(text, "base.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(),
            "base.yaml:10: model.n_routed_experts: model.n_routed_experts (8) is not divisible "
            "by model.n_group (3); expected n_routed_experts a multiple of n_group (experts split "
            "evenly into groups)");
}

TEST(RuleInCode, CrossKeyRulesPointAtTheSetThatBrokeThem) {
  // n_routed_experts comes from the file, but the --set of n_group is what broke the rule.
  absl::StatusOr<Config> c = ParseConfig(kBase, "base.yaml", {"model.n_group=3"});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message().rfind(
                "--set model.n_group: model.n_routed_experts: model.n_routed_experts (8) is not "
                "divisible by model.n_group (3)",
                0),
            0u)
      << c.status();
}

}  // namespace
}  // namespace mt

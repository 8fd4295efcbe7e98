// tests/trainer/config_test.cc: reading configs: the embedded default, key/type errors with
// their lines, --set overrides, hf_config, HF config.json round trips, schedules, token counts.
// (The validation rules, one test each, are in config_validate_test.cc.)
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "trainer/config.h"

namespace mt {
namespace {

// A minimal valid config; `extra` is appended (YAML sections).
std::string Minimal(const std::string& extra = "") {
  return R"(model:
  vocab_size: 256
  hidden_size: 32
  intermediate_size: 64
  moe_intermediate_size: 16
  num_hidden_layers: 2
  num_attention_heads: 2
  num_key_value_heads: 2
  n_routed_experts: 4
  num_experts_per_tok: 2
  n_group: 2
  topk_group: 2
  first_k_dense_replace: 1
  q_lora_rank: 16
  kv_lora_rank: 16
  qk_nope_head_dim: 8
  qk_rope_head_dim: 4
  v_head_dim: 8
  max_position_embeddings: 256
data:
  train_path: d/train
)" + extra;
}

std::string ErrorOf(const std::string& text, const std::vector<std::string>& overrides = {}) {
  absl::StatusOr<Config> c = ParseConfig(text, "t.yaml", overrides);
  EXPECT_FALSE(c.ok()) << "accepted:\n" << text;
  if (c.ok()) return "";
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(c.status().message());
}

TEST(Config, LoadsTheEmbeddedDefault) {
  absl::StatusOr<Config> c = LoadConfig("configs/default.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->source, "configs/default.yaml");
  EXPECT_EQ(c->model.vocab_size, 4096);
  EXPECT_EQ(c->model.q_lora_rank, 96);
  EXPECT_EQ(c->model.n_group, 4);
  EXPECT_FALSE(c->model.rope_scaling.has_value());
  EXPECT_EQ(c->model.num_moe_layers(), 3);
  EXPECT_EQ(c->training.global_batch_size, 32);
  EXPECT_EQ(c->training.precision, "fp32");
  EXPECT_EQ(c->training.device, "auto");
  ASSERT_EQ(c->optimizer.lr.segments.size(), 2u);
  EXPECT_EQ(c->optimizer.lr.Value(0), 0);
  EXPECT_DOUBLE_EQ(c->optimizer.lr.Value(100e3), 3e-3);
  EXPECT_EQ(c->data.train_path, std::vector<std::string>{"data/cache/brown-train"});
  EXPECT_EQ(c->data.train_weights, std::vector<double>{1.0});
  EXPECT_EQ(c->parallel.schedule, "1f1b");
  EXPECT_EQ(c->checkpoint.resume, "none");
  EXPECT_EQ(c->logging.metrics_file, "runs/default/metrics.jsonl");
}

TEST(Config, MissingFileNamesIt) {
  absl::StatusOr<Config> c = LoadConfig("no/such/config.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("no/such/config.yaml: cannot open"), std::string::npos);
}

TEST(Config, YamlSyntaxErrorHasItsLine) {
  const std::string msg = ErrorOf("model:\n  vocab_size: 1\ntraining: [1, 2\n");
  EXPECT_EQ(msg.rfind("t.yaml:", 0), 0u) << msg;
  EXPECT_NE(msg.find("invalid YAML"), std::string::npos) << msg;
}

TEST(Config, ModelSectionIsRequired) {
  EXPECT_EQ(ErrorOf("training: {steps: 3}\n").rfind("t.yaml: model: the section is missing", 0),
            0u);
}

TEST(Config, UnknownKeyNamesLineAndKnownKeys) {
  const std::string msg = ErrorOf(Minimal("training:\n  steps: 5\n  stpes: 10\n"));
  EXPECT_EQ(msg.rfind("t.yaml:24: training.stpes: unknown key training.stpes (did you mean "
                      "steps?); expected one of the known keys in training: steps, seed,",
                      0),
            0u)
      << msg;
}

TEST(Config, UnknownSectionAndUnknownModelKey) {
  EXPECT_NE(ErrorOf(Minimal("trainig:\n  steps: 1\n"))
                .find("t.yaml:22: trainig: unknown key trainig (did you mean training?)"),
            std::string::npos);
  EXPECT_NE(ErrorOf(Minimal(), {"model.hiden_size=3"})
                .find("--set model.hiden_size: model.hiden_size: unknown key model.hiden_size "
                      "(did you mean hidden_size?)"),
            std::string::npos);
}

TEST(Config, WrongTypesNameTheLine) {
  EXPECT_EQ(ErrorOf(Minimal("training:\n  steps: ten\n")),
            "t.yaml:23: training.steps: got ten; expected an integer");
  // A float where an integer is expected is an error, not a truncation.
  EXPECT_EQ(ErrorOf(Minimal("training:\n  seed: 1\n  steps: 1.5\n")),
            "t.yaml:24: training.steps: got 1.5; expected an integer");
  EXPECT_EQ(ErrorOf(Minimal("training:\n  steps: \"10\"\n")),
            "t.yaml:23: training.steps: got the string \"10\"; expected an integer");
  EXPECT_EQ(ErrorOf(Minimal("optimizer:\n  beta1: [0.9]\n")),
            "t.yaml:23: optimizer.beta1: got a list; expected a finite number");
  EXPECT_EQ(ErrorOf(Minimal("optimizer:\n  eps: .nan\n")),
            "t.yaml:23: optimizer.eps: got .nan; expected a finite number");
  EXPECT_EQ(ErrorOf(Minimal(), {"model.norm_topk_prob=yes"}),
            "--set model.norm_topk_prob: model.norm_topk_prob: got yes; expected true or false");
  EXPECT_EQ(ErrorOf(Minimal("checkpoint: 5\n"))
                .rfind("t.yaml:22: checkpoint: got 5; expected a "
                       "map of the keys in checkpoint: dir,",
                       0),
            0u);
  EXPECT_EQ(ErrorOf(Minimal("parallel:\n  pp: 99999999999999999999\n")),
            "t.yaml:23: parallel.pp: got 99999999999999999999, which is out of range; expected "
            "a 64-bit integer");
}

TEST(Config, DuplicateKeyIsAnError) {
  EXPECT_EQ(ErrorOf(Minimal("training:\n  steps: 1\n  steps: 2\n")),
            "t.yaml:24: training.steps: the key appears twice; expected each key once");
}

TEST(Config, HfNullsAndRopeScaling) {
  absl::StatusOr<Config> c = ParseConfig(
      Minimal("parallel: {}\n"), "t.yaml",
      {"model.q_lora_rank=null",
       "model.rope_scaling={rope_type: yarn, type: yarn, factor: 40, mscale_all_dim: 1.0}",
       "model.architectures=[DeepseekV3ForCausalLM]", "model.auto_map={a: b}",
       "model.transformers_version=\"4.33.1\"", "model.ep_size=1", "model.use_cache=true"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model.q_lora_rank, 0);
  ASSERT_TRUE(c->model.rope_scaling.has_value());
  EXPECT_EQ(c->model.rope_scaling->factor, 40);
  EXPECT_EQ(c->model.rope_scaling->mscale_all_dim, 1.0);
  EXPECT_EQ(c->model.rope_scaling->beta_fast, 32);
  EXPECT_EQ(ErrorOf(Minimal(), {"model.rope_scaling={type: linear, factor: 2}"}),
            "--set model.rope_scaling: model.rope_scaling.type: got \"linear\"; expected \"yarn\"");
  EXPECT_NE(ErrorOf(Minimal(), {"model.rope_scaling={factor: 2}"})
                .find("model.rope_scaling: no type given"),
            std::string::npos);
  EXPECT_NE(ErrorOf(Minimal(), {"model.rope_scaling={type: yarn, fctor: 2}"})
                .find("unknown key model.rope_scaling.fctor (did you mean factor?)"),
            std::string::npos);
  EXPECT_NE(ErrorOf(Minimal(), {"model.rope_interleave=false"}).find("got false (half-split"),
            std::string::npos);
}

TEST(Config, OverridesApplyBeforeValidation) {
  absl::StatusOr<Config> c = ParseConfig(
      Minimal("training:\n  steps: 5\n"), "t.yaml",
      {"training.steps=10", "optimizer.lr=[{until: 1M, linear: [0, 1e-3]}]", "data.train_path=foo",
       "checkpoint.dir=runs/x", "training.batch_ramp={start: 4, tokens: 2M}",
       "training.micro_batch_size=2", "training.global_batch_size=8"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->training.steps, 10);
  ASSERT_EQ(c->optimizer.lr.segments.size(), 1u);
  EXPECT_EQ(c->optimizer.lr.segments[0].end_tokens, 1e6);
  EXPECT_DOUBLE_EQ(c->optimizer.lr.Value(5e5), 5e-4);
  EXPECT_EQ(c->data.train_path, std::vector<std::string>{"foo"});
  EXPECT_EQ(c->checkpoint.dir, "runs/x");
  ASSERT_TRUE(c->training.batch_ramp.has_value());
  EXPECT_EQ(c->training.batch_ramp->start, 4);
  EXPECT_EQ(c->training.batch_ramp->tokens, 2e6);
}

TEST(Config, OverrideErrorsNameTheSet) {
  EXPECT_EQ(ErrorOf(Minimal("training:\n  steps: 5\n"), {"training.steps=abc"}),
            "--set training.steps: training.steps: got abc; expected an integer");
  EXPECT_NE(ErrorOf(Minimal(), {"training.stpes=3"})
                .find("--set training.stpes: training.stpes: unknown key training.stpes"),
            std::string::npos);
  EXPECT_NE(ErrorOf(Minimal(), {"nosuch.key=3"}).find("--set nosuch.key: nosuch: unknown key"),
            std::string::npos);
  EXPECT_EQ(ErrorOf(Minimal(), {"training.steps"}),
            "--set training.steps: not a key.path=value override; expected e.g. --set "
            "training.steps=10");
  EXPECT_NE(ErrorOf(Minimal(), {"training.steps=[1, 2"})
                .find("--set training.steps: "
                      "training.steps: cannot parse"),
            std::string::npos);
  EXPECT_NE(ErrorOf(Minimal("training:\n  steps: 5\n"), {"training.steps.x=1"})
                .find("--set training.steps.x: training.steps: got 5, which has no key x"),
            std::string::npos);
  // Validation rules broken by a --set point at the --set.
  EXPECT_EQ(ErrorOf(Minimal(), {"training.steps=0"}),
            "--set training.steps: training.steps: got 0; expected an integer >= 1");
}

TEST(Config, TrainPathForms) {
  absl::StatusOr<Config> c = ParseConfig(Minimal(), "t.yaml", {"data.train_path=[a, b]"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->data.train_path, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(c->data.train_weights, (std::vector<double>{0.5, 0.5}));
  c = ParseConfig(Minimal(), "t.yaml", {"data.train_path=[0.3, a, 0.9, b]"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->data.train_path, (std::vector<std::string>{"a", "b"}));
  EXPECT_DOUBLE_EQ(c->data.train_weights[0], 0.25);
  EXPECT_DOUBLE_EQ(c->data.train_weights[1], 0.75);
  EXPECT_NE(ErrorOf(Minimal(), {"data.train_path=[0.3, a, 0.7]"}).find("odd length 3"),
            std::string::npos);
  EXPECT_NE(ErrorOf(Minimal(), {"data.train_path=[0.3, a, 0, b]"})
                .find("data.train_path[2]: got 0; expected a weight > 0"),
            std::string::npos);
  EXPECT_NE(ErrorOf(Minimal(), {"data.train_path=[0.3, a, b, 0.7]"})
                .find("data.train_path[2]: got b; expected a weight > 0"),
            std::string::npos);
  EXPECT_NE(ErrorOf(Minimal(), {"data.train_path=[a, [b]]"})
                .find("data.train_path[1]: got a list; expected a dataset prefix"),
            std::string::npos);
}

TEST(Config, BatchRampNeedsBothKeys) {
  EXPECT_NE(ErrorOf(Minimal(), {"training.batch_ramp={start: 4}"})
                .find("training.batch_ramp: tokens is missing"),
            std::string::npos);
  EXPECT_NE(ErrorOf(Minimal(), {"training.batch_ramp={start: 4, tokens: lots}"})
                .find("training.batch_ramp.tokens: got lots; expected a token count"),
            std::string::npos);
}

TEST(Config, FaultInjectionKeys) {
  absl::StatusOr<Config> c = ParseConfig(Minimal(), "t.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->training.fault_inject_nan_step, -1);  // off by default
  EXPECT_EQ(c->training.fault_inject_nan_count, 1);
  c = ParseConfig(Minimal("training:\n  fault_inject_nan_step: 5\n  fault_inject_nan_count: 3\n"),
                  "t.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->training.fault_inject_nan_step, 5);
  EXPECT_EQ(c->training.fault_inject_nan_count, 3);
  EXPECT_NE(ErrorOf(Minimal(), {"training.fault_inject_nan_count=two"})
                .find("training.fault_inject_nan_count: got two; expected an integer"),
            std::string::npos);
}

TEST(Config, NumMoeLayers) {
  ModelConfig m;  // DeepSeek-V3: 61 layers, the first 3 dense
  EXPECT_EQ(m.num_moe_layers(), 58);
  m.moe_layer_freq = 2;
  EXPECT_EQ(m.num_moe_layers(), 29);  // 4, 6, ..., 60
  m.first_k_dense_replace = 61;
  EXPECT_EQ(m.num_moe_layers(), 0);
}

}  // namespace
}  // namespace mt

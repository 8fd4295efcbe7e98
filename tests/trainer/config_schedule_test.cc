// tests/trainer/config_schedule_test.cc: token counts and piecewise schedules, including
// DeepSeek-V3's lr, MTP lambda and bias-update gamma schedules (mission.md §1.2, §1.3, §1.6)
// written in our YAML.
#include <cmath>
#include <string>

#include "gtest/gtest.h"
#include "trainer/config.h"

namespace mt {
namespace {

constexpr char kModel[] = R"(model:
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
  max_position_embeddings: 256
data: {train_path: d/train}
)";

// DeepSeek-V3: warm-up 0 -> 2.2e-4 over 2K steps (2000 x 3072 x 4K ~ 25B tokens), constant to
// 10T, cosine to 2.2e-5 over 4.3T, then 2.2e-5 for 333B and 7.3e-6 for the last 167B.
// lambda 0.3 for 10T then 0.1; gamma 0.001 for 14.3T then 0.
constexpr char kDeepSeekV3[] = R"(
optimizer:
  lr:
    - {until: 25B, linear: [0, 2.2e-4]}
    - {until: 10T, constant: 2.2e-4}
    - {until: 14.3T, cosine: [2.2e-4, 2.2e-5]}
    - {until: 14.633T, constant: 2.2e-5}
    - {until: 14.8T, constant: 7.3e-6}
training:
  mtp_lambda: [{until: 10T, constant: 0.3}, {until: 14.8T, constant: 0.1}]
  bias_update_speed: [{until: 14.3T, constant: 0.001}, {until: 14.8T, constant: 0}]
)";

TEST(TokenCount, SuffixesAndPlainNumbers) {
  EXPECT_EQ(*ParseTokenCount("25B"), 25e9);
  EXPECT_EQ(*ParseTokenCount("14.3T"), 1.43e13);
  EXPECT_EQ(*ParseTokenCount("14.8T"), 1.48e13);
  EXPECT_EQ(*ParseTokenCount("1e6"), 1e6);
  EXPECT_EQ(*ParseTokenCount("500000"), 5e5);
  EXPECT_EQ(*ParseTokenCount("1.5K"), 1500);
  EXPECT_EQ(*ParseTokenCount("200K"), 2e5);
  EXPECT_EQ(*ParseTokenCount("5M"), 5e6);
  EXPECT_EQ(*ParseTokenCount(" 2B "), 2e9);
  for (const char* bad : {"", "B", "abc", "-5B", "5X", "1e", "inf", "nan", "5BB"}) {
    absl::StatusOr<double> v = ParseTokenCount(bad);
    EXPECT_FALSE(v.ok()) << bad;
    if (!v.ok()) {
      EXPECT_NE(v.status().message().find("is not a token count"), std::string::npos);
    }
  }
}

TEST(Schedule, ConstantHoldsEverywhere) {
  const Schedule s = Schedule::Constant(0.25);
  EXPECT_EQ(s.Value(0), 0.25);
  EXPECT_EQ(s.Value(1e15), 0.25);
}

TEST(Schedule, ShapesBetweenSegmentEnds) {
  Schedule s;
  s.segments = {{100, Schedule::Shape::kLinear, 0, 1},
                {200, Schedule::Shape::kCosine, 1, 0},
                {300, Schedule::Shape::kConstant, 0.5, 0.5}};
  EXPECT_DOUBLE_EQ(s.Value(0), 0);
  EXPECT_DOUBLE_EQ(s.Value(25), 0.25);
  EXPECT_DOUBLE_EQ(s.Value(100), 1);                                // cosine starts
  EXPECT_DOUBLE_EQ(s.Value(125), (1 + std::cos(M_PI * 0.25)) / 2);  // 0.8536
  EXPECT_NEAR(s.Value(150), 0.5, 1e-15);
  EXPECT_DOUBLE_EQ(s.Value(250), 0.5);
  EXPECT_DOUBLE_EQ(s.Value(1000), 0.5);  // past the end: the last end value
}

TEST(Schedule, DeepSeekV3InYaml) {
  absl::StatusOr<Config> c = ParseConfig(std::string(kModel) + kDeepSeekV3, "ds.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  const Schedule& lr = c->optimizer.lr;
  ASSERT_EQ(lr.segments.size(), 5u);
  EXPECT_EQ(lr.Value(0), 0);
  EXPECT_DOUBLE_EQ(lr.Value(12.5e9), 1.1e-4);  // half-way through warm-up
  EXPECT_DOUBLE_EQ(lr.Value(25e9), 2.2e-4);
  EXPECT_DOUBLE_EQ(lr.Value(5e12), 2.2e-4);
  EXPECT_DOUBLE_EQ(lr.Value(10e12), 2.2e-4);                      // cosine starts at its peak
  EXPECT_NEAR(lr.Value(12.15e12), (2.2e-4 + 2.2e-5) / 2, 1e-12);  // half-way: the mean
  EXPECT_NEAR(lr.Value(14.3e12 - 1e6), 2.2e-5, 1e-12);
  EXPECT_DOUBLE_EQ(lr.Value(14.5e12), 2.2e-5);
  EXPECT_DOUBLE_EQ(lr.Value(14.7e12), 7.3e-6);
  EXPECT_DOUBLE_EQ(lr.Value(14.8e12), 7.3e-6);
  EXPECT_DOUBLE_EQ(lr.Value(20e12), 7.3e-6);

  const Schedule& lambda = c->training.mtp_lambda;
  EXPECT_EQ(lambda.Value(0), 0.3);
  EXPECT_EQ(lambda.Value(9.99e12), 0.3);
  EXPECT_EQ(lambda.Value(10e12), 0.1);
  EXPECT_EQ(lambda.Value(14.8e12), 0.1);

  const Schedule& gamma = c->training.bias_update_speed;
  EXPECT_EQ(gamma.Value(0), 0.001);
  EXPECT_EQ(gamma.Value(14.2e12), 0.001);
  EXPECT_EQ(gamma.Value(14.3e12), 0);
  EXPECT_EQ(gamma.Value(14.79e12), 0);
}

std::string ScheduleError(const std::string& lr) {
  absl::StatusOr<Config> c =
      ParseConfig(std::string(kModel) + "optimizer:\n  lr: " + lr + "\n", "s.yaml");
  EXPECT_FALSE(c.ok()) << lr;
  return c.ok() ? "" : std::string(c.status().message());
}

TEST(Schedule, YamlErrorsNameTheSegment) {
  // kModel has 15 lines; "lr:" is on line 17.
  EXPECT_EQ(ScheduleError("[{until: 1M, constant: 1}, {until: 1M, constant: 2}]"),
            "s.yaml:17: optimizer.lr[1].until: got 1e+06 tokens, not after the previous end "
            "(1e+06); expected until values strictly increasing and > 0");
  EXPECT_NE(ScheduleError("[{until: 1M}]").find("optimizer.lr[0]: the segment has no shape"),
            std::string::npos);
  EXPECT_NE(ScheduleError("[{until: 1M, constant: 1, linear: [0, 1]}]")
                .find("optimizer.lr[0]: the segment has several shapes"),
            std::string::npos);
  EXPECT_NE(ScheduleError("[{constant: 1}]").find("optimizer.lr[0]: the segment has no until"),
            std::string::npos);
  EXPECT_NE(ScheduleError("[{until: 1M, linear: [0, 1, 2]}]")
                .find("optimizer.lr[0].linear: got a list; expected [start_value, end_value]"),
            std::string::npos);
  EXPECT_NE(ScheduleError("[{until: 1Q, constant: 1}]")
                .find("optimizer.lr[0].until: got 1Q; expected a token count"),
            std::string::npos);
  EXPECT_NE(ScheduleError("[{until: 1M, cosine: [a, 1]}]")
                .find("optimizer.lr[0].cosine[0]: got a; expected a finite number"),
            std::string::npos);
  EXPECT_NE(ScheduleError("[{until: 1M, constant: 1, unitl: 2}]")
                .find("unknown key optimizer.lr[0].unitl (did you mean until?)"),
            std::string::npos);
  EXPECT_NE(ScheduleError("[]").find("optimizer.lr: got a list; expected a number or a list"),
            std::string::npos);
  EXPECT_NE(ScheduleError("fast").find("optimizer.lr: got fast; expected a number or a list"),
            std::string::npos);
  EXPECT_NE(ScheduleError("[3]").find("optimizer.lr[0]: got 3; expected a segment"),
            std::string::npos);
}

}  // namespace
}  // namespace mt

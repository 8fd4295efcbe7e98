// tests/trainer/trainer_unit_test.cc: the pieces of the training loop that need no process:
// the aux-loss-free bias update (sign rule, ties, gamma 0), expert loads summed over the
// micro-batches of a global batch before that update, the batch-size ramp, the fault
// switch, the metrics JSON-lines keys, and TensorBoard records against the test vectors of
// reference/ecosystem.md §5.
#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "data/indexed_dataset.h"
#include "data/sampler.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "trainer/metrics.h"
#include "trainer/model.h"
#include "trainer/optimizer.h"
#include "trainer/tensorboard.h"
#include "trainer/trainer.h"

namespace mt {
namespace {

namespace fs = std::filesystem;

ModelConfig TinyModel() {
  ModelConfig m;
  m.vocab_size = 64;
  m.hidden_size = 16;
  m.intermediate_size = 32;
  m.moe_intermediate_size = 8;
  m.num_hidden_layers = 2;
  m.num_attention_heads = 2;
  m.num_key_value_heads = 2;
  m.n_routed_experts = 4;
  m.n_shared_experts = 1;
  m.num_experts_per_tok = 2;
  m.n_group = 2;
  m.topk_group = 1;
  m.first_k_dense_replace = 1;
  m.q_lora_rank = 8;
  m.kv_lora_rank = 8;
  m.qk_nope_head_dim = 4;
  m.qk_rope_head_dim = 4;
  m.v_head_dim = 4;
  m.num_nextn_predict_layers = 1;
  m.max_position_embeddings = 64;
  return m;
}

std::vector<float> Bias(const Moe* layer) {
  const Tensor& b = layer->bias()->value;
  return std::vector<float>(b.data<float>(), b.data<float>() + b.numel());
}

void SetBias(Moe* layer, const std::vector<float>& v) {
  std::memcpy(layer->bias()->value.data<float>(), v.data(), v.size() * sizeof(float));
}

TEST(BiasUpdate, SignRuleTiesAndLayersIndependent) {
  Model model(TinyModel(), 1);
  const std::vector<Moe*>& layers = model.moe_layers();
  ASSERT_EQ(layers.size(), 2u);  // layer 1 and the MTP module's layer
  const std::vector<float> start0 = {0.5f, -0.25f, 0.125f, 0.f}, start1 = {0, 0, 0, 0};
  SetBias(layers[0], start0);
  SetBias(layers[1], start1);
  const double gamma = 0.001;
  const float g = static_cast<float>(gamma);
  // Layer 0: mean 3, expert 0 overloaded, 1 underloaded, 2 and 3 exactly at the mean (ties).
  // Layer 1: one expert takes everything.
  UpdateExpertBiases(layers, {{5, 1, 3, 3}, {0, 0, 0, 12}}, gamma);
  EXPECT_EQ(Bias(layers[0]), (std::vector<float>{0.5f - g, -0.25f + g, 0.125f, 0.f}));
  EXPECT_EQ(Bias(layers[1]), (std::vector<float>{g, g, g, -g}));
  // Perfect balance: nothing moves.
  const std::vector<float> before = Bias(layers[1]);
  UpdateExpertBiases(layers, {{2, 2, 2, 2}, {7, 7, 7, 7}}, gamma);
  EXPECT_EQ(Bias(layers[1]), before);
}

TEST(BiasUpdate, GammaZeroIsANoOp) {
  Model model(TinyModel(), 1);
  SetBias(model.moe_layers()[0], {0.1f, 0.2f, 0.3f, 0.4f});
  const std::vector<float> b0 = Bias(model.moe_layers()[0]), b1 = Bias(model.moe_layers()[1]);
  UpdateExpertBiases(model.moe_layers(), {{9, 0, 0, 3}, {1, 2, 3, 6}}, 0.0);
  EXPECT_EQ(Bias(model.moe_layers()[0]), b0);
  EXPECT_EQ(Bias(model.moe_layers()[1]), b1);
}

// A dataset of random tokens in a temporary directory.
class Samples : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "mt_unit_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    auto w = data::IndexedDatasetWriter::Create(dir_ + "/d", data::TokenDType::kUInt16);
    ASSERT_TRUE(w.ok()) << w.status();
    std::mt19937 rng(3);
    for (int d = 0; d < 20; ++d) {
      std::vector<int32_t> doc(40 + d);
      for (int32_t& t : doc) t = static_cast<int32_t>(rng() % 64);
      ASSERT_TRUE((*w)->AddDocument(doc).ok());
    }
    ASSERT_TRUE((*w)->Finalize().ok());
    auto blend = data::OpenBlend({{1.0, dir_ + "/d"}});
    ASSERT_TRUE(blend.ok()) << blend.status();
    auto src = data::TrainSampleSource::Create(std::move(*blend), kSeqLen, 9);
    ASSERT_TRUE(src.ok()) << src.status();
    samples_ = std::move(*src);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  static constexpr int64_t kSeqLen = 8;
  std::string dir_;
  std::unique_ptr<data::TrainSampleSource> samples_;
};

TEST_F(Samples, LoadsAreSummedOverTheMicroBatchesOfAGlobalBatch) {
  const ModelConfig mc = TinyModel();
  const int64_t S = kSeqLen, mb = 2, G = 6, cursor = 5;
  const ObjectiveWeights w{0.3, 0.001};
  // One process: the ParallelModel every run goes through, with local process groups.
  Config cfg;
  cfg.model = mc;
  cfg.training.seed = 1;
  cfg.training.micro_batch_size = mb;
  cfg.training.global_batch_size = G;
  auto topo = Topology::Create(LayoutOf(cfg, G), 1, 0);
  ASSERT_TRUE(topo.ok()) << topo.status();
  auto groups = CreateProcessGroups(*topo);
  ASSERT_TRUE(groups.ok()) << groups.status();
  auto model = ParallelModel::Create(cfg, Precision::kFp32, *topo, &*groups);
  ASSERT_TRUE(model.ok()) << model.status();
  auto result = (*model)->ForwardBackward(*samples_, cursor, G, mb, w);
  ASSERT_TRUE(result.ok()) << result.status();
  const GlobalBatchResult& got = *result;

  // The same three micro-batches one at a time, each with loads of its own.
  Model ref(mc, 1);
  std::vector<std::vector<int64_t>> sum(2, std::vector<int64_t>(4, 0));
  std::vector<std::vector<int64_t>> first;
  double main = 0;
  std::vector<int32_t> tokens(mb * (S + 1));
  for (int64_t m = 0; m < G / mb; ++m) {
    for (int64_t b = 0; b < mb; ++b)
      samples_->Sample(cursor + m * mb + b, tokens.data() + b * (S + 1));
    std::vector<std::vector<int64_t>> loads(2, std::vector<int64_t>(4, 0));
    main += ref.ForwardBackward(tokens.data(), mb, S, w, 1.0 / 3, &loads).main / 3;
    for (int l = 0; l < 2; ++l)
      for (int e = 0; e < 4; ++e) sum[l][e] += loads[l][e];
    if (m == 0) first = loads;
  }
  EXPECT_EQ(got.loads, sum);
  EXPECT_NE(got.loads, first);
  // Every position of the main layer routes to top-k experts; the MTP layer drops its last
  // position of each sequence (depth 1).
  int64_t total0 = 0, total1 = 0;
  for (int e = 0; e < 4; ++e) {
    total0 += got.loads[0][e];
    total1 += got.loads[1][e];
  }
  EXPECT_EQ(total0, G * S * mc.num_experts_per_tok);
  EXPECT_EQ(total1, G * (S - 1) * mc.num_experts_per_tok);
  EXPECT_DOUBLE_EQ(got.losses.main, main);
}

TEST(GlobalBatch, RampGrowsInWholeMicroBatches) {
  Config c;
  c.training.micro_batch_size = 2;
  c.training.global_batch_size = 16;
  EXPECT_EQ(GlobalBatchAt(c, 0), 16);  // no ramp
  c.training.batch_ramp = BatchRamp{4, 1000};
  EXPECT_EQ(GlobalBatchAt(c, 0), 4);
  EXPECT_EQ(GlobalBatchAt(c, 250), 6);   // 4 + 12 * 0.25 = 7, down to a multiple of 2
  EXPECT_EQ(GlobalBatchAt(c, 500), 10);  // 4 + 6
  EXPECT_EQ(GlobalBatchAt(c, 999), 14);  // 15.988 -> 14
  EXPECT_EQ(GlobalBatchAt(c, 1000), 16);
  EXPECT_EQ(GlobalBatchAt(c, 1e12), 16);
  // With data parallelism the unit is micro_batch x dp, and the batch never drops below it.
  c.parallel.dp = 4;
  c.training.global_batch_size = 32;
  c.training.batch_ramp = BatchRamp{8, 1000};
  EXPECT_EQ(GlobalBatchAt(c, 0), 8);
  EXPECT_EQ(GlobalBatchAt(c, 250), 8);   // 8 + 24 * 0.25 = 14 -> 8
  EXPECT_EQ(GlobalBatchAt(c, 500), 16);  // 20 -> 16
  EXPECT_EQ(GlobalBatchAt(c, 900), 24);  // 29.6 -> 24
  EXPECT_EQ(GlobalBatchAt(c, 1000), 32);
  // A ramp starting below one unit is rounded up to one unit.
  c.training.batch_ramp = BatchRamp{1, 1000};
  EXPECT_EQ(GlobalBatchAt(c, 0), 8);
}

TEST(FaultSwitch, CountsConsecutiveSteps) {
  TrainingConfig t;
  for (int64_t s = 0; s < 10; ++s) EXPECT_FALSE(FaultInjectedAt(t, s));  // off by default
  t.fault_inject_nan_step = 4;
  std::vector<int64_t> hit;
  for (int64_t s = 0; s < 10; ++s)
    if (FaultInjectedAt(t, s)) hit.push_back(s);
  EXPECT_EQ(hit, (std::vector<int64_t>{4}));
  t.fault_inject_nan_count = 3;
  hit.clear();
  for (int64_t s = 0; s < 10; ++s)
    if (FaultInjectedAt(t, s)) hit.push_back(s);
  EXPECT_EQ(hit, (std::vector<int64_t>{4, 5, 6}));
}

TEST(Metrics, JsonLinesCarryTheKeysOtherToolsRead) {
  const std::string path =
      (fs::temp_directory_path() / ("mt_metrics_" + std::to_string(::getpid()) + ".jsonl"))
          .string();
  std::remove(path.c_str());
  {
    auto log = MetricsLogger::Create(path, "", /*print=*/false);
    ASSERT_TRUE(log.ok()) << log.status();
    StepMetrics m;
    m.step = 7;
    m.tokens = 4096;
    m.loss = 2.5;
    m.mtp_loss = {2.75, 3.0};
    m.balance_loss = 0.125;
    m.lr = 1e-3;
    m.grad_norm = 0.5;
    m.tokens_per_s = 1000;
    m.mfu = 0.25;
    m.expert_load_max_over_mean = 1.5;
    ASSERT_TRUE((*log)->Log(m).ok());
    ASSERT_TRUE((*log)->LogEvent({{"event", "skipped_step"}, {"step", 8}}).ok());
  }
  std::ifstream in(path);
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  const nlohmann::json j = nlohmann::json::parse(line);
  const nlohmann::json want = {{"step", 7},
                               {"tokens", 4096.0},
                               {"loss", 2.5},
                               {"mtp_loss", {2.75, 3.0}},
                               {"balance_loss", 0.125},
                               {"lr", 1e-3},
                               {"grad_norm", 0.5},
                               {"tokens_per_s", 1000.0},
                               {"mfu", 0.25},
                               {"expert_load_max_over_mean", 1.5}};
  for (const auto& [key, value] : want.items()) {
    ASSERT_TRUE(j.contains(key)) << key << " missing from " << line;
    EXPECT_EQ(j[key], value) << key;
  }
  ASSERT_TRUE(std::getline(in, line));
  EXPECT_EQ(nlohmann::json::parse(line), (nlohmann::json{{"event", "skipped_step"}, {"step", 8}}));
  std::remove(path.c_str());
}

std::string Hex(const std::string& bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

TEST(TensorBoard, Crc32cCheckValue) {
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);
  const uint32_t crc = 0xE3069283u;
  EXPECT_EQ(MaskedCrc32c("123456789", 9), ((crc >> 15) | (crc << 17)) + 0xa282ead8u);
}

TEST(TensorBoard, RecordsMatchTheSpecTestVectors) {
  EXPECT_EQ(Hex(EventRecord(1.0, 0, {}, /*file_version_header=*/true)),
            "1800000000000000a37f4b22"
            "09000000000000f03f1a0d627261696e2e4576656e743a32"
            "86bf577a");
  EXPECT_EQ(Hex(EventRecord(1.0, 1, {{"loss", 2.0f}}, /*file_version_header=*/false)),
            "1a00000000000000129bd82d"
            "09000000000000f03f10012a0d0a0b0a046c6f73731500000040"
            "313c0c81");
}

TEST(TensorBoard, WriterFramesEveryRecord) {
  std::string tmpl = (fs::temp_directory_path() / "mt_tb_XXXXXX").string();
  ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
  std::string path;
  {
    auto w = TensorBoardWriter::Create(tmpl + "/run");
    ASSERT_TRUE(w.ok()) << w.status();
    path = (*w)->path();
    EXPECT_NE(fs::path(path).filename().string().find("tfevents"), std::string::npos);
    ASSERT_TRUE((*w)->AddScalars(5, {{"train/loss", 1.5f}, {"train/lr", 0.001f}}).ok());
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string bytes = ss.str();
  std::vector<std::string> events;
  size_t pos = 0;
  while (pos < bytes.size()) {
    ASSERT_LE(pos + 12, bytes.size());
    uint64_t len;
    uint32_t len_crc, data_crc;
    std::memcpy(&len, bytes.data() + pos, 8);
    std::memcpy(&len_crc, bytes.data() + pos + 8, 4);
    EXPECT_EQ(len_crc, MaskedCrc32c(bytes.data() + pos, 8));
    ASSERT_LE(pos + 12 + len + 4, bytes.size());
    std::memcpy(&data_crc, bytes.data() + pos + 12 + len, 4);
    EXPECT_EQ(data_crc, MaskedCrc32c(bytes.data() + pos + 12, len));
    events.push_back(bytes.substr(pos + 12, len));
    pos += 12 + len + 4;
  }
  ASSERT_EQ(events.size(), 2u);
  EXPECT_NE(events[0].find("brain.Event:2"), std::string::npos);
  // wall_time (9 bytes), then step 5 as field 2, then the summary with both tags.
  EXPECT_EQ(events[1].substr(9, 2), std::string("\x10\x05", 2));
  EXPECT_NE(events[1].find("train/loss"), std::string::npos);
  EXPECT_NE(events[1].find("train/lr"), std::string::npos);
  std::error_code ec;
  fs::remove_all(tmpl, ec);
}

}  // namespace
}  // namespace mt

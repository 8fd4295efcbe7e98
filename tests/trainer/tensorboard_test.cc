// tests/trainer/tensorboard_test.cc: TensorBoard event files read back by a reader written
// here from the spec (reference/ecosystem.md §5), sharing no code with trainer/tensorboard.cc:
// CRC-32C bit by bit instead of by table, the protobuf wire format decoded generically (any
// field order, unknown fields skipped). Every record's two CRCs are checked; every scalar
// MetricsLogger writes for a short synthetic run comes back with its step, tag and value.
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "trainer/metrics.h"
#include "trainer/tensorboard.h"

namespace mt {
namespace {

namespace fs = std::filesystem;

uint32_t SpecCrc32c(const std::string& bytes) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char x : bytes) {
    c ^= x;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
  }
  return ~c;
}

uint32_t SpecMask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

struct ScalarEvent {
  int64_t step = 0;
  std::string tag;
  float value = 0;
};

struct EventFile {
  std::vector<std::string> file_versions;
  std::vector<ScalarEvent> scalars;
  std::string error;  // empty when every record and message parsed and every CRC matched
};

// Protobuf wire format over [p, end).
class Wire {
 public:
  explicit Wire(const std::string& s) : p_(s.data()), end_(s.data() + s.size()) {}
  bool done() const { return p_ >= end_; }
  bool Varint(uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64 && p_ < end_; shift += 7) {
      const auto b = static_cast<unsigned char>(*p_++);
      *v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return true;
    }
    return false;
  }
  bool Fixed(void* out, size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) return false;
    std::memcpy(out, p_, n);
    p_ += n;
    return true;
  }
  bool Bytes(std::string* out) {
    uint64_t n;
    if (!Varint(&n) || static_cast<uint64_t>(end_ - p_) < n) return false;
    out->assign(p_, n);
    p_ += n;
    return true;
  }
  // Reads one field: number, wire type, and its payload (varint value or bytes).
  bool Field(int* number, int* type, uint64_t* num, std::string* bytes) {
    uint64_t key;
    if (!Varint(&key)) return false;
    *number = static_cast<int>(key >> 3);
    *type = static_cast<int>(key & 7);
    switch (*type) {
      case 0:
        return Varint(num);
      case 1:
        bytes->resize(8);
        return Fixed(bytes->data(), 8);
      case 2:
        return Bytes(bytes);
      case 5:
        bytes->resize(4);
        return Fixed(bytes->data(), 4);
      default:
        return false;
    }
  }

 private:
  const char* p_;
  const char* end_;
};

bool ParseEvent(const std::string& event, EventFile* out) {
  Wire w(event);
  int64_t step = 0;
  std::vector<std::pair<std::string, float>> values;
  while (!w.done()) {
    int number, type;
    uint64_t num = 0;
    std::string bytes;
    if (!w.Field(&number, &type, &num, &bytes)) return false;
    if (number == 2 && type == 0) step = static_cast<int64_t>(num);
    if (number == 3 && type == 2) out->file_versions.push_back(bytes);
    if (number == 5 && type == 2) {  // Summary
      Wire s(bytes);
      while (!s.done()) {
        std::string value_msg;
        if (!s.Field(&number, &type, &num, &value_msg)) return false;
        if (number != 1 || type != 2) continue;
        Wire v(value_msg);
        std::string tag;
        float value = 0;
        bool has_value = false;
        while (!v.done()) {
          std::string b;
          if (!v.Field(&number, &type, &num, &b)) return false;
          if (number == 1 && type == 2) tag = b;
          if (number == 2 && type == 5) {
            std::memcpy(&value, b.data(), 4);
            has_value = true;
          }
        }
        if (!has_value) return false;
        values.emplace_back(tag, value);
      }
    }
  }
  for (const auto& [tag, value] : values) out->scalars.push_back({step, tag, value});
  return true;
}

EventFile ReadEventFile(const std::string& bytes) {
  EventFile out;
  size_t pos = 0;
  for (int record = 0; pos < bytes.size(); ++record) {
    auto fail = [&](const std::string& why) {
      out.error =
          "record " + std::to_string(record) + " at byte " + std::to_string(pos) + ": " + why;
      return out;
    };
    if (bytes.size() - pos < 12) return fail("truncated header");
    uint64_t len;
    uint32_t len_crc, data_crc;
    std::memcpy(&len, bytes.data() + pos, 8);
    std::memcpy(&len_crc, bytes.data() + pos + 8, 4);
    if (len_crc != SpecMask(SpecCrc32c(bytes.substr(pos, 8)))) return fail("length CRC mismatch");
    if (bytes.size() - pos - 12 < len + 4) return fail("truncated data");
    const std::string data = bytes.substr(pos + 12, len);
    std::memcpy(&data_crc, bytes.data() + pos + 12 + len, 4);
    if (data_crc != SpecMask(SpecCrc32c(data))) return fail("data CRC mismatch");
    if (!ParseEvent(data, &out)) return fail("malformed Event message");
    pos += 12 + len + 4;
  }
  return out;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "mt_tbtest_XXXXXX").string();
  EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
  return tmpl;
}

TEST(TensorBoardSpec, ReaderCrcMatchesTheCheckValue) {
  EXPECT_EQ(SpecCrc32c("123456789"), 0xE3069283u);
}

TEST(TensorBoardSpec, KnownScalarRecordIsTheHandComputedBytes) {
  // Event{wall_time 1.5, step 300, Summary{Value{tag "moe/layer01/bias_spread",
  // simple_value 0.125}}}, encoded by hand from the field table:
  // clang-format off
  const std::vector<uint8_t> want = {
      0x2e, 0, 0, 0, 0, 0, 0, 0,                    // length 46, u64 LE
      0xc5, 0xcb, 0x57, 0xfa,                        // masked CRC-32C of those 8 bytes
      0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f,            // wall_time = 1, fixed64: 1.5
      0x10, 0xac, 0x02,                              // step = 2, varint: 300
      0x2a, 0x20,                                    // summary = 5, 32 bytes
      0x0a, 0x1e,                                    //   value = 1, 30 bytes
      0x0a, 0x17,                                    //     tag = 1, 23 bytes
      'm', 'o', 'e', '/', 'l', 'a', 'y', 'e', 'r', '0', '1', '/',
      'b', 'i', 'a', 's', '_', 's', 'p', 'r', 'e', 'a', 'd',
      0x15, 0x00, 0x00, 0x00, 0x3e,                  //     simple_value = 2, fixed32: 0.125
      0x51, 0x76, 0xe2, 0xcc};                       // masked CRC-32C of the 46 bytes
  // clang-format on
  const std::string got = EventRecord(1.5, 300, {{"moe/layer01/bias_spread", 0.125f}}, false);
  EXPECT_EQ(std::vector<uint8_t>(got.begin(), got.end()), want);
  // The reader agrees with the hand computation, CRCs included.
  EventFile f = ReadEventFile(std::string(want.begin(), want.end()));
  ASSERT_EQ(f.error, "");
  ASSERT_EQ(f.scalars.size(), 1u);
  EXPECT_EQ(f.scalars[0].step, 300);
  EXPECT_EQ(f.scalars[0].tag, "moe/layer01/bias_spread");
  EXPECT_EQ(f.scalars[0].value, 0.125f);
}

TEST(TensorBoardSpec, ReaderRejectsACorruptedRecord) {
  std::string rec = EventRecord(1.0, 7, {{"train/loss", 3.0f}}, false);
  ASSERT_EQ(ReadEventFile(rec).error, "");
  std::string bad = rec;
  bad[bad.size() - 6] ^= 0x01;  // a bit of the value
  EXPECT_NE(ReadEventFile(bad).error.find("data CRC mismatch"), std::string::npos);
  bad = rec;
  bad[0] ^= 0x01;  // the length
  EXPECT_NE(ReadEventFile(bad).error.find("length CRC mismatch"), std::string::npos);
}

// Three layers, MTP depth 1, the last two and the MTP layer MoE: layers 1, 2 and 3.
Config SmallConfig(const std::string& dir) {
  Config c;
  c.model.num_hidden_layers = 3;
  c.model.first_k_dense_replace = 1;
  c.model.num_nextn_predict_layers = 1;
  c.model.n_routed_experts = 4;
  c.logging.metrics_file = dir + "/metrics.jsonl";
  c.logging.tensorboard_dir = dir + "/tb";
  c.logging.expert_load_interval = 2;
  return c;
}

TEST(TensorBoardRun, EveryScalarComesBackWithItsStepAndTag) {
  const std::string dir = TempDir();
  const Config cfg = SmallConfig(dir);
  std::string path;
  {
    auto log = MetricsLogger::Create(cfg.logging.metrics_file, cfg.logging.tensorboard_dir, false);
    ASSERT_TRUE(log.ok()) << log.status();
    ASSERT_TRUE((*log)->LogRunStart(cfg, 0).ok());
    // Layer loads per step: layer 1 balanced, layer 2 one hot expert, layer 3 drifting.
    for (int64_t step = 1; step <= 4; ++step) {
      const std::vector<std::vector<int64_t>> loads = {
          {10, 10, 10, 10}, {40, 0, 0, 0}, {10 + step, 10, 10, 10 - step}};
      const float b = 0.01f * static_cast<float>(step);
      const std::vector<std::vector<float>> biases = {
          {0, 0, 0, 0}, {-b, b, b, b}, {0, b, 0, 2 * b}};
      ASSERT_TRUE((*log)->ObserveExperts(step, 100.0 * step, loads, biases).ok());
      if (step % 2 == 0) {
        StepMetrics m;
        m.step = step;
        m.tokens = 100.0 * step;
        m.loss = 5.0 - step;
        m.mtp_loss = {6.0 - step};
        m.balance_loss = 0.001 * step;
        m.lr = 1e-3 * step;
        m.grad_norm = 0.5 * step;
        m.tokens_per_s = 1000.0 * step;
        m.mfu = 0.01 * step;
        m.expert_load_max_over_mean = 4.0;
        m.skipped_steps = step / 4;
        ASSERT_TRUE((*log)->Log(m).ok());
      }
    }
    ASSERT_TRUE((*log)->LogEvent({{"event", "validation"}, {"step", 4}, {"val_loss", 2.5}}).ok());
  }
  for (const auto& e : fs::directory_iterator(dir + "/tb")) path = e.path().string();
  ASSERT_NE(path.find("tfevents"), std::string::npos);
  const EventFile f = ReadEventFile(ReadBytes(path));
  ASSERT_EQ(f.error, "");
  EXPECT_EQ(f.file_versions, std::vector<std::string>{"brain.Event:2"});

  std::map<std::pair<int64_t, std::string>, float> got;
  for (const ScalarEvent& s : f.scalars)
    EXPECT_TRUE(got.emplace(std::make_pair(s.step, s.tag), s.value).second)
        << "step " << s.step << " tag " << s.tag << " written twice";
  std::map<std::pair<int64_t, std::string>, float> want;
  for (int64_t step : {2, 4}) {
    auto put = [&](const std::string& tag, double v) { want[{step, tag}] = static_cast<float>(v); };
    put("train/loss", 5.0 - step);
    put("train/mtp_loss_1", 6.0 - step);
    put("train/balance_loss", 0.001 * step);
    put("train/lr", 1e-3 * step);
    put("train/grad_norm", 0.5 * step);
    put("perf/tokens_per_s", 1000.0 * step);
    put("perf/mfu", 0.01 * step);
    put("moe/expert_load_max_over_mean", 4.0);
    put("train/skipped_steps", step / 4);
    // Mean over the interval's two steps of max / mean.
    put("moe/layer01/load_max_over_mean", 1.0);
    put("moe/layer02/load_max_over_mean", 4.0);
    put("moe/layer03/load_max_over_mean", ((10.0 + step - 1) / 10.0 + (10.0 + step) / 10.0) / 2);
    // Spread of the latest biases.
    const float b = 0.01f * static_cast<float>(step);
    put("moe/layer01/bias_spread", 0.0);
    put("moe/layer02/bias_spread", b - -b);
    put("moe/layer03/bias_spread", 2 * b);
  }
  want[{4, "val/loss"}] = 2.5f;
  EXPECT_EQ(got, want);

  // The metrics file holds the run_start and an expert_load record every 2 steps.
  std::ifstream in(cfg.logging.metrics_file);
  std::vector<int64_t> load_steps;
  int starts = 0;
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.value("event", "") == "run_start") {
      ++starts;
      EXPECT_EQ(j["moe_layers"], nlohmann::json::array({1, 2, 3}));
      EXPECT_EQ(j["config"]["logging"]["expert_load_interval"], 2);
      EXPECT_EQ(j["config"]["model"]["n_routed_experts"], 4);
    }
    if (j.value("event", "") == "expert_load") {
      load_steps.push_back(j["step"].get<int64_t>());
      EXPECT_EQ(j["loads"].size(), 3u);
      EXPECT_EQ(j["biases"][2].size(), 4u);
    }
    if (!j.contains("event")) {
      EXPECT_TRUE(j.contains("time")) << line;
    }
  }
  EXPECT_EQ(starts, 1);
  EXPECT_EQ(load_steps, (std::vector<int64_t>{2, 4}));
  std::error_code ec;
  fs::remove_all(dir, ec);
}

TEST(TensorBoardRun, LoadsForTheWrongNumberOfLayersAreAnError) {
  const std::string dir = TempDir();
  const Config cfg = SmallConfig(dir);
  auto log = MetricsLogger::Create(cfg.logging.metrics_file, "", false);
  ASSERT_TRUE(log.ok());
  ASSERT_TRUE((*log)->LogRunStart(cfg, 0).ok());
  absl::Status s = (*log)->ObserveExperts(1, 10, {{1, 2, 3, 4}}, {{0, 0, 0, 0}});
  EXPECT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("the config has 3"), std::string::npos) << s;
  std::error_code ec;
  fs::remove_all(dir, ec);
}

}  // namespace
}  // namespace mt

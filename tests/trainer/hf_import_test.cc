// tests/trainer/hf_import_test.cc: loading Hugging Face directories (sharded, FP8 block
// scaled, hostile indexes) and export -> import round trips.
#include "trainer/hf_import.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "gtest/gtest.h"
#include "kernels/bf16.h"

namespace mt {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

bool AcceptAll(const std::string&) { return true; }

class HfImportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "hf_test_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    base_ = tmpl;
    dir_ = base_ / "model";
    fs::create_directory(dir_);
  }
  void TearDown() override { fs::remove_all(base_); }

  void WriteJson(const fs::path& p, const Json& j) { std::ofstream(p) << j.dump(); }
  void WriteConfig(const Json& extra = Json::object()) {
    Json c = {{"model_type", "deepseek_v3"}};
    c.update(extra);
    WriteJson(dir_ / "config.json", c);
  }
  // Expects LoadHfModelDir(dir_) to fail with a message containing `needle`.
  void ExpectLoadError(const std::string& needle,
                       const std::function<bool(const std::string&)>& expected = AcceptAll) {
    auto r = LoadHfModelDir(dir_.string(), expected);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status();
  }

  fs::path base_, dir_;
};

Tensor Random(std::vector<int64_t> shape, uint32_t seed) {
  Tensor t(std::move(shape), DType::kF32);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-2.f, 2.f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = dist(rng);
  return t;
}

TEST(Fp8Test, DecodesKnownE4M3Codes) {
  // One scale of 1 over a [1, 10] weight: the dequantised values are the plain decodes.
  const uint8_t codes[] = {0x00, 0x01, 0x07, 0x08, 0x38, 0x3C, 0x7E, 0xFE, 0x80, 0x7F};
  const float want[] = {0.f,
                        std::ldexp(1.f, -9),
                        7 * std::ldexp(1.f, -9),
                        std::ldexp(1.f, -6),
                        1.f,
                        1.5f,
                        448.f,
                        -448.f,
                        -0.f};
  Tensor w({1, 10}, DType::kF8E4M3);
  std::memcpy(w.raw(), codes, 10);
  Tensor s({1, 1});
  s.data<float>()[0] = 1.f;
  auto out = DequantizeFp8Blocks(w, s, 128, 128);
  ASSERT_TRUE(out.ok()) << out.status();
  for (int i = 0; i < 9; ++i) EXPECT_EQ(out->data<float>()[i], want[i]) << i;
  EXPECT_TRUE(std::signbit(out->data<float>()[8]));
  EXPECT_TRUE(std::isnan(out->data<float>()[9]));
}

TEST(Fp8Test, BlockScalesCoverPartialEdgeBlocks) {
  // [130, 260] has blocks of 128x128 with partial last rows (2) and columns (4).
  Tensor w({130, 260}, DType::kF8E4M3);
  std::memset(w.raw(), 0x38, w.nbytes());                  // every element 1.0
  static_cast<uint8_t*>(w.raw())[129 * 260 + 259] = 0x40;  // 2.0 in the corner block
  Tensor s({2, 3});
  for (int i = 0; i < 6; ++i) s.data<float>()[i] = static_cast<float>(i + 1) * 0.5f;
  auto out = DequantizeFp8Blocks(w, s, 128, 128);
  ASSERT_TRUE(out.ok()) << out.status();
  auto at = [&](int r, int c) { return out->data<float>()[r * 260 + c]; };
  EXPECT_EQ(at(0, 0), 0.5f);
  EXPECT_EQ(at(127, 127), 0.5f);
  EXPECT_EQ(at(0, 128), 1.0f);
  EXPECT_EQ(at(127, 256), 1.5f);
  EXPECT_EQ(at(128, 0), 2.0f);
  EXPECT_EQ(at(128, 255), 2.5f);
  EXPECT_EQ(at(128, 256), 3.0f);
  EXPECT_EQ(at(129, 259), 6.0f);  // 2.0 * 3.0
  Tensor wrong({2, 2});
  EXPECT_FALSE(DequantizeFp8Blocks(w, wrong, 128, 128).ok());
}

TEST_F(HfImportTest, LoadsFp8ReleaseFormatWithMixedDTypes) {
  WriteConfig({{"quantization_config",
                {{"quant_method", "fp8"}, {"fmt", "e4m3"}, {"weight_block_size", {2, 4}}}}});
  Tensor w({3, 5}, DType::kF8E4M3);
  std::memset(w.raw(), 0x38, w.nbytes());
  Tensor s({2, 2});  // ceil(3/2) x ceil(5/4)
  for (int i = 0; i < 4; ++i) s.data<float>()[i] = static_cast<float>(i + 1);
  Tensor norm({4}, DType::kBF16);
  for (int i = 0; i < 4; ++i) static_cast<uint16_t*>(norm.raw())[i] = FloatToBf16(0.25f * i);
  Tensor half({2}, DType::kF16);
  static_cast<uint16_t*>(half.raw())[0] = 0x3C00;  // 1.0
  static_cast<uint16_t*>(half.raw())[1] = 0xC500;  // -5.0
  ASSERT_TRUE(WriteSafetensors((dir_ / "model-00001-of-000002.safetensors").string(),
                               {{"a.weight", w}, {"n.weight", norm}})
                  .ok());
  ASSERT_TRUE(WriteSafetensors((dir_ / "model-00002-of-000002.safetensors").string(),
                               {{"a.weight_scale_inv", s}, {"h.weight", half}})
                  .ok());
  WriteJson(dir_ / "model.safetensors.index.json",
            {{"metadata", Json::object()},
             {"weight_map",
              {{"a.weight", "model-00001-of-000002.safetensors"},
               {"n.weight", "model-00001-of-000002.safetensors"},
               {"a.weight_scale_inv", "model-00002-of-000002.safetensors"},
               {"h.weight", "model-00002-of-000002.safetensors"}}}});
  auto r = LoadHfModelDir(dir_.string(), AcceptAll);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->config["model_type"], "deepseek_v3");
  ASSERT_EQ(r->tensors.size(), 3u);  // the scale is consumed
  EXPECT_EQ(r->tensors[0].name, "a.weight");
  const Tensor& a = r->tensors[0].tensor;
  const float want[3][5] = {{1, 1, 1, 1, 2}, {1, 1, 1, 1, 2}, {3, 3, 3, 3, 4}};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 5; ++j) EXPECT_EQ(a.data<float>()[i * 5 + j], want[i][j]) << i << "," << j;
  EXPECT_EQ(r->tensors[1].name, "h.weight");
  EXPECT_EQ(r->tensors[1].tensor.data<float>()[1], -5.0f);
  EXPECT_EQ(r->tensors[2].tensor.data<float>()[3], 0.75f);
}

TEST_F(HfImportTest, Fp8WithoutScaleOrScaleWithoutWeightIsAnError) {
  WriteConfig();
  Tensor w({2, 2}, DType::kF8E4M3);
  ASSERT_TRUE(WriteSafetensors((dir_ / "model.safetensors").string(), {{"a.weight", w}}).ok());
  ExpectLoadError("has no a.weight_scale_inv scale");
  ASSERT_TRUE(WriteSafetensors((dir_ / "model.safetensors").string(),
                               {{"a.weight_scale_inv", Tensor({1, 1})}})
                  .ok());
  ExpectLoadError("scales no F8_E4M3 tensor");
}

TEST_F(HfImportTest, UnexpectedTensorNameIsAnErrorNamingTensorAndFile) {
  WriteConfig();
  ASSERT_TRUE(WriteSafetensors((dir_ / "model.safetensors").string(),
                               {{"model.norm.weight", Tensor({2})}, {"bogus.weight", Tensor({2})}})
                  .ok());
  auto expected = [](const std::string& n) { return n == "model.norm.weight"; };
  ExpectLoadError("tensor \"bogus.weight\" in " + (dir_ / "model.safetensors").string(), expected);
}

TEST_F(HfImportTest, UnsupportedDTypeIsAnError) {
  WriteConfig();
  ASSERT_TRUE(
      WriteSafetensors((dir_ / "model.safetensors").string(), {{"x", Tensor({2}, DType::kI32)}})
          .ok());
  ExpectLoadError("has dtype I32");
}

TEST_F(HfImportTest, IndexShardNamesCannotEscapeTheDirectory) {
  WriteConfig();
  // A real safetensors file just outside the model directory.
  ASSERT_TRUE(WriteSafetensors((base_ / "x.safetensors").string(), {{"w", Tensor({2})}}).ok());
  for (const char* shard : {"../x.safetensors", "/etc/passwd", "sub/../../x.safetensors", ""}) {
    WriteJson(dir_ / "model.safetensors.index.json", {{"weight_map", {{"w", shard}}}});
    ExpectLoadError(std::string("shard name \"") + shard + "\"");
  }
  // A symlink inside the directory that points outside it.
  fs::create_symlink(base_ / "x.safetensors", dir_ / "link.safetensors");
  WriteJson(dir_ / "model.safetensors.index.json", {{"weight_map", {{"w", "link.safetensors"}}}});
  ExpectLoadError("outside the directory");
  // A FIFO: opening it would block forever.
  ASSERT_EQ(::mkfifo((dir_ / "fifo.safetensors").c_str(), 0600), 0);
  WriteJson(dir_ / "model.safetensors.index.json", {{"weight_map", {{"w", "fifo.safetensors"}}}});
  ExpectLoadError("is not a regular file");
}

TEST_F(HfImportTest, IndexAndShardsMustAgree) {
  WriteConfig();
  ASSERT_TRUE(
      WriteSafetensors((dir_ / "s1.safetensors").string(), {{"a", Tensor({2})}, {"b", Tensor({2})}})
          .ok());
  WriteJson(dir_ / "model.safetensors.index.json", {{"weight_map", {{"a", "s1.safetensors"}}}});
  ExpectLoadError("tensor \"b\" in");
  WriteJson(dir_ / "model.safetensors.index.json",
            {{"weight_map",
              {{"a", "s1.safetensors"}, {"b", "s1.safetensors"}, {"c", "s1.safetensors"}}}});
  ExpectLoadError("maps \"c\"");
  WriteJson(dir_ / "model.safetensors.index.json", {{"weight_map", {{"a", 3}}}});
  ExpectLoadError("weight_map[\"a\"] is not a string");
  fs::remove(dir_ / "model.safetensors.index.json");
  ExpectLoadError("has neither model.safetensors nor");
}

std::vector<NamedTensor> SmallModel() {
  return {{"model.embed_tokens.weight", Random({32, 16}, 1)},
          {"model.layers.0.self_attn.q_a_proj.weight", Random({24, 16}, 2)},
          {"model.layers.0.mlp.gate.e_score_correction_bias", Random({8}, 3)},
          {"model.norm.weight", Random({16}, 4)},
          {"lm_head.weight", Random({32, 16}, 5)}};
}

TEST_F(HfImportTest, ExportThenImportRoundTripsExactlyInFp32) {
  const std::vector<NamedTensor> model = SmallModel();
  const fs::path out = base_ / "export";
  Json config = {{"model_type", "deepseek_v3"}, {"quantization_config", {{"quant_method", "fp8"}}}};
  ASSERT_TRUE(ExportHfDir(out.string(), config, model, DType::kF32, 2048).ok());
  EXPECT_TRUE(fs::exists(out / "model-00001-of-00003.safetensors"));
  auto r = LoadHfModelDir(out.string(), AcceptAll);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->config.contains("quantization_config"));
  EXPECT_EQ(r->config["torch_dtype"], "float32");
  ASSERT_EQ(r->tensors.size(), model.size());
  for (const NamedTensor& t : model) {
    auto it = std::find_if(r->tensors.begin(), r->tensors.end(),
                           [&](const NamedTensor& x) { return x.name == t.name; });
    ASSERT_NE(it, r->tensors.end()) << t.name;
    EXPECT_EQ(it->tensor.shape(), t.tensor.shape());
    EXPECT_EQ(std::memcmp(it->tensor.raw(), t.tensor.raw(), t.tensor.nbytes()), 0) << t.name;
  }
  // No temporary directory is left, and an existing non-empty target is refused.
  for (const auto& e : fs::directory_iterator(base_)) {
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos);
  }
  EXPECT_FALSE(ExportHfDir(out.string(), config, model, DType::kF32, 2048).ok());
}

TEST_F(HfImportTest, ExportInBf16RoundTripsToBf16Precision) {
  const std::vector<NamedTensor> model = SmallModel();
  const fs::path out = base_ / "export_bf16";
  ASSERT_TRUE(ExportHfDir(out.string(), {{"model_type", "deepseek_v3"}}, model, DType::kBF16,
                          int64_t{1} << 30)
                  .ok());
  auto file = SafetensorsFile::Open((out / "model.safetensors").string());
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file->metadata().at("format"), "pt");
  EXPECT_EQ(file->Info("lm_head.weight")->dtype, DType::kBF16);
  auto r = LoadHfModelDir(out.string(), AcceptAll);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->config["torch_dtype"], "bfloat16");
  for (const NamedTensor& t : model) {
    auto it = std::find_if(r->tensors.begin(), r->tensors.end(),
                           [&](const NamedTensor& x) { return x.name == t.name; });
    ASSERT_NE(it, r->tensors.end());
    const bool f32 = KeepsF32(t.name);
    for (int64_t i = 0; i < t.tensor.numel(); ++i) {
      const float w = t.tensor.data<float>()[i];
      EXPECT_EQ(it->tensor.data<float>()[i], f32 ? w : Bf16ToFloat(FloatToBf16(w))) << t.name;
    }
  }
}

}  // namespace
}  // namespace mt

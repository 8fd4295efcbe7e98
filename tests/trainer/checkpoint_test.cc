// tests/trainer/checkpoint_test.cc: the step-directory protocol: round trips (fp32, bf16,
// sharded), keep_last and `latest`, manifest verification, and SIGKILL at each save phase.
#include "trainer/checkpoint.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "gtest/gtest.h"
#include "kernels/bf16.h"

namespace mt {
namespace {

namespace fs = std::filesystem;

Tensor Random(std::vector<int64_t> shape, uint32_t seed) {
  Tensor t(std::move(shape), DType::kF32);
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = dist(rng);
  return t;
}

CheckpointData MakeData(uint32_t seed) {
  CheckpointData d;
  d.config_json = {{"architectures", {"DeepseekV3ForCausalLM"}},
                   {"model_type", "deepseek_v3"},
                   {"hidden_size", 8},
                   {"rope_scaling", nullptr}};
  const std::vector<std::pair<std::string, std::vector<int64_t>>> params = {
      {"model.embed_tokens.weight", {16, 8}},
      {"model.layers.0.mlp.gate.weight", {4, 8}},
      {"model.layers.0.mlp.gate.e_score_correction_bias", {4}},
      {"model.norm.weight", {8}},
      {"lm_head.weight", {16, 8}}};
  uint32_t s = seed * 100;
  for (const auto& [name, shape] : params) {
    d.model.push_back({name, Random(shape, ++s)});
    d.state_files["optimizer-exp_avg"].push_back({name, Random(shape, ++s)});
    d.state_files["optimizer-exp_avg_sq"].push_back({name, Random(shape, ++s)});
  }
  Tensor counter({}, DType::kI64);
  counter.data<int64_t>()[0] = 1234567890123LL + seed;
  d.state_files["rng"].push_back({"counter", counter});
  d.train_state = {{"step", seed},
                   {"consumed_tokens", 123456789012345ULL},
                   {"rng_key", 18446744073709551615ULL},
                   {"lr", 0.1 * seed + 1e-17},
                   {"sampler", {{"epoch", 2}, {"cursor", 77}}}};
  return d;
}

bool SameBytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

void ExpectEqualData(const CheckpointData& want, const CheckpointData& got) {
  EXPECT_EQ(want.config_json, got.config_json);
  EXPECT_EQ(want.train_state, got.train_state);
  ASSERT_EQ(want.model.size(), got.model.size());
  for (size_t i = 0; i < want.model.size(); ++i) {
    EXPECT_EQ(want.model[i].name, got.model[i].name);
    EXPECT_TRUE(SameBytes(want.model[i].tensor, got.model[i].tensor)) << want.model[i].name;
  }
  ASSERT_EQ(want.state_files.size(), got.state_files.size());
  for (const auto& [file, tensors] : want.state_files) {
    const auto& other = got.state_files.at(file);
    ASSERT_EQ(tensors.size(), other.size()) << file;
    for (size_t i = 0; i < tensors.size(); ++i) {
      EXPECT_EQ(tensors[i].name, other[i].name);
      EXPECT_TRUE(SameBytes(tensors[i].tensor, other[i].tensor)) << file << "/" << tensors[i].name;
    }
  }
}

std::string Slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "ckpt_test_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
  }
  void TearDown() override { fs::remove_all(root_); }

  std::vector<std::string> Entries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(root_)) out.push_back(e.path().filename());
    std::sort(out.begin(), out.end());
    return out;
  }

  std::string root_;
};

TEST_F(CheckpointTest, RoundTripsFp32BitForBit) {
  CheckpointData data = MakeData(1);
  ASSERT_TRUE(SaveCheckpoint(root_, 100, data, {}).ok());
  const fs::path dir = fs::path(root_) / "step-0000100";
  for (const char* f : {"config.json", "model.safetensors", "model.safetensors.index.json",
                        "optimizer-exp_avg.safetensors", "optimizer-exp_avg_sq.safetensors",
                        "rng.safetensors", "train_state.json", "manifest.json"}) {
    EXPECT_TRUE(fs::is_regular_file(dir / f)) << f;
  }
  EXPECT_EQ(Slurp(fs::path(root_) / "latest"), "step-0000100\n");
  auto choice = FindResumeCheckpoint(root_);
  ASSERT_TRUE(choice.ok()) << choice.status();
  ASSERT_TRUE(choice->has_value());
  EXPECT_EQ((*choice)->step, 100);
  EXPECT_EQ((*choice)->step_dir, dir.string());
  EXPECT_TRUE((*choice)->skipped.empty());
  auto loaded = LoadCheckpoint(dir.string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectEqualData(data, *loaded);
  auto index = nlohmann::json::parse(Slurp(dir / "model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 4 * (128 + 32 + 4 + 8 + 128));
  EXPECT_EQ(index["weight_map"]["lm_head.weight"], "model.safetensors");
}

// Several writers (a multi-rank run): each writes the tensors it owns, one commits; the
// step loads exactly like a single writer's, and a tensor written twice is refused.
TEST_F(CheckpointTest, SeveralWritersMakeOneStep) {
  const CheckpointData data = MakeData(4);
  // Writer w owns model tensors w, w + 3, ... and the same tensors of every state file.
  const int n = 3;
  auto split = [&](int w) {
    CheckpointData part;
    for (size_t i = w; i < data.model.size(); i += n) part.model.push_back(data.model[i]);
    for (const auto& [file, tensors] : data.state_files)
      for (size_t i = w; i < tensors.size(); i += n) part.state_files[file].push_back(tensors[i]);
    return part;
  };
  auto save = [&](int64_t step, bool duplicate) -> absl::Status {
    ASSIGN_OR_RETURN(std::string tmp, BeginCheckpoint(root_, step));
    std::vector<CheckpointShard> shards;
    for (int w = 0; w < n; ++w) {
      CheckpointData part = split(w);
      if (duplicate && w == 2) part.model.push_back(data.model[0]);
      ASSIGN_OR_RETURN(CheckpointShard s,
                       WriteCheckpointShard(tmp, w, n, part.model, part.state_files, {}));
      // What travels between ranks is the JSON form.
      ASSIGN_OR_RETURN(CheckpointShard back, CheckpointShard::FromJson(s.ToJson()));
      shards.push_back(back);
    }
    CheckpointData meta = data;
    meta.model.clear();
    meta.state_files.clear();
    return FinishCheckpoint(root_, tmp, step, meta, shards, {});
  };
  ASSERT_TRUE(save(7, /*duplicate=*/false).ok());
  const fs::path dir = fs::path(root_) / "step-0000007";
  for (const char* f :
       {"model-00001-of-00003.safetensors", "model-00003-of-00003.safetensors",
        "optimizer-exp_avg-00002-of-00003.safetensors", "model.safetensors.index.json"})
    EXPECT_TRUE(fs::is_regular_file(dir / f)) << f;
  EXPECT_TRUE(VerifyCheckpoint(dir.string()).ok());
  auto loaded = LoadCheckpoint(dir.string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  // Tensors come back in writer order: reorder the expectation the same way.
  CheckpointData want = data;
  want.model.clear();
  want.state_files.clear();
  for (int w = 0; w < n; ++w) {
    CheckpointData part = split(w);
    want.model.insert(want.model.end(), part.model.begin(), part.model.end());
    for (auto& [file, tensors] : part.state_files)
      want.state_files[file].insert(want.state_files[file].end(), tensors.begin(), tensors.end());
  }
  ExpectEqualData(want, *loaded);
  auto index = nlohmann::json::parse(Slurp(dir / "model.safetensors.index.json"));
  EXPECT_EQ(index["weight_map"]["model.embed_tokens.weight"], "model-00001-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["model.norm.weight"], "model-00001-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["lm_head.weight"], "model-00002-of-00003.safetensors");

  const absl::Status twice = save(8, /*duplicate=*/true);
  EXPECT_FALSE(twice.ok());
  EXPECT_NE(twice.message().find("written by two shards"), absl::string_view::npos) << twice;
  EXPECT_FALSE(fs::exists(fs::path(root_) / "step-0000008"));
  EXPECT_EQ(Slurp(fs::path(root_) / "latest"), "step-0000007\n");
}

TEST_F(CheckpointTest, Bf16ModelRoundsOnSaveAndComesBackAsFp32) {
  CheckpointData data = MakeData(2);
  SaveOptions opts;
  opts.model_dtype = DType::kBF16;
  ASSERT_TRUE(SaveCheckpoint(root_, 5, data, opts).ok());
  const fs::path dir = fs::path(root_) / "step-0000005";
  auto file = SafetensorsFile::Open((dir / "model.safetensors").string());
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file->Info("lm_head.weight")->dtype, DType::kBF16);
  EXPECT_EQ(file->Info("model.layers.0.mlp.gate.e_score_correction_bias")->dtype, DType::kF32);
  auto loaded = LoadCheckpoint(dir.string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  for (size_t i = 0; i < data.model.size(); ++i) {
    const Tensor& want = data.model[i].tensor;
    const Tensor& got = loaded->model[i].tensor;
    ASSERT_EQ(got.dtype(), DType::kF32);
    const bool f32 = data.model[i].name.find("e_score_correction_bias") != std::string::npos;
    for (int64_t j = 0; j < want.numel(); ++j) {
      const float w = want.data<float>()[j];
      EXPECT_EQ(got.data<float>()[j], f32 ? w : Bf16ToFloat(FloatToBf16(w)));
    }
  }
  // Optimizer state is never downcast.
  EXPECT_TRUE(SameBytes(data.state_files["optimizer-exp_avg"][0].tensor,
                        loaded->state_files["optimizer-exp_avg"][0].tensor));
}

TEST_F(CheckpointTest, ShardsWhenOverMaxShardBytes) {
  CheckpointData data = MakeData(3);
  SaveOptions opts;
  opts.max_shard_bytes = 600;  // embed (512 B) | gate + bias + norm (176 B) | lm_head (512 B)
  ASSERT_TRUE(SaveCheckpoint(root_, 7, data, opts).ok());
  const fs::path dir = fs::path(root_) / "step-0000007";
  EXPECT_FALSE(fs::exists(dir / "model.safetensors"));
  for (int i = 1; i <= 3; ++i) {
    EXPECT_TRUE(fs::exists(dir / ("model-0000" + std::to_string(i) + "-of-00003.safetensors")));
  }
  auto index = nlohmann::json::parse(Slurp(dir / "model.safetensors.index.json"));
  EXPECT_EQ(index["weight_map"]["model.embed_tokens.weight"], "model-00001-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["model.norm.weight"], "model-00002-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["lm_head.weight"], "model-00003-of-00003.safetensors");
  auto loaded = LoadCheckpoint(dir.string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectEqualData(data, *loaded);
}

TEST_F(CheckpointTest, KeepsLastKAndReplacesARepeatedStep) {
  SaveOptions opts;
  opts.keep_last = 2;
  for (int64_t step : {100, 200, 300, 400}) {
    ASSERT_TRUE(SaveCheckpoint(root_, step, MakeData(step), opts).ok());
  }
  EXPECT_EQ(Entries(), (std::vector<std::string>{"latest", "step-0000300", "step-0000400"}));
  EXPECT_EQ(Slurp(fs::path(root_) / "latest"), "step-0000400\n");
  // Saving step 400 again replaces it whole.
  CheckpointData again = MakeData(9);
  ASSERT_TRUE(SaveCheckpoint(root_, 400, again, opts).ok());
  EXPECT_EQ(Entries(), (std::vector<std::string>{"latest", "step-0000300", "step-0000400"}));
  auto loaded = LoadCheckpoint((fs::path(root_) / "step-0000400").string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectEqualData(again, *loaded);
}

TEST_F(CheckpointTest, ResumeSkipsCorruptedTruncatedAndUnmanifestedSteps) {
  SaveOptions keep_all;
  keep_all.keep_last = 10;
  for (int64_t step : {100, 200, 300, 400}) {
    ASSERT_TRUE(SaveCheckpoint(root_, step, MakeData(step), keep_all).ok());
  }
  // 400: one flipped byte in the shard's data; 300: truncated optimizer file; 200: no manifest.
  const fs::path shard = fs::path(root_) / "step-0000400" / "model.safetensors";
  {
    const auto at = static_cast<std::streamoff>(fs::file_size(shard) - 10);
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(at);
    const char c = static_cast<char>(f.get());
    f.seekp(at);
    f.put(static_cast<char>(c ^ 0x5a));
  }
  fs::resize_file(fs::path(root_) / "step-0000300" / "optimizer-exp_avg.safetensors", 100);
  fs::remove(fs::path(root_) / "step-0000200" / "manifest.json");
  auto choice = FindResumeCheckpoint(root_);
  ASSERT_TRUE(choice.ok()) << choice.status();
  ASSERT_TRUE(choice->has_value());
  EXPECT_EQ((*choice)->step, 100);
  const auto& skipped = (*choice)->skipped;
  ASSERT_EQ(skipped.size(), 3u);
  EXPECT_EQ(skipped[0], "step-0000400: model.safetensors SHA-256 mismatch (contents corrupted)");
  EXPECT_NE(skipped[1].find("step-0000300: optimizer-exp_avg.safetensors is 100 bytes"),
            std::string::npos);
  EXPECT_EQ(skipped[2], "step-0000200: manifest missing");
  // Loading the corrupted step directly fails too.
  EXPECT_FALSE(LoadCheckpoint((fs::path(root_) / "step-0000400").string()).ok());
  // With nothing left that verifies, resuming is an error rather than a silent fresh start.
  fs::remove(fs::path(root_) / "step-0000100" / "train_state.json");
  auto none = FindResumeCheckpoint(root_);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("step-0000100: train_state.json missing"),
            std::string::npos)
      << none.status();
}

TEST_F(CheckpointTest, MalformedManifestsAndCopiedStepsAreSkipped) {
  ASSERT_TRUE(SaveCheckpoint(root_, 100, MakeData(1), {}).ok());
  const fs::path root(root_);
  // A copy under another step's name: every hash matches, the step does not.
  fs::copy(root / "step-0000100", root / "step-0000300", fs::copy_options::recursive);
  // Manifests with fields of the wrong type.
  const std::vector<std::string> manifests = {
      R"({"format":1,"version":1})",
      R"({"format":"moetrain-checkpoint","version":1,"step":"200"})",
      R"({"format":"moetrain-checkpoint","version":1,"step":200,"model_tensors":[1]})",
      R"({"format":"moetrain-checkpoint","version":1,"step":200,"model_tensors":[],)"
      R"("state_files":{},"files":{"../config.json":{"size":1,"sha256":"x"}}})",
      R"({"format":"moetrain-checkpoint","version":1,"step":200,"model_tensors":[],)"
      R"("state_files":{},"files":{"config.json":{"size":"1","sha256":"x"}}})",
      "[]",
      "{"};
  fs::copy(root / "step-0000100", root / "step-0000200", fs::copy_options::recursive);
  for (const std::string& text : manifests) {
    std::ofstream(root / "step-0000200" / "manifest.json") << text;
    auto choice = FindResumeCheckpoint(root_);
    ASSERT_TRUE(choice.ok()) << choice.status();
    ASSERT_TRUE(choice->has_value());
    EXPECT_EQ((*choice)->step, 100);
    ASSERT_EQ((*choice)->skipped.size(), 2u);
    EXPECT_EQ((*choice)->skipped[0],
              "step-0000300: manifest says step 100, the directory name says 300");
    EXPECT_EQ((*choice)->skipped[1].rfind("step-0000200: ", 0), 0u);
    EXPECT_NE((*choice)->skipped[1].find("manifest.json"), std::string::npos)
        << (*choice)->skipped[1];
  }
}

TEST_F(CheckpointTest, FreshRootHasNothingToResume) {
  auto missing = FindResumeCheckpoint((fs::path(root_) / "nope").string());
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
  auto empty = FindResumeCheckpoint(root_);
  ASSERT_TRUE(empty.ok());
  EXPECT_FALSE(empty->has_value());
}

TEST_F(CheckpointTest, RejectsBadArguments) {
  CheckpointData data = MakeData(1);
  EXPECT_FALSE(SaveCheckpoint(root_, -1, data, {}).ok());
  EXPECT_FALSE(SaveCheckpoint(root_, 10'000'000, data, {}).ok());
  SaveOptions zero_keep;
  zero_keep.keep_last = 0;
  EXPECT_FALSE(SaveCheckpoint(root_, 1, data, zero_keep).ok());
  SaveOptions f16;
  f16.model_dtype = DType::kF16;
  EXPECT_FALSE(SaveCheckpoint(root_, 1, data, f16).ok());
  CheckpointData no_config = data;
  no_config.config_json = nullptr;
  EXPECT_FALSE(SaveCheckpoint(root_, 1, no_config, {}).ok());
  for (const char* bad : {"../x", "model", ".hidden", "a/b"}) {
    CheckpointData d = data;
    d.state_files[bad] = {};
    EXPECT_FALSE(SaveCheckpoint(root_, 1, d, {}).ok()) << bad;
  }
  ::setenv("MOETRAIN_CKPT_CRASH", "mid_shard", 1);
  EXPECT_FALSE(SaveCheckpoint(root_, 1, data, {}).ok());
  ::unsetenv("MOETRAIN_CKPT_CRASH");
  EXPECT_EQ(Entries(), std::vector<std::string>{});
}

class CrashTest : public CheckpointTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(CrashTest, SigkillAtEachPhaseLeavesAResumableRoot) {
  const std::string phase = GetParam();
  SaveOptions opts;
  opts.max_shard_bytes = 600;  // several shards, so mid-shard is mid-model too
  ASSERT_TRUE(SaveCheckpoint(root_, 100, MakeData(1), opts).ok());
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::setenv("MOETRAIN_CKPT_CRASH", phase.c_str(), 1);
    (void)SaveCheckpoint(root_, 200, MakeData(2), opts);
    ::_exit(3);  // only reached if the crash did not happen
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status)) << "exit status " << status;
  EXPECT_EQ(WTERMSIG(status), SIGKILL);

  const std::string tmp = ".tmp-step-0000200-" + std::to_string(child);
  auto choice = FindResumeCheckpoint(root_);
  ASSERT_TRUE(choice.ok()) << choice.status();
  ASSERT_TRUE(choice->has_value());
  // The rename is the commit: before it the old step is what resumes, after it the new one,
  // even though `latest` was not yet updated.
  EXPECT_EQ(Slurp(fs::path(root_) / "latest"), "step-0000100\n");
  if (phase == "after-rename") {
    EXPECT_EQ((*choice)->step, 200);
    EXPECT_FALSE(fs::exists(fs::path(root_) / tmp));
  } else {
    EXPECT_EQ((*choice)->step, 100);
    EXPECT_TRUE(fs::exists(fs::path(root_) / tmp));
    EXPECT_FALSE(fs::exists(fs::path(root_) / "step-0000200"));
    ASSERT_EQ((*choice)->skipped.size(), 1u);
    EXPECT_EQ((*choice)->skipped[0], tmp + ": uncommitted (interrupted save), ignored");
  }
  auto loaded = LoadCheckpoint((*choice)->step_dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectEqualData(MakeData((*choice)->step / 100), *loaded);

  // The next save commits normally and removes the dead writer's leftovers.
  ASSERT_TRUE(SaveCheckpoint(root_, 300, MakeData(3), opts).ok());
  EXPECT_FALSE(fs::exists(fs::path(root_) / tmp));
  EXPECT_EQ(Slurp(fs::path(root_) / "latest"), "step-0000300\n");
  auto after = FindResumeCheckpoint(root_);
  ASSERT_TRUE(after.ok() && after->has_value());
  EXPECT_EQ((*after)->step, 300);
  EXPECT_TRUE((*after)->skipped.empty());
}

INSTANTIATE_TEST_SUITE_P(Phases, CrashTest,
                         ::testing::Values("mid-shard", "before-rename", "after-rename"),
                         [](const auto& info) {
                           std::string s = info.param;
                           std::replace(s.begin(), s.end(), '-', '_');
                           return s;
                         });

}  // namespace
}  // namespace mt

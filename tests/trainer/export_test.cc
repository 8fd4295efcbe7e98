// tests/trainer/export_test.cc: `moetrain export` round-trips every tensor exactly (fp32), or
// to exactly its bf16 rounding (bf16; the router bias stays fp32); `train` with
// training.init_from starts from exactly the exported weights; checkpoints and exports carry
// the tokenizer, so `moetrain generate --checkpoint DIR` needs nothing else and is
// deterministic for a fixed --seed.
#include <map>
#include <string>
#include <vector>

#include "kernels/bf16.h"
#include "tests/trainer/e2e_util.h"
#include "trainer/checkpoint.h"
#include "trainer/hf_import.h"

namespace mt::e2e {
namespace {

class Export : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    data_ = new TinyData(PrepareTinyData(*dir_));
    config_ = new std::string(WriteTinyConfig(*dir_, *data_));
    Train("base", {"training.steps=3"});
    step_ = new std::string(*dir_ / "base/" + StepDirName(3));
    RunOk({"export", "--checkpoint", *step_, "--out", *dir_ / "hf32", "--dtype", "fp32"});
    RunOk({"export", "--checkpoint", *step_, "--out", *dir_ / "hf16", "--dtype", "bf16"});
  }
  static void TearDownTestSuite() {
    delete step_;
    delete config_;
    delete data_;
    delete dir_;
  }

  static std::string Train(const std::string& run, std::vector<std::string> sets) {
    std::vector<std::string> args = {"train", "--config", *config_};
    sets.push_back("checkpoint.dir=" + (*dir_ / run));
    for (const std::string& s : sets) {
      args.push_back("--set");
      args.push_back(s);
    }
    return RunOk(args);
  }

  // name -> fp32 tensor of a Hugging Face directory, accepting every name.
  static std::map<std::string, Tensor> LoadHf(const std::string& dir) {
    absl::StatusOr<HfModelDir> hf = LoadHfModelDir(dir, [](const std::string&) { return true; });
    EXPECT_TRUE(hf.ok()) << hf.status();
    std::map<std::string, Tensor> out;
    if (hf.ok())
      for (NamedTensor& t : hf->tensors) out.emplace(t.name, std::move(t.tensor));
    return out;
  }
  static std::map<std::string, Tensor> LoadCheckpointModel(const std::string& step_dir) {
    absl::StatusOr<CheckpointData> ck = LoadCheckpoint(step_dir);
    EXPECT_TRUE(ck.ok()) << ck.status();
    std::map<std::string, Tensor> out;
    if (ck.ok())
      for (NamedTensor& t : ck->model) out.emplace(t.name, std::move(t.tensor));
    return out;
  }
  // What a bf16 export must hold for `t`: its bf16 rounding, or itself when kept in fp32.
  static Tensor Bf16Rounded(const std::string& name, const Tensor& t) {
    Tensor out(t.shape(), DType::kF32);
    for (int64_t i = 0; i < t.numel(); ++i) {
      const float x = t.data<float>()[i];
      out.data<float>()[i] = KeepsF32(name) ? x : Bf16ToFloat(FloatToBf16(x));
    }
    return out;
  }
  static void ExpectSameTensors(const std::map<std::string, Tensor>& want,
                                const std::map<std::string, Tensor>& got, const std::string& what) {
    ASSERT_EQ(want.size(), got.size()) << what;
    for (const auto& [name, t] : want) {
      ASSERT_TRUE(got.count(name)) << what << ": no " << name;
      EXPECT_TRUE(SameBytes(t, got.at(name))) << what << ": " << name << " differs";
    }
  }

  static TempDir* dir_;
  static TinyData* data_;
  static std::string* config_;
  static std::string* step_;  // the trained checkpoint's step directory
};

TempDir* Export::dir_ = nullptr;
TinyData* Export::data_ = nullptr;
std::string* Export::config_ = nullptr;
std::string* Export::step_ = nullptr;

TEST_F(Export, Fp32RoundTripsEveryTensorExactly) {
  const std::map<std::string, Tensor> ck = LoadCheckpointModel(*step_);
  EXPECT_GT(ck.size(), 20u);
  ExpectSameTensors(ck, LoadHf(*dir_ / "hf32"), "fp32 export");
  const nlohmann::json cfg = nlohmann::json::parse(ReadFile(*dir_ / "hf32/config.json"));
  EXPECT_EQ(cfg["torch_dtype"], "float32");
  EXPECT_EQ(cfg["architectures"], nlohmann::json::array({"DeepseekV3ForCausalLM"}));
  // No training state in an export.
  for (const auto& e : fs::directory_iterator(*dir_ / "hf32"))
    EXPECT_EQ(e.path().filename().string().rfind("optimizer", 0), std::string::npos);
}

TEST_F(Export, Bf16IsTheBf16RoundingOfEveryTensor) {
  std::map<std::string, Tensor> want;
  for (const auto& [name, t] : LoadCheckpointModel(*step_))
    want.emplace(name, Bf16Rounded(name, t));
  ExpectSameTensors(want, LoadHf(*dir_ / "hf16"), "bf16 export");
  // On disk: BF16, except the router bias (its updates are far below bf16's resolution).
  int bf16 = 0, f32 = 0;
  for (const std::string& f : SafetensorsFiles(*dir_ / "hf16")) {
    auto file = SafetensorsFile::Open(*dir_ / "hf16/" + f);
    ASSERT_TRUE(file.ok()) << file.status();
    for (const std::string& name : file->names()) {
      const DType dt = file->Info(name)->dtype;
      EXPECT_EQ(dt, KeepsF32(name) ? DType::kF32 : DType::kBF16) << name;
      (dt == DType::kBF16 ? bf16 : f32)++;
    }
  }
  EXPECT_GT(bf16, 0);
  EXPECT_EQ(f32, 2);  // one MoE layer + one MTP module
}

TEST_F(Export, InitFromStartsFromExactlyTheExportedWeights) {
  // With lr 0 and gamma 0 one step changes nothing (w * (1 - 0) - 0 * update == w), so the
  // step-1 checkpoint holds exactly the weights training started from.
  for (const char* dtype : {"32", "16"}) {
    SCOPED_TRACE(dtype);
    const std::string run = std::string("ft") + dtype, hf = *dir_ / ("hf" + std::string(dtype));
    const std::string out = Train(run, {"training.steps=1", "training.init_from=" + hf,
                                        "optimizer.lr=0", "training.bias_update_speed=0"});
    EXPECT_NE(out.find("initialised weights from " + hf), std::string::npos) << out;
    std::map<std::string, Tensor> want = LoadHf(hf);
    ExpectSameTensors(want, LoadCheckpointModel(*dir_ / run + "/" + StepDirName(1)),
                      "init_from " + hf);
  }
}

TEST_F(Export, CheckpointAndExportCarryTheTokenizer) {
  const std::string tokenizer = ReadFile(data_->tokenizer);
  EXPECT_EQ(ReadFile(*step_ + "/tokenizer.model"), tokenizer);
  EXPECT_EQ(ReadFile(*dir_ / "hf32/tokenizer.model"), tokenizer);
  const nlohmann::json manifest = nlohmann::json::parse(ReadFile(*step_ + "/manifest.json"));
  absl::StatusOr<FileDigest> d = DigestFile(data_->tokenizer);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(manifest["files"]["tokenizer.model"]["sha256"], d->sha256);
  EXPECT_EQ(manifest["extra_files"], nlohmann::json::array({"tokenizer.model"}));
  absl::StatusOr<CheckpointData> ck = LoadCheckpoint(*step_);
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_EQ(ck->extra_files.at("tokenizer.model"), *step_ + "/tokenizer.model");
}

TEST_F(Export, GenerateNeedsOnlyTheCheckpointAndIsDeterministic) {
  auto generate = [](const std::string& dir, const char* seed) {
    return RunOk({"generate", "--checkpoint", dir, "--prompt", "the cat", "--max-tokens", "12",
                  "--seed", seed});
  };
  const std::string a = generate(*step_, "5");
  EXPECT_EQ(a.rfind("the cat", 0), 0u) << a;  // the prompt, then the continuation
  EXPECT_GT(a.size(), std::string("the cat\n").size()) << a;
  EXPECT_EQ(generate(*step_, "5"), a);
  // The fp32 export is the same model with the same tokenizer.
  EXPECT_EQ(generate(*dir_ / "hf32", "5"), a);

  // A run without a tokenizer: generate says what is missing.
  Train("notok", {"training.steps=1", "data.tokenizer="});
  CommandResult r = RunMoetrain(
      {"generate", "--checkpoint", *dir_ / "notok/" + StepDirName(1), "--prompt", "the cat"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("has no tokenizer.model or tokenizer.json (the run had no "
                          "data.tokenizer); pass --tokenizer FILE"),
            std::string::npos)
      << r.output;
}

TEST_F(Export, EvalOfTheFp32ExportEqualsEvalOfTheCheckpoint) {
  auto eval = [&](const std::string& dir) {
    return RunOk({"eval", "--checkpoint", dir, "--data", data_->val, "--batches", "2", "--seq-len",
                  "16", "--batch-size", "2"});
  };
  const std::string a = eval(*step_);
  EXPECT_TRUE(nlohmann::json::parse(a).contains("loss")) << a;
  EXPECT_EQ(eval(*dir_ / "hf32"), a);
}

}  // namespace
}  // namespace mt::e2e

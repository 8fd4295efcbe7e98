// tests/trainer/resume_test.cc: resuming is bit-identical. 2N steps in one `moetrain train`
// run equal N steps, stop, `checkpoint.resume=auto`, N more: the logged losses, and the
// final checkpoints tensor by tensor (parameters, router biases, AdamW moments) and their
// train_state.json, byte for byte. Variants: fp32 moments; bf16 moments with bf16 model
// shards (the fp32 masters must travel in the training state), a batch-size ramp, and a
// logging interval that the resume point splits.
#include <string>
#include <vector>

#include "tests/trainer/e2e_util.h"
#include "trainer/checkpoint.h"

namespace mt::e2e {
namespace {

class Resume : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    data_ = new TinyData(PrepareTinyData(*dir_));
    config_ = new std::string(WriteTinyConfig(*dir_, *data_));
  }
  static void TearDownTestSuite() {
    delete config_;
    delete data_;
    delete dir_;
  }

  // `moetrain train` on the tiny config with run-specific overrides; `run` names its
  // checkpoint directory and metrics file.
  static std::string Train(const std::string& run, std::vector<std::string> sets) {
    std::vector<std::string> args = {"train", "--config", *config_};
    sets.push_back("checkpoint.dir=" + (*dir_ / run));
    sets.push_back("logging.metrics_file=" + (*dir_ / (run + ".jsonl")));
    for (const std::string& s : sets) {
      args.push_back("--set");
      args.push_back(s);
    }
    return RunOk(args);
  }

  // Runs 2N steps straight and N + N with a resume between, and compares the two.
  static void CheckResumeIsExact(const std::string& name, int n,
                                 const std::vector<std::string>& sets) {
    const std::string steps2 = "training.steps=" + std::to_string(2 * n);
    std::vector<std::string> full = sets, first = sets, second = sets;
    full.push_back(steps2);
    first.push_back("training.steps=" + std::to_string(n));
    second.push_back(steps2);
    second.push_back("checkpoint.resume=auto");
    Train(name + "-full", full);
    Train(name + "-split", first);
    const std::string out = Train(name + "-split", second);
    const std::string taken =
        "resume: taking " + (*dir_ / (name + "-split")) + "/" + StepDirName(n);
    EXPECT_NE(out.find(taken), std::string::npos) << out;

    const std::map<int64_t, double> want = LossesByStep(*dir_ / (name + "-full.jsonl"));
    const std::map<int64_t, double> got = LossesByStep(*dir_ / (name + "-split.jsonl"));
    EXPECT_FALSE(want.empty());
    for (const auto& [step, loss] : want) {
      ASSERT_TRUE(got.count(step)) << "step " << step << " not logged by the resumed run";
      EXPECT_EQ(std::memcmp(&loss, &got.at(step), sizeof(double)), 0)
          << "step " << step << ": " << loss << " vs " << got.at(step);
    }
    // The only extra line: the first run's last step, when it ended inside an interval.
    for (const auto& [step, loss] : got) {
      if (!want.count(step)) {
        EXPECT_EQ(step, n) << "unexpected progress line";
      }
    }
    const std::string last = "/" + StepDirName(2 * n);
    ExpectSameCheckpoint(*dir_ / (name + "-full") + last, *dir_ / (name + "-split") + last);
  }

  static TempDir* dir_;
  static TinyData* data_;
  static std::string* config_;
};

TempDir* Resume::dir_ = nullptr;
TinyData* Resume::data_ = nullptr;
std::string* Resume::config_ = nullptr;

TEST_F(Resume, Fp32MomentsBitIdentical) {
  CheckResumeIsExact("fp32", 3, {"optimizer.moment_dtype=fp32"});
  // The metrics file carries the keys other tools read, on every logged step.
  for (const nlohmann::json& j : ReadJsonLines(*dir_ / "fp32-full.jsonl")) {
    if (!j.contains("loss")) continue;
    for (const char* key : {"step", "tokens", "loss", "mtp_loss", "balance_loss", "lr", "grad_norm",
                            "tokens_per_s", "mfu", "expert_load_max_over_mean"})
      EXPECT_TRUE(j.contains(key)) << key << " missing from " << j.dump();
    EXPECT_TRUE(j["mtp_loss"].is_array() && j["mtp_loss"].size() == 1) << j.dump();
  }
}

TEST_F(Resume, Bf16MomentsRampAndSplitIntervalBitIdentical) {
  // Resuming at step 3 of 6 with a logging interval of 2 splits the interval of steps 3-4;
  // the batch ramp makes the first steps smaller; bf16 shards round the weights, so the run
  // must resume from the fp32 masters kept beside them.
  CheckResumeIsExact("bf16", 3,
                     {"optimizer.moment_dtype=bf16", "checkpoint.dtype=bf16", "logging.interval=2",
                      "training.batch_ramp={start: 2, tokens: 200}"});
  auto moments =
      SafetensorsFile::Open(*dir_ / "bf16-split/step-0000006/optimizer-exp_avg.safetensors");
  ASSERT_TRUE(moments.ok()) << moments.status();
  EXPECT_EQ(moments->Info(moments->names().front())->dtype, DType::kBF16);
  EXPECT_TRUE(fs::exists(*dir_ / "bf16-split/step-0000006/master_weights.safetensors"));
}

}  // namespace
}  // namespace mt::e2e

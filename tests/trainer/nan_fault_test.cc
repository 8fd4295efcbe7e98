// tests/trainer/nan_fault_test.cc: non-finite steps (training.fault_inject_nan_step/_count
// put a NaN in the loss and in one gradient) are skipped: no parameter, moment, bias or
// optimizer-step update, the data cursor moves on, and training continues; N consecutive
// faults stop the run with a clear message and exit code 1, leaving the last good
// checkpoint intact and resumable.
//
// "Nothing updated" is checked on checkpoints written every step: the state files of the
// skipped step k must equal those of step k - 1 byte for byte, while those of k + 1 differ.
#include <cmath>
#include <string>
#include <vector>

#include "tests/trainer/e2e_util.h"
#include "trainer/checkpoint.h"

namespace mt::e2e {
namespace {

class NanFault : public ::testing::Test {
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

  static CommandResult Train(const std::string& run, std::vector<std::string> sets) {
    std::vector<std::string> args = {"train", "--config", *config_};
    sets.push_back("checkpoint.dir=" + (*dir_ / run));
    sets.push_back("logging.metrics_file=" + (*dir_ / (run + ".jsonl")));
    sets.push_back("checkpoint.interval=1");
    for (const std::string& s : sets) {
      args.push_back("--set");
      args.push_back(s);
    }
    return RunMoetrain(args);
  }
  static std::string Step(const std::string& run, int step) {
    return *dir_ / run + "/" + StepDirName(step);
  }
  static nlohmann::json TrainState(const std::string& step_dir) {
    return nlohmann::json::parse(ReadFile(step_dir + "/train_state.json"));
  }

  static TempDir* dir_;
  static TinyData* data_;
  static std::string* config_;
};

TempDir* NanFault::dir_ = nullptr;
TinyData* NanFault::data_ = nullptr;
std::string* NanFault::config_ = nullptr;

// Every tensor of every safetensors file of two step directories equal (or not).
bool SameState(const std::string& a, const std::string& b) {
  const std::set<std::string> files = SafetensorsFiles(a);
  EXPECT_EQ(files, SafetensorsFiles(b));
  for (const std::string& f : files) {
    auto fa = SafetensorsFile::Open(a + "/" + f), fb = SafetensorsFile::Open(b + "/" + f);
    EXPECT_TRUE(fa.ok() && fb.ok()) << f;
    if (!fa.ok() || !fb.ok()) return false;
    for (const std::string& name : fa->names()) {
      auto ta = fa->Read(name), tb = fb->Read(name);
      if (!ta.ok() || !tb.ok() || !SameBytes(*ta, *tb)) return false;
    }
  }
  return true;
}

// Every float of every model shard finite.
void ExpectFinite(const std::string& step_dir) {
  absl::StatusOr<CheckpointData> ck = LoadCheckpoint(step_dir);
  ASSERT_TRUE(ck.ok()) << ck.status();
  for (const NamedTensor& t : ck->model)
    for (int64_t i = 0; i < t.tensor.numel(); ++i)
      ASSERT_TRUE(std::isfinite(t.tensor.data<float>()[i])) << step_dir << " " << t.name;
}

TEST_F(NanFault, SkippedStepUpdatesNothingAndTrainingContinues) {
  CommandResult r = Train("single", {"training.steps=5", "training.fault_inject_nan_step=3"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("step 3 skipped: non-finite loss (1 in a row)"), std::string::npos)
      << r.output;

  // Parameters, router biases and both AdamW moments of step 3 are those of step 2.
  EXPECT_TRUE(SameState(Step("single", 2), Step("single", 3)));
  // Ordinary steps around it do update them (so the comparison above can fail).
  EXPECT_FALSE(SameState(Step("single", 1), Step("single", 2)));
  EXPECT_FALSE(SameState(Step("single", 3), Step("single", 4)));
  ExpectFinite(Step("single", 5));

  const nlohmann::json s2 = TrainState(Step("single", 2)), s3 = TrainState(Step("single", 3)),
                       s4 = TrainState(Step("single", 4));
  EXPECT_EQ(s3["optimizer_step"], s2["optimizer_step"]);  // bias correction did not advance
  EXPECT_EQ(s4["optimizer_step"], s2["optimizer_step"].get<int64_t>() + 1);
  EXPECT_EQ(s3["sampler"]["cursor"].get<int64_t>(), s2["sampler"]["cursor"].get<int64_t>() + 4)
      << "the skipped step's data is consumed, not retried";
  EXPECT_EQ(s3["skipped_steps"], 1);
  EXPECT_EQ(s3["consecutive_skips"], 1);
  EXPECT_EQ(s4["consecutive_skips"], 0);

  // The metrics file records the skip as an event and no loss for step 3.
  bool event = false;
  for (const nlohmann::json& j : ReadJsonLines(*dir_ / "single.jsonl")) {
    if (j.value("event", "") == "skipped_step" && j["step"] == 3) event = true;
    if (j.contains("loss")) {
      EXPECT_NE(j["step"], 3) << j.dump();
    }
  }
  EXPECT_TRUE(event);
}

TEST_F(NanFault, ConsecutiveFaultsStopCleanlyAndLastGoodCheckpointResumes) {
  CommandResult r =
      Train("streak", {"training.steps=8", "training.fault_inject_nan_step=3",
                       "training.fault_inject_nan_count=3", "training.max_consecutive_skips=3"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(r.signal, 0);
  EXPECT_NE(r.output.find("stopping at step 5: 3 consecutive steps had non-finite loss or "
                          "gradients (training.max_consecutive_skips = 3); the last good "
                          "checkpoint in " +
                          (*dir_ / "streak") + " is intact"),
            std::string::npos)
      << r.output;

  // Steps 3 and 4 were skipped and saved; the run stopped at 5 before saving it.
  EXPECT_FALSE(fs::exists(Step("streak", 5)));
  for (int step : {2, 3, 4}) EXPECT_TRUE(VerifyCheckpoint(Step("streak", step)).ok()) << step;
  EXPECT_TRUE(SameState(Step("streak", 2), Step("streak", 4)));
  ExpectFinite(Step("streak", 4));
  EXPECT_EQ(ReadFile(*dir_ / "streak/latest"), StepDirName(4) + "\n");

  // Resuming without the fault continues from the newest checkpoint to the end.
  CommandResult resumed = Train("streak", {"training.steps=8", "checkpoint.resume=auto"});
  EXPECT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resume: taking " + Step("streak", 4)), std::string::npos)
      << resumed.output;
  ExpectFinite(Step("streak", 8));
  EXPECT_FALSE(SameState(Step("streak", 4), Step("streak", 8)));
  EXPECT_EQ(TrainState(Step("streak", 8))["skipped_steps"], 2);
}

}  // namespace
}  // namespace mt::e2e

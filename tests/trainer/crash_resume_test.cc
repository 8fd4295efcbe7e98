// tests/trainer/crash_resume_test.cc: a `moetrain train` process SIGKILLed at each phase of a
// checkpoint save (MOETRAIN_CKPT_CRASH=mid-shard|before-rename|after-rename) leaves a
// directory from which `checkpoint.resume=auto` continues from the last committed step,
// saying which step it took and why it passed over the others, and the run then ends
// exactly where an uninterrupted run ends (losses, parameters, moments, biases).
//
// Each case: 2 steps (committing step 2), then a run to step 6 that resumes from step 2
// and is killed while saving step 4, then a resume to step 6.
#include <csignal>
#include <string>
#include <vector>

#include "tests/trainer/e2e_util.h"
#include "trainer/checkpoint.h"

namespace mt::e2e {
namespace {

class CrashResume : public ::testing::TestWithParam<const char*> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    data_ = new TinyData(PrepareTinyData(*dir_));
    config_ = new std::string(WriteTinyConfig(*dir_, *data_));
    Train("reference", 6, false);
  }
  static void TearDownTestSuite() {
    delete config_;
    delete data_;
    delete dir_;
  }

  static std::vector<std::string> Args(const std::string& run, int steps, bool resume) {
    std::vector<std::string> args = {"train", "--config", *config_};
    const std::vector<std::string> sets = {
        "checkpoint.dir=" + (*dir_ / run), "logging.metrics_file=" + (*dir_ / (run + ".jsonl")),
        "checkpoint.interval=2", "training.steps=" + std::to_string(steps),
        std::string("checkpoint.resume=") + (resume ? "auto" : "none")};
    for (const std::string& s : sets) {
      args.push_back("--set");
      args.push_back(s);
    }
    return args;
  }
  static std::string Train(const std::string& run, int steps, bool resume) {
    return RunOk(Args(run, steps, resume));
  }

  static TempDir* dir_;
  static TinyData* data_;
  static std::string* config_;
};

TempDir* CrashResume::dir_ = nullptr;
TinyData* CrashResume::data_ = nullptr;
std::string* CrashResume::config_ = nullptr;

TEST_P(CrashResume, ResumesFromLastCommittedStepAndMatches) {
  const std::string phase = GetParam();
  const std::string run = "crash-" + phase;
  const std::string root = *dir_ / run;
  Train(run, 2, false);

  CommandResult killed = RunMoetrain(Args(run, 6, true), {{"MOETRAIN_CKPT_CRASH", phase}});
  EXPECT_EQ(killed.signal, SIGKILL) << killed.output;
  EXPECT_NE(killed.output.find("resume: taking " + root + "/" + StepDirName(2)), std::string::npos)
      << killed.output;
  EXPECT_EQ(killed.output.find("checkpoint " + root + "/" + StepDirName(4) + " written"),
            std::string::npos)
      << "the save of step 4 was to be interrupted:\n"
      << killed.output;

  // What the crash left: step 4 is committed only once renamed into place.
  const bool committed = phase == "after-rename";
  EXPECT_EQ(fs::exists(root + "/" + StepDirName(4)), committed);
  bool leftover_tmp = false;
  for (const auto& e : fs::directory_iterator(root))
    leftover_tmp |= e.path().filename().string().rfind(".tmp-" + StepDirName(4), 0) == 0;
  EXPECT_EQ(leftover_tmp, !committed);
  // `latest` is only updated after the rename, so it still names step 2.
  EXPECT_EQ(ReadFile(root + "/latest"), StepDirName(2) + "\n");

  const std::string out = Train(run, 6, true);
  const int64_t want_step = committed ? 4 : 2;
  EXPECT_NE(out.find("resume: taking " + root + "/" + StepDirName(want_step) + ", step " +
                     std::to_string(want_step)),
            std::string::npos)
      << out;
  if (!committed) {
    EXPECT_NE(out.find("resume: skipped .tmp-" + StepDirName(4)), std::string::npos) << out;
    EXPECT_NE(out.find("uncommitted (interrupted save), ignored"), std::string::npos) << out;
  }

  const std::map<int64_t, double> want = LossesByStep(*dir_ / "reference.jsonl");
  const std::map<int64_t, double> got = LossesByStep(*dir_ / (run + ".jsonl"));
  EXPECT_EQ(want.size(), 6u);
  for (const auto& [step, loss] : want) {
    ASSERT_TRUE(got.count(step)) << "step " << step;
    EXPECT_EQ(std::memcmp(&loss, &got.at(step), sizeof(double)), 0) << "step " << step;
  }
  EXPECT_EQ(got.size(), want.size());
  for (int step : {2, 4, 6}) {
    SCOPED_TRACE("step " + std::to_string(step));
    ExpectSameCheckpoint(*dir_ / "reference/" + StepDirName(step), root + "/" + StepDirName(step));
  }
  EXPECT_EQ(ReadFile(root + "/latest"), StepDirName(6) + "\n");
}

// A committed step whose files were damaged afterwards is passed over with its reason.
TEST_F(CrashResume, CorruptedNewestStepIsSkippedWithItsReason) {
  const std::string root = *dir_ / "corrupt";
  Train("corrupt", 4, false);
  const std::string victim = root + "/" + StepDirName(4) + "/train_state.json";
  std::string bytes = ReadFile(victim);
  bytes[bytes.size() / 2] ^= 1;  // same size: only the hash can tell
  WriteFile(victim, bytes);

  const std::string out = Train("corrupt", 6, true);
  EXPECT_NE(out.find("resume: skipped " + StepDirName(4) +
                     ": train_state.json SHA-256 mismatch (contents corrupted)"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("resume: taking " + root + "/" + StepDirName(2) + ", step 2"),
            std::string::npos)
      << out;
  ExpectSameCheckpoint(*dir_ / "reference/" + StepDirName(6), root + "/" + StepDirName(6));
}

INSTANTIATE_TEST_SUITE_P(Phases, CrashResume,
                         ::testing::Values("mid-shard", "before-rename", "after-rename"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s)
                             if (c == '-') c = '_';
                           return s;
                         });

}  // namespace
}  // namespace mt::e2e

// tests/trainer/report_run_test.cc: `moetrain report` on a short real training run (the
// tiny e2e config, 12 steps, a few seconds): the page has one heatmap per MoE layer with a
// cell per expert and expert_load record, every --png chart decodes and is not blank, the
// TensorBoard file exists, and headless Chromium renders the page to a non-blank
// screenshot. Without Chromium the rendering test skips, unless
// MOETRAIN_REQUIRE_NPM_FIXTURES=1 (CI, where launch/setup.sh installs it): then it fails.
#include <cstdlib>
#include <string>
#include <vector>

#include "tests/trainer/e2e_util.h"
#include "tests/trainer/png_check.h"

namespace mt::e2e {
namespace {

int Count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

std::string FindChromium() {
  for (const char* name : {"chromium", "chromium-browser", "google-chrome"}) {
    const std::string cmd = std::string("command -v ") + name + " >/dev/null 2>&1";
    if (std::system(cmd.c_str()) == 0) return name;
  }
  return "";
}

class ReportRun : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    TinyData data = PrepareTinyData(*dir_);
    const std::string config = WriteTinyConfig(*dir_, data);
    const std::string run = *dir_ / "run";
    RunOk({"train", "--config", config, "--set", "training.steps=12", "--set",
           "training.eval_interval=4", "--set", "logging.interval=2", "--set",
           "logging.expert_load_interval=1", "--set",
           "logging.metrics_file=" + run + "/metrics.jsonl", "--set",
           "logging.tensorboard_dir=" + run + "/tb", "--set",
           "checkpoint.dir=" + run + "/checkpoints", "--set", "checkpoint.interval=6"});
    report_output_ = new std::string(RunOk({"report", run, "--png", *dir_ / "png"}));
  }
  static void TearDownTestSuite() {
    delete report_output_;
    delete dir_;
  }
  static TempDir* dir_;
  static std::string* report_output_;
};

TempDir* ReportRun::dir_ = nullptr;
std::string* ReportRun::report_output_ = nullptr;

TEST_F(ReportRun, OneHeatmapPerMoeLayerWithACellPerExpertAndStep) {
  const std::string html_path = *dir_ / "run/report.html";
  EXPECT_NE(report_output_->find(html_path), std::string::npos) << *report_output_;
  const std::string html = ReadFile(html_path);
  // The tiny model: layer 0 dense, layer 1 and the MTP module's layer 2 MoE, 4 experts.
  EXPECT_EQ(Count(html, "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"heatmap\""), 2);
  for (const char* id : {"layer01_load", "layer02_load"}) {
    const size_t at = html.find(std::string("id=\"") + id + "\"");
    ASSERT_NE(at, std::string::npos) << id;
    const std::string svg = html.substr(at, html.find("</svg>", at) - at);
    EXPECT_EQ(Count(svg, "class=\"cell\""), 4 * 12) << id;
  }
  EXPECT_NE(html.find("step-0000012</td><td>committed"), std::string::npos);
  EXPECT_NE(html.find("final validation loss"), std::string::npos);
  EXPECT_FALSE(fs::is_empty(*dir_ / "run/tb"));
}

TEST_F(ReportRun, PngChartsDecodeAndAreNotBlank) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(*dir_ / "png")) {
    const pngcheck::PngInfo p = pngcheck::Inspect(e.path().string());
    EXPECT_EQ(p.error, "");
    EXPECT_GT(p.width, 100u) << e.path();
    EXPECT_GT(p.height, 100u) << e.path();
    EXPECT_GT(p.non_background, 0.01) << e.path();
    ++n;
  }
  EXPECT_EQ(n, 8 + 2 * 2);  // 8 training charts, a heatmap and a bias chart per MoE layer
  EXPECT_TRUE(fs::exists(*dir_ / "png/layer01_load.png"));
}

TEST_F(ReportRun, RendersInHeadlessChromium) {
  const std::string chromium = FindChromium();
  if (chromium.empty()) {
    const char* strict = std::getenv("MOETRAIN_REQUIRE_NPM_FIXTURES");
    if (strict && std::string(strict) == "1")
      FAIL() << "MOETRAIN_REQUIRE_NPM_FIXTURES=1 but no chromium on PATH (Debian package "
                "`chromium`; launch/setup.sh installs it)";
    GTEST_SKIP() << "no chromium on PATH (Debian package `chromium`)";
  }
  const std::string shot = *dir_ / "screenshot.png", log = *dir_ / "chromium.log";
  const std::string cmd = "timeout 120 " + chromium +
                          " --headless --no-sandbox --disable-gpu --disable-dev-shm-usage "
                          "--hide-scrollbars --user-data-dir=" +
                          (*dir_ / "chromium-profile") +
                          " --window-size=1280,2400 --screenshot=" + shot + " file://" +
                          (*dir_ / "run/report.html") + " >" + log + " 2>&1";
  const int rc = std::system(cmd.c_str());
  ASSERT_EQ(rc, 0) << cmd << "\n" << ReadFile(log);
  const pngcheck::PngInfo p = pngcheck::Inspect(shot);
  ASSERT_EQ(p.error, "") << ReadFile(log);
  EXPECT_EQ(p.width, 1280u);
  EXPECT_EQ(p.height, 2400u);
  // Charts, heatmaps and text cover a good part of the page in many colours.
  EXPECT_GT(p.non_background, 0.2);
  EXPECT_GT(p.colours, 50u);
}

TEST(ReportCommand, UsageAndErrors) {
  CommandResult help = RunMoetrain({"report", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.output.find("usage: moetrain report RUN_DIR"), std::string::npos);
  EXPECT_EQ(RunMoetrain({"report"}).exit_code, 2);
  TempDir empty;
  CommandResult missing = RunMoetrain({"report", empty.path()});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find(empty / "metrics.jsonl"), std::string::npos) << missing.output;
}

}  // namespace
}  // namespace mt::e2e

// tests/trainer/report_test.cc: `moetrain report`'s pieces on a synthetic run written
// through MetricsLogger (the same calls the training loop makes): what ReadRun gets back,
// the heatmap cells and their colours, the HTML page, the PNG files, and bad input.
#include "trainer/report.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/trainer/png_check.h"
#include "trainer/metrics.h"
#include "trainer/report_svg.h"

namespace mt::report {
namespace {

namespace fs = std::filesystem;

int Count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

// The <svg> element with this id.
std::string SvgById(const std::string& html, const std::string& id) {
  const size_t at = html.find("id=\"" + id + "\"");
  if (at == std::string::npos) return "";
  const size_t begin = html.rfind("<svg", at);
  return html.substr(begin, html.find("</svg>", at) - begin);
}

class Report : public ::testing::Test {
 protected:
  // 20 steps, 2 MoE layers (1 and 2) of 4 experts; layer 1's expert 0 starts 3x over-loaded
  // and is balanced by step 10; layer 2 stays balanced. Logging every 5 steps, expert
  // loads every 2, validation at 10 and 20, checkpoints at 10 (committed) and 20 (not).
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "mt_report_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    Config c;
    c.model.num_hidden_layers = 2;
    c.model.first_k_dense_replace = 1;
    c.model.num_nextn_predict_layers = 1;
    c.model.n_routed_experts = 4;
    c.training.steps = 20;
    c.checkpoint.dir = dir_ + "/checkpoints";
    c.logging.metrics_file = dir_ + "/metrics.jsonl";
    c.logging.expert_load_interval = 2;
    auto log = MetricsLogger::Create(c.logging.metrics_file, "", false);
    ASSERT_TRUE(log.ok()) << log.status();
    ASSERT_TRUE((*log)->LogRunStart(c, 0).ok());
    for (int64_t step = 1; step <= 20; ++step) {
      const int64_t hot = step < 10 ? 60 - 4 * step : 20;  // 3x the mean at first
      const int64_t rest = (80 - hot) / 3;
      const float b = 0.002f * static_cast<float>(std::min<int64_t>(step, 10));
      ASSERT_TRUE((*log)
                      ->ObserveExperts(step, 64.0 * step,
                                       {{hot, rest, rest, 80 - hot - 2 * rest}, {20, 20, 20, 20}},
                                       {{-3 * b, b, b, b}, {0, 0, 0, 0}})
                      .ok());
      if (step % 5 == 0) {
        StepMetrics m;
        m.step = step;
        m.tokens = 64.0 * step;
        m.loss = 6.0 - 0.1 * step;
        m.mtp_loss = {6.5 - 0.1 * step};
        m.lr = 1e-3;
        m.grad_norm = 1;
        m.tokens_per_s = 5000;
        m.mfu = 0.02;
        ASSERT_TRUE((*log)->Log(m).ok());
      }
      if (step % 10 == 0) {
        ASSERT_TRUE(
            (*log)->LogEvent({{"event", "validation"}, {"step", step}, {"val_loss", 4.5}}).ok());
      }
    }
    fs::create_directories(dir_ + "/checkpoints/step-0000010");
    fs::create_directories(dir_ + "/checkpoints/step-0000020");
    std::ofstream(dir_ + "/checkpoints/step-0000010/manifest.json") << "{}";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string dir_;
};

TEST_F(Report, ReadsTheRunBack) {
  auto run = ReadRun(dir_);
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->rows.size(), 4u);
  EXPECT_EQ(run->rows.back().step, 20);
  EXPECT_EQ(run->rows.back().tokens, 1280);
  ASSERT_EQ(run->validation.size(), 2u);
  ASSERT_EQ(run->expert_loads.size(), 10u);
  EXPECT_EQ(run->expert_loads[0].loads[0], (std::vector<int64_t>{52, 9, 9, 10}));
  ASSERT_EQ(run->starts.size(), 1u);
  EXPECT_EQ(run->starts[0].moe_layers, (std::vector<int64_t>{1, 2}));
  EXPECT_GE(run->wall_time_s, 0);
  EXPECT_EQ(run->TokensAt(10), 640);
  EXPECT_EQ(run->TokensAt(12), 768);
  ASSERT_EQ(run->checkpoints.size(), 2u);
  EXPECT_TRUE(run->checkpoints[0].committed);
  EXPECT_FALSE(run->checkpoints[1].committed);
}

TEST_F(Report, OneHeatmapPerMoeLayerWithACellPerExpertAndRecord) {
  auto run = ReadRun(dir_ + "/metrics.jsonl");
  ASSERT_TRUE(run.ok()) << run.status();
  const std::string html = ReportHtml(*run, ReportFigures(*run));
  EXPECT_EQ(Count(html, "class=\"heatmap\""), 2);
  for (const char* id : {"layer01_load", "layer02_load"}) {
    const std::string svg = SvgById(html, id);
    ASSERT_FALSE(svg.empty()) << id;
    EXPECT_EQ(Count(svg, "class=\"cell\""), 4 * 10) << id;
  }
  // Layer 1, step 2: expert 0 has 52 of 80 tokens (2.6x the mean): red; layer 2 is
  // balanced throughout: every cell white.
  const std::string l1 = SvgById(html, "layer01_load");
  const std::string first_cell = l1.substr(l1.find("class=\"cell\""), 200);
  EXPECT_NE(first_cell.find("expert 0, step 2: 2.60x mean"), std::string::npos) << first_cell;
  EXPECT_NE(first_cell.find("fill=\"#"), std::string::npos);
  EXPECT_GT(LoadColor(2.6).r, LoadColor(2.6).b);
  EXPECT_EQ(Count(SvgById(html, "layer02_load"), "fill=\"#ffffff\""),
            4 * 10 + 1);  // + the background
  // Every chart the issue asks for, the summary and the config.
  for (const char* id : {"loss", "mtp_loss", "lr", "grad_norm", "tokens_per_s", "mfu",
                         "layer01_bias", "layer02_bias"})
    EXPECT_FALSE(SvgById(html, id).empty()) << id;
  EXPECT_NE(html.find("step-0000010</td><td>committed"), std::string::npos);
  EXPECT_NE(html.find("step-0000020</td><td>incomplete"), std::string::npos);
  EXPECT_NE(html.find("final validation loss</th><td>4.5000"), std::string::npos);
  EXPECT_NE(html.find("&quot;n_routed_experts&quot;: 4"), std::string::npos);
  // Self-contained: nothing fetched, nothing run.
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("href="), std::string::npos);
  EXPECT_EQ(html.find("src="), std::string::npos);
}

TEST_F(Report, PngFilesDecodeAtTheFigureSizeAndAreNotBlank) {
  auto run = ReadRun(dir_);
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_TRUE(WriteReport(*run, dir_ + "/report.html", dir_ + "/png").ok());
  const std::vector<Figure> figures = ReportFigures(*run);
  ASSERT_EQ(figures.size(), 8u + 2 * 2);
  for (const Figure& f : figures) {
    const pngcheck::PngInfo p = pngcheck::Inspect(dir_ + "/png/" + f.id + ".png");
    ASSERT_EQ(p.error, "") << f.id;
    EXPECT_EQ(p.width, static_cast<uint32_t>(std::ceil(f.width))) << f.id;
    EXPECT_EQ(p.height, static_cast<uint32_t>(std::ceil(f.height))) << f.id;
    EXPECT_GT(p.non_background, 0.01) << f.id;
    EXPECT_GT(p.colours, 5u) << f.id;
  }
}

// Metrics lines for steps [from, to], loss = 100 * process + step.
std::string Lines(int process, int from, int to, double time) {
  std::string out;
  for (int step = from; step <= to; ++step)
    out +=
        nlohmann::json{{"step", step},       {"tokens", 10 * step}, {"loss", 100 * process + step},
                       {"mtp_loss", {1.0}},  {"balance_loss", 0},   {"lr", 1},
                       {"grad_norm", 1},     {"tokens_per_s", 1},   {"mfu", 0},
                       {"time", time + step}}
            .dump() +
        "\n";
  return out;
}

std::string Start(int64_t first_step, double time, std::vector<int64_t> layers = {1}) {
  return nlohmann::json{{"event", "run_start"}, {"time", time},
                        {"cwd", "/"},           {"config", {{"training", {{"steps", 20}}}}},
                        {"moe_layers", layers}, {"first_step", first_step}}
             .dump() +
         "\n";
}

TEST(ReportInput, AResumedProcessSupersedesWhatTheDeadOneLoggedAfterItsCheckpoint) {
  std::string tmpl = (fs::temp_directory_path() / "mt_report_resume_XXXXXX").string();
  ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
  // Process 1 logs steps 1-8 and dies; process 2 resumes after step 5 and logs 6-10.
  std::ofstream(tmpl + "/metrics.jsonl")
      << Start(0, 1000) << Lines(1, 1, 8, 1000) << Start(5, 2000) << Lines(2, 6, 10, 2000);
  auto run = ReadRun(tmpl);
  ASSERT_TRUE(run.ok()) << run.status();
  std::vector<double> losses;
  for (const MetricsRow& r : run->rows) losses.push_back(r.loss);
  EXPECT_EQ(losses, (std::vector<double>{101, 102, 103, 104, 105, 206, 207, 208, 209, 210}));
  EXPECT_EQ(run->starts.size(), 2u);
  EXPECT_DOUBLE_EQ(run->wall_time_s, 8 + 10);
  // A fresh run appended to the same file replaces both.
  std::ofstream(tmpl + "/metrics.jsonl", std::ios::app) << Start(0, 5000) << Lines(3, 1, 3, 5000);
  run = ReadRun(tmpl);
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->rows.size(), 3u);
  EXPECT_EQ(run->rows.back().loss, 303);
  EXPECT_EQ(run->starts.size(), 1u);
  EXPECT_DOUBLE_EQ(run->wall_time_s, 3);
  std::error_code ec;
  fs::remove_all(tmpl, ec);
}

TEST(ReportInput, ALayerOnAnotherPipelineStageHasLoadsButNoBiases) {
  std::string tmpl = (fs::temp_directory_path() / "mt_report_pp_XXXXXX").string();
  ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
  std::ofstream out(tmpl + "/metrics.jsonl");
  out << Start(0, 1000, {1, 2});
  for (int step = 1; step <= 3; ++step)
    out << nlohmann::json{{"event", "expert_load"},
                          {"step", step},
                          {"tokens", 10 * step},
                          {"loads", {{1, 3}, {2, 2}}},
                          {"biases", {{0.1, -0.1}, nlohmann::json::array()}}}
               .dump()
        << "\n";
  out << Lines(1, 1, 3, 1000);
  out.close();
  auto run = ReadRun(tmpl);
  ASSERT_TRUE(run.ok()) << run.status();
  const std::string html = ReportHtml(*run, ReportFigures(*run));
  EXPECT_EQ(Count(SvgById(html, "layer01_load"), "class=\"cell\""), 2 * 3);
  EXPECT_EQ(Count(SvgById(html, "layer02_load"), "class=\"cell\""), 2 * 3);
  EXPECT_EQ(SvgById(html, "layer01_bias").find("not on rank 0"), std::string::npos);
  EXPECT_NE(SvgById(html, "layer02_bias").find("not on rank 0&#39;s pipeline stage"),
            std::string::npos);
  std::error_code ec;
  fs::remove_all(tmpl, ec);
}

TEST(ReportFigure, ManyRecordsAreAveragedIntoAtMostMaxColumns) {
  std::vector<int64_t> steps;
  std::vector<std::vector<double>> ratio;
  for (int i = 0; i < 1000; ++i) {
    steps.push_back(i + 1);
    ratio.push_back({1.0, 2.0, 0.5});
  }
  const Figure f = Heatmap({"h", "t", 1000, 300}, steps, ratio);
  int cells = 0;
  for (const Rect& r : f.rects) cells += r.cls == "cell";
  EXPECT_EQ(cells, 300 * 3);
}

TEST(ReportFigure, TicksAndLabels) {
  EXPECT_EQ(NiceTicks(0, 10, 5), (std::vector<double>{0, 2, 4, 6, 8, 10}));
  const std::vector<double> t = NiceTicks(0.13, 0.61, 4);  // 0.12 a tick: steps of 0.2
  ASSERT_EQ(t.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(t[i], 0.2 * (i + 1), 1e-12);
  EXPECT_EQ(FormatTick(1.5e6), "1.5M");
  EXPECT_EQ(FormatTick(20000), "20K");
  EXPECT_EQ(FormatTick(0.003), "0.003");
  EXPECT_EQ(EscapeXml("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
  EXPECT_EQ(LoadColor(1.0).r, 255);
  EXPECT_EQ(LoadColor(1.0).b, 255);
  EXPECT_GT(LoadColor(0.25).b, LoadColor(0.25).r);
}

TEST(ReportInput, ErrorsNameTheFileAndLine) {
  std::string tmpl = (fs::temp_directory_path() / "mt_report_bad_XXXXXX").string();
  ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
  auto missing = ReadRun(tmpl);
  EXPECT_FALSE(missing.ok());
  EXPECT_NE(std::string(missing.status().message()).find(tmpl + "/metrics.jsonl"),
            std::string::npos)
      << missing.status();
  std::ofstream(tmpl + "/metrics.jsonl")
      << R"({"step": 1, "tokens": 10, "loss": 5, "mtp_loss": [], "balance_loss": 0, )"
      << R"("lr": 1, "grad_norm": 1, "tokens_per_s": 1, "mfu": 0})"
      << "\n"
      << R"({"step": 2, "tokens": 20})"
      << "\n";
  auto bad = ReadRun(tmpl);
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("metrics.jsonl line 2"), std::string::npos)
      << bad.status();
  std::ofstream(tmpl + "/metrics.jsonl")
      << R"({"event": "expert_load", "step": 2, "tokens": 1, "loads": [[1, 2]], "biases": [[0]]})"
      << "\n";
  bad = ReadRun(tmpl);
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("line 1: layer 0 has 2 loads and 1 biases"),
            std::string::npos)
      << bad.status();
  std::error_code ec;
  fs::remove_all(tmpl, ec);
}

}  // namespace
}  // namespace mt::report

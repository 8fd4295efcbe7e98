// tests/launch/planner_io_test.cc: the planner's inputs and outputs: cluster files, stage
// files, calibration from a metrics file, and the `moetrain plan` command line.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "launch/planner.h"

namespace mt::plan {
namespace {

std::string TempFile(const std::string& name, const std::string& text) {
  const std::string path = (std::filesystem::temp_directory_path() / name).string();
  std::ofstream(path) << text;
  return path;
}

int RunPlan(std::vector<std::string> args, std::string* out) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  const int rc = RunPlanCommand(static_cast<int>(argv.size()), argv.data());
  *out = testing::internal::GetCapturedStdout() + testing::internal::GetCapturedStderr();
  return rc;
}

TEST(PlannerIo, ShippedClusterFilesLoad) {
  for (const char* name :
       {"deepseek-v3-h800", "h100-8gpu", "h200-8gpu", "gb200-nvl72", "rtx4090-pcie"}) {
    absl::StatusOr<ClusterSpec> c =
        LoadClusterSpec(std::string("configs/clusters/") + name + ".yaml");
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->name, name);
    EXPECT_GT(c->IntraNodeBytesPerSecond(), c->InterNodeBytesPerSecond()) << name;
    EXPECT_GT(c->fp8_tflops, c->bf16_tflops);
  }
}

TEST(PlannerIo, ClusterErrorsNameFileLineAndKey) {
  const std::string base =
      "name: x\ngpu: y\nnum_gpus: 16\ngpus_per_node: 8\nbf16_tflops: 100\nfp8_tflops: 200\n"
      "memory_gib: 80\nmemory_bandwidth_gbps: 3000\nnvlink_gbps: 0\nnvlink_efficiency: 0\n"
      "internode_gbps: 50\ninternode_efficiency: 0.8\nprice_per_gpu_hour: 1\n";
  absl::StatusOr<ClusterSpec> no_pcie = ParseClusterSpec(base, "c.yaml");
  ASSERT_FALSE(no_pcie.ok());
  EXPECT_NE(no_pcie.status().message().find("pcie_gbps"), std::string::npos) << no_pcie.status();
  EXPECT_TRUE(ParseClusterSpec(base + "pcie_gbps: 32\npcie_efficiency: 0.5\n", "c.yaml").ok());
  absl::StatusOr<ClusterSpec> unknown = ParseClusterSpec(base + "nvlnk_gbps: 3\n", "c.yaml");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("c.yaml:14: nvlnk_gbps: unknown key"),
            std::string::npos)
      << unknown.status();
  absl::StatusOr<ClusterSpec> bad = ParseClusterSpec("name: x\nnum_gpus: many\n", "c.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("c.yaml:2: num_gpus: got many"), std::string::npos)
      << bad.status();
  EXPECT_FALSE(ParseClusterSpec("name: x\n", "c.yaml").ok());  // missing keys
}

TEST(PlannerIo, StageFiles) {
  Layout base;
  base.pp = 4, base.dp = 8, base.global_batch = 64, base.seq_len = 1024;
  const std::string good =
      TempFile("stages_ok.yaml",
               "price_per_gpu_hour: 3\n"
               "stages:\n"
               "  - {name: pre, tokens: 1.5B}\n"
               "  - {name: long, steps: 10, seq_len: 8192, global_batch: 16, pp: 2}\n"
               "  - {name: sft, gpu_hours: 2K}\n");
  absl::StatusOr<StagesFile> f = LoadStages(good, base);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ(f->stages.size(), 3u);
  EXPECT_DOUBLE_EQ(f->stages[0].tokens, 1.5e9);
  EXPECT_TRUE(f->stages[0].use_ramp);
  EXPECT_DOUBLE_EQ(f->stages[1].tokens, 10.0 * 16 * 8192);
  EXPECT_EQ(f->stages[1].layout.dp, 16);  // a new pp keeps the 32 GPUs
  EXPECT_FALSE(f->stages[1].use_ramp);
  EXPECT_DOUBLE_EQ(*f->stages[2].given_gpu_hours, 2000);
  EXPECT_DOUBLE_EQ(*f->price_per_gpu_hour, 3);

  const std::string both =
      TempFile("stages_both.yaml", "stages:\n  - {name: a, tokens: 1B, gpu_hours: 5}\n");
  absl::StatusOr<StagesFile> b = LoadStages(both, base);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("exactly one of tokens, steps and gpu_hours"),
            std::string::npos);
  const std::string typo = TempFile("stages_typo.yaml", "stages:\n  - name: a\n    tokenz: 1B\n");
  absl::StatusOr<StagesFile> t = LoadStages(typo, base);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find(":3: stages[0].tokenz: unknown key"), std::string::npos)
      << t.status();
}

TEST(PlannerIo, CalibrationFromAMetricsFile) {
  // A run the planner itself predicts at 20% efficiency, as the trainer would log it (whole-job
  // tokens/s), after two slow warm-up steps and with a validation event in between.
  PlanRequest r;
  absl::StatusOr<Config> config = LoadConfig("configs/deepseek-v3-671b.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  r.model = config->model;
  r.cluster = *LoadClusterSpec("configs/clusters/h100-8gpu.yaml");
  r.layout.pp = 8, r.layout.ep = 32, r.layout.dp = 128, r.layout.global_batch = 128 * 32;
  r.layout.precision = "fp8";
  r.tokens = 1e12;
  r.efficiency = 0.2;
  absl::StatusOr<PlanResult> truth = MakePlan(r);
  ASSERT_TRUE(truth.ok()) << truth.status();
  const double job = truth->tokens_per_s_per_gpu * r.layout.NumGpus();
  std::string lines;
  for (int step = 1; step <= 20; ++step) {
    const double tps = step <= 2 ? job / 3 : job * (step % 2 ? 1.001 : 0.999);
    lines += "{\"step\": " + std::to_string(step) + ", \"tokens\": " + std::to_string(step * 1e6) +
             ", \"loss\": 3.0, \"tokens_per_s\": " + std::to_string(tps) + "}\n";
    if (step == 10) lines += "{\"event\": \"validation\", \"val_loss\": 3.1}\n";
  }
  const std::string path = TempFile("metrics.jsonl", lines);
  absl::StatusOr<double> measured = ReadMeasuredThroughput(path, r.layout.NumGpus());
  ASSERT_TRUE(measured.ok()) << measured.status();
  EXPECT_NEAR(*measured / truth->tokens_per_s_per_gpu, 1, 0.002);
  r.efficiency = 0.5;  // forgotten: calibration must find 0.2 again
  absl::StatusOr<double> fitted = CalibrateEfficiency(r, *measured);
  ASSERT_TRUE(fitted.ok()) << fitted.status();
  EXPECT_NEAR(*fitted, 0.2, 0.004);
  // Faster than the peak allows: a unit mix-up, reported as such.
  EXPECT_FALSE(CalibrateEfficiency(r, 1e9).ok());
  const std::string broken =
      TempFile("broken.jsonl", "{\"step\": 1, \"tokens_per_s\": 5}\nnot json\n");
  absl::StatusOr<double> b = ReadMeasuredThroughput(broken, 8);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("broken.jsonl:2"), std::string::npos) << b.status();
}

TEST(PlannerIo, CommandLineJson) {
  std::string out;
  ASSERT_EQ(RunPlan({"plan", "--model", "configs/deepseek-v3-671b.yaml", "--cluster",
                     "configs/clusters/deepseek-v3-h800.yaml", "--tokens", "14.8T", "--json"},
                    &out),
            0)
      << out;
  const nlohmann::json j = nlohmann::json::parse(out);
  for (const char* key :
       {"params_total", "params_active", "flops_per_token", "flops_per_token_no_mtp",
        "memory_per_gpu_bytes", "step_time_s", "tokens_per_s_per_gpu", "mfu", "bubble_fraction",
        "gpu_hours", "cost_usd"}) {
    EXPECT_TRUE(j.contains(key) && j[key].is_number()) << key;
  }
  EXPECT_NEAR(j["flops_per_token"].get<double>() / 1e9, 260, 2.6);
  EXPECT_NEAR(j["tokens"].get<double>(), 14.8e12, 1);
  EXPECT_NEAR(j["cost_usd"].get<double>(), 2 * j["gpu_hours"].get<double>(), 1);

  // Flags override the config; a HF config.json works too.
  const std::string hf =
      TempFile("config.json",
               ModelConfigToHfJson(LoadConfig("configs/deepseek-v3-671b.yaml")->model).dump());
  ASSERT_EQ(RunPlan({"plan", "--model", hf, "--cluster", "configs/clusters/h200-8gpu.yaml",
                     "--tokens", "1T", "--pp", "8", "--ep", "32", "--schedule", "zb1p",
                     "--precision", "bf16", "--json"},
                    &out),
            0)
      << out;
  const nlohmann::json h = nlohmann::json::parse(out);
  EXPECT_EQ(h["layout"]["pp"], 8);
  EXPECT_EQ(h["layout"]["dp"], 32);  // 256 GPUs / pp
  EXPECT_EQ(h["layout"]["schedule"], "zb1p");
  EXPECT_NEAR(h["params_total"].get<double>(), j["params_total"].get<double>(), 1);

  // The readable table states the MFU convention.
  ASSERT_EQ(RunPlan({"plan", "--model", "configs/deepseek-v3-671b.yaml", "--cluster",
                     "configs/clusters/deepseek-v3-h800.yaml", "--tokens", "14.8T"},
                    &out),
            0);
  EXPECT_NE(out.find("convention: model FLOPs by Megatron-LM's formula"), std::string::npos) << out;
}

TEST(PlannerIo, CommandLineErrors) {
  std::string out;
  EXPECT_EQ(RunPlan({"plan", "--model", "configs/deepseek-v3-671b.yaml"}, &out), 1);
  EXPECT_NE(out.find("--cluster is required"), std::string::npos) << out;
  EXPECT_EQ(RunPlan({"plan", "--frobnicate"}, &out), 2);
  EXPECT_NE(out.find("unknown argument --frobnicate"), std::string::npos) << out;
  EXPECT_EQ(RunPlan({"plan", "--model", "configs/deepseek-v3-671b.yaml", "--cluster",
                     "configs/clusters/deepseek-v3-h800.yaml", "--tokens", "lots"},
                    &out),
            1);
  EXPECT_NE(out.find("lots"), std::string::npos) << out;
  // DualPipe with too few micro-batches: 1024 / 128 = 8 < 2 x pp.
  EXPECT_EQ(RunPlan({"plan", "--model", "configs/deepseek-v3-671b.yaml", "--cluster",
                     "configs/clusters/deepseek-v3-h800.yaml", "--tokens", "1T", "--global-batch",
                     "1024"},
                    &out),
            1);
  EXPECT_NE(out.find("DualPipe needs"), std::string::npos) << out;
  EXPECT_EQ(RunPlan({"plan", "--model", "configs/deepseek-v3-671b.yaml", "--cluster",
                     "configs/clusters/deepseek-v3-h800.yaml", "--tokens", "1T", "--pp", "16",
                     "--dp", "256"},
                    &out),
            1);
  EXPECT_NE(out.find("4096 GPUs"), std::string::npos) << out;
}

}  // namespace
}  // namespace mt::plan

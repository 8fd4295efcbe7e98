// bench/train_bench.cc: moetrain vs PyTorch eager, training the same model side by side.
//
//   train_bench [--config configs/default.yaml] [--steps 10] [--warmup 2] [--threads 2]
//               [--batch 16] [--seq 128]
//
// Both train the config's model (fp32, full objective, clipping, AdamW, bias update) on the
// same random batches with the same thread count; moetrain runs in this process with the
// optimizer `moetrain train` uses (ZeRO-1 AdamW over one-rank process groups), PyTorch
// through bench/pytorch_train.py. Prints tokens/s for each and the ratio. No assertions:
// this is a measurement, reported in notes with the command that produced it.
#include <cblas.h>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "parallel/communicator_groups.h"
#include "trainer/config.h"
#include "trainer/model.h"
#include "trainer/optimizer.h"
#include "trainer/rng.h"
#include "trainer/zero_optimizer.h"

namespace {

std::string Arg(int argc, char** argv, const std::string& key, const std::string& def) {
  for (int i = 1; i + 1 < argc; ++i)
    if (argv[i] == "--" + key) return argv[i + 1];
  return def;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string config_path = Arg(argc, argv, "config", "configs/default.yaml");
  const int steps = std::stoi(Arg(argc, argv, "steps", "10"));
  const int warmup = std::stoi(Arg(argc, argv, "warmup", "2"));
  const int threads = std::stoi(Arg(argc, argv, "threads", "2"));
  auto cfg = mt::LoadConfig(config_path);
  if (!cfg.ok()) {
    std::fprintf(stderr, "train_bench: %s\n", std::string(cfg.status().message()).c_str());
    return 1;
  }
  const int64_t B = std::stoll(Arg(argc, argv, "batch", std::to_string(cfg->training.micro_batch_size)));
  const int64_t S = std::stoll(Arg(argc, argv, "seq", std::to_string(cfg->training.seq_len)));
  openblas_set_num_threads(threads);
  omp_set_num_threads(threads);

  // Same random batches on both sides: written once, read by PyTorch.
  const std::string dir = std::filesystem::temp_directory_path() / "moetrain_train_bench";
  std::filesystem::create_directories(dir);
  std::vector<int32_t> tokens(B * (S + 1));
  nlohmann::json rows = nlohmann::json::array();
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int32_t> row(S + 1);
    for (int64_t i = 0; i <= S; ++i)
      row[i] = tokens[b * (S + 1) + i] =
          static_cast<int32_t>(mt::RandomBits(1, 2, b * (S + 1) + i) % cfg->model.vocab_size);
    rows.push_back(row);
  }
  std::ofstream(dir + "/batch.json") << nlohmann::json{{"tokens", rows}}.dump();
  std::ofstream(dir + "/config.json") << mt::ModelConfigToHfJson(cfg->model).dump(2);

  mt::Model model(cfg->model, 1);
  auto topo = mt::Topology::Create(mt::LayoutSpec{}, 1, 0);
  auto groups = topo.ok() ? mt::CreateProcessGroups(*topo) : topo.status();
  if (!groups.ok()) {
    std::fprintf(stderr, "train_bench: %s\n", std::string(groups.status().message()).c_str());
    return 1;
  }
  auto opt = mt::ZeroAdamW::Create(model.params(), cfg->optimizer, groups->dp.get(),
                                   groups->expert_dp.get(), groups->world.get(),
                                   [](const mt::Param&) { return true; });
  if (!opt.ok()) {
    std::fprintf(stderr, "train_bench: %s\n", std::string(opt.status().message()).c_str());
    return 1;
  }
  const mt::ObjectiveWeights w{cfg->training.mtp_lambda.Value(0), cfg->training.balance_loss_alpha};
  auto step = [&] {
    model.params().ZeroGrads();
    std::vector<std::vector<int64_t>> loads;
    model.ForwardBackward(tokens.data(), B, S, w, 1.0, &loads);
    const double norm = (*opt)->ReduceGradients().value();
    MT_CHECK((*opt)->Step(1e-3, norm, 1.0).ok(), "optimizer step");
    mt::UpdateExpertBiases(model.moe_layers(), loads, 1e-3);
  };
  for (int i = 0; i < warmup; ++i) step();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) step();
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double ours = static_cast<double>(B * S * steps) / dt;
  std::printf("moetrain: %.0f tokens/s (%d steps of %lld x %lld, %d threads)\n", ours, steps,
              static_cast<long long>(B), static_cast<long long>(S), threads);
  std::fflush(stdout);

  const std::string cmd = "/usr/bin/python3 bench/pytorch_train.py --config " + dir +
                          "/config.json --tokens " + dir + "/batch.json --steps " +
                          std::to_string(steps) + " --warmup " + std::to_string(warmup) +
                          " --threads " + std::to_string(threads) + " 2>/dev/null | tail -n 1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string line;
  char buf[4096];
  while (p && fgets(buf, sizeof(buf), p)) line += buf;
  if (!p || pclose(p) != 0 || line.empty()) {
    std::fprintf(stderr, "train_bench: PyTorch run failed: %s\n", cmd.c_str());
    return 1;
  }
  const double theirs = nlohmann::json::parse(line).at("tokens_per_s").get<double>();
  std::printf("pytorch:  %.0f tokens/s (eager, same model, batches and threads)\n", theirs);
  std::printf("ratio moetrain/pytorch: %.2fx\n", ours / theirs);
  return 0;
}

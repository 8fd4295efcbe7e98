// bench/gpu/device_train_bench.cc: the GPU training step's speed (trainer/device_model.h on
// CudaBackend): step time, tokens/s, MFU and peak device memory for one config, as a JSON
// line that bench/gpu/run_bench.sh puts in its table beside the PyTorch reference.
//
//   device_train_bench --config F.yaml [--precision fp32|bf16|fp8] [--steps 10] [--warmup 3]
//                      [--name NAME]
//
// A step is what the trainer's step is: every micro-batch of the global batch forward and
// backward, the global gradient norm, clipping, AdamW and the bias update, timed from the
// host with the device synchronised at the end of each step (GradNorm and the losses read
// back synchronise anyway). Tokens are random; speed does not depend on them. MFU is
// against the device's dense peak for the precision (FP32 on CUDA cores, BF16 or FP8 on
// tensor cores) when the device is one whose peak we know.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernels/cuda/backend_cuda.h"
#include "nlohmann/json.hpp"
#include "trainer/config.h"
#include "trainer/device_model.h"
#include "trainer/flops.h"
#include "trainer/rng.h"

namespace mt {
namespace {

int Main(int argc, char** argv) {
  std::string config_path, name, precision = "fp32";
  int64_t steps = 10, warmup = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--config") config_path = v;
    else if (a == "--steps") steps = std::atoll(v.c_str());
    else if (a == "--warmup") warmup = std::atoll(v.c_str());
    else if (a == "--name") name = v;
    else if (a == "--precision") precision = v;
    else {
      std::fprintf(stderr, "device_train_bench: unknown flag %s\n", a.c_str());
      return 2;
    }
  }
  if (config_path.empty() || steps < 1 || warmup < 0 || (precision != "fp32" && precision != "bf16" && precision != "fp8")) {
    std::fprintf(stderr,
                 "usage: device_train_bench --config F.yaml [--precision fp32|bf16|fp8] [--steps N>=1] "
                 "[--warmup N] [--name S]\n");
    return 2;
  }
  absl::StatusOr<Config> cfg =
      LoadConfig(config_path, {"training.precision=" + precision, "optimizer.moment_dtype=fp32"});
  if (!cfg.ok()) {
    std::fprintf(stderr, "device_train_bench: %s\n", cfg.status().ToString().c_str());
    return 1;
  }
  auto be = cuda::CudaBackend::Create(0);
  if (!be.ok()) {
    std::fprintf(stderr, "device_train_bench: %s\n", be.status().ToString().c_str());
    return 1;
  }
  const ModelConfig& m = cfg->model;
  const int64_t S = cfg->training.seq_len, mb = cfg->training.micro_batch_size;
  const int64_t micro = cfg->training.global_batch_size / mb;
  Model host(m, cfg->training.seed, *ParsePrecision(precision));
  DeviceModel gpu(&host, be->get());
  const ObjectiveWeights w{cfg->training.mtp_lambda.Value(0), cfg->training.balance_loss_alpha};
  std::vector<int32_t> tokens(mb * (S + 1));
  double seconds = 0, loss = 0;
  for (int64_t step = 1; step <= warmup + steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    gpu.ZeroGrads();
    std::vector<std::vector<int64_t>> loads;
    for (int64_t j = 0; j < micro; ++j) {
      for (size_t i = 0; i < tokens.size(); ++i)
        tokens[i] = static_cast<int32_t>(RandomBits(step, j, i) % m.vocab_size);
      loss = gpu.ForwardBackward(tokens.data(), mb, S, w, 1.0 / micro, &loads).main;
    }
    const double norm = gpu.GradNorm();
    gpu.OptimizerStep(cfg->optimizer, 1e-4, step, norm, loads, 0.001);
    gpu.backend().Synchronize();
    const double dt =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (step > warmup) seconds += dt;
    if (step == warmup) (*be)->MarkWarmupDone();  // timed steps should not cudaMalloc
  }
  const double tokens_per_s = static_cast<double>(steps * micro * mb * S) / seconds;
  const double flops = TrainingFlopsPerToken(m, S, /*with_mtp=*/true).total();
  const cuda::DeviceInfo& info = (*be)->info();
  const double peak = GpuDensePeakFlops(info.name, precision);
  nlohmann::json row = {
      {"name", name.empty() ? "moetrain " + precision + " (" + config_path + ")" : name},
      {"device", info.name},
      {"step_ms", 1e3 * seconds / steps},
      {"tokens_per_s", tokens_per_s},
      {"mfu", peak > 0 ? nlohmann::json(tokens_per_s * flops / peak) : nlohmann::json()},
      {"mfu_peak", peak > 0 ? "dense " + precision + " " + std::to_string(peak / 1e12) + " TFLOP/s"
                            : "unknown"},
      {"peak_mem_bytes", (*be)->allocator().stats().peak_bytes},
      {"cuda_mallocs_after_warmup", (*be)->allocator().stats().raw_allocs_after_warmup},
      {"last_loss", loss},
      {"steps", steps},
      {"warmup", warmup}};
  std::printf("%s\n", row.dump().c_str());
  return 0;
}

}  // namespace
}  // namespace mt

int main(int argc, char** argv) { return mt::Main(argc, argv); }

// tests/fuzz/config_fuzz.cc: libFuzzer target for the config loader (YAML text -> Config).
//
// The input is the text of a config file. Beyond "no crash, no uncaught exception, no
// sanitizer report", a config the loader accepts must pass validation on its own and keep
// the invariants the trainer relies on without re-checking them. Built and run by
// run_fuzzers.sh.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "trainer/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<mt::Config> config = mt::ParseConfig(text, "fuzz.yaml");
  if (!config.ok()) {
    if (config.status().message().empty()) std::abort();  // every rejection says why
    return 0;
  }
  if (!mt::ValidateConfig(*config).ok()) std::abort();
  const mt::TrainingConfig& t = config->training;
  if (t.steps < 1 || t.seq_len < 1 || t.micro_batch_size < 1) std::abort();
  if (t.global_batch_size % (t.micro_batch_size * config->parallel.dp) != 0) std::abort();
  const mt::ModelConfig& m = config->model;
  if (m.n_group < 1 || m.n_routed_experts % m.n_group != 0 || m.topk_group > m.n_group) {
    std::abort();
  }
  // Schedules evaluate anywhere without producing NaN.
  const mt::Schedule& lr = config->optimizer.lr;
  for (double tokens : {0.0, 1e3, 1e9, 1e15}) {
    for (const mt::Schedule* s : {&t.mtp_lambda, &t.bias_update_speed, &lr}) {
      if (!(s->Value(tokens) >= 0)) std::abort();
    }
  }
  return 0;
}

// tests/trainer/parity_dump.cc: the C++ half of the PyTorch parity test.
//
// Given an exchange directory D (tests/pytorch/check_parity.py documents it) holding
// config.json, objective.json, model.safetensors and batch.json, it loads the weights,
// runs one forward/backward of the full objective in fp32, rewrites D/model.safetensors
// with moetrain's own checkpoint writer (so the reference reads a file *we* wrote), and
// writes D/losses.json and D/grads.safetensors for check_parity.py to compare.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "trainer/hf_import.h"
#include "trainer/model_io.h"

namespace mt {
namespace {

absl::Status Run(const std::string& dir) {
  ASSIGN_OR_RETURN(nlohmann::json config, ReadJsonObject(dir + "/config.json", 1 << 20));
  ASSIGN_OR_RETURN(ModelConfig mc, ModelConfigFromHfJson(config, dir + "/config.json"));
  ASSIGN_OR_RETURN(nlohmann::json objective, ReadJsonObject(dir + "/objective.json", 1 << 20));
  ASSIGN_OR_RETURN(nlohmann::json batch, ReadJsonObject(dir + "/batch.json", 64 << 20));
  Model model(mc, 0);
  ASSIGN_OR_RETURN(HfModelDir hf, LoadHfModelDir(dir, [&](const std::string& n) {
                     return IsModelTensorName(model, n);
                   }));
  RETURN_IF_ERROR(LoadModelTensors(model, hf.tensors, dir));

  const auto rows = batch.at("tokens").get<std::vector<std::vector<int32_t>>>();
  const int64_t B = static_cast<int64_t>(rows.size()), S = static_cast<int64_t>(rows[0].size()) - 1;
  std::vector<int32_t> tokens;
  for (const auto& r : rows) tokens.insert(tokens.end(), r.begin(), r.end());
  ObjectiveWeights w{objective.at("mtp_lambda").get<double>(),
                     objective.at("balance_alpha").get<double>()};
  std::vector<std::vector<int64_t>> loads;
  model.params().ZeroGrads();
  Losses l = model.ForwardBackward(tokens.data(), B, S, w, 1.0, &loads);

  // Our writer's file replaces the reference's: the parity check then reads what we wrote.
  const std::string exported = dir + "/moetrain-export";
  std::filesystem::remove_all(exported);
  RETURN_IF_ERROR(ExportHfDir(exported, config, ModelTensors(model), DType::kF32, int64_t{1} << 40));
  std::filesystem::rename(exported + "/model.safetensors", dir + "/model.safetensors");
  std::filesystem::remove_all(exported);

  std::vector<NamedTensor> grads;
  for (const auto& p : model.params().all())
    if (p->trainable) grads.push_back({p->name, p->grad});
  RETURN_IF_ERROR(WriteSafetensors(dir + "/grads.safetensors", grads));
  nlohmann::json out = {{"loss", l.total}, {"main_loss", l.main}, {"mtp_loss", l.mtp},
                        {"balance_loss", l.balance}, {"expert_load", loads}};
  std::ofstream(dir + "/losses.json") << out.dump(2) << "\n";
  std::printf("parity_dump: loss %.6f (main %.6f, balance %.6f) over %lld x %lld tokens\n", l.total,
              l.main, l.balance, static_cast<long long>(B), static_cast<long long>(S));
  return absl::OkStatus();
}

}  // namespace
}  // namespace mt

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: parity_dump DIR\n");
    return 2;
  }
  absl::Status s = mt::Run(argv[1]);
  if (!s.ok()) {
    std::fprintf(stderr, "parity_dump: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}

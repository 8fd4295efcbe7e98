// trainer/checkpoint_shards.cc: a checkpoint written by several processes (checkpoint.h,
// "A checkpoint written by several processes"): each writes its shard files into rank 0's
// temporary step directory, rank 0 writes the rest and commits.
#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/status.h"
#include "trainer/checkpoint.h"
#include "trainer/checkpoint_internal.h"
#include "trainer/durable_file.h"
#include "trainer/hf_import.h"

namespace mt {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using namespace checkpoint_internal;  // NOLINT: the protocol's shared internals

Json CheckpointShard::ToJson() const {
  Json f = Json::object();
  for (const auto& [name, d] : files) f[name] = {{"size", d.size}, {"sha256", d.sha256}};
  return {{"files", f},
          {"model_file", model_file},
          {"model_tensors", model_tensors},
          {"model_bytes", model_bytes},
          {"state_file", state_file},
          {"state_tensors", state_tensors}};
}

absl::StatusOr<CheckpointShard> CheckpointShard::FromJson(const Json& j) {
  try {
    CheckpointShard s;
    for (const auto& [name, d] : j.at("files").items())
      s.files[name] = {d.at("size").get<uint64_t>(), d.at("sha256").get<std::string>()};
    s.model_file = j.at("model_file").get<std::string>();
    s.model_tensors = j.at("model_tensors").get<std::vector<std::string>>();
    s.model_bytes = j.at("model_bytes").get<int64_t>();
    s.state_file = j.at("state_file").get<std::map<std::string, std::string>>();
    s.state_tensors = j.at("state_tensors").get<std::map<std::string, std::vector<std::string>>>();
    return s;
  } catch (const Json::exception& e) {
    return absl::InternalError(absl::StrCat("checkpoint shard record: ", e.what()));
  }
}

absl::StatusOr<std::string> BeginCheckpoint(const std::string& root_dir, int64_t step) {
  if (step < 0 || step > 9'999'999) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint step ", step, " outside [0, 9999999]"));
  }
  std::error_code ec;
  fs::create_directories(root_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", root_dir, ": ", ec.message()));
  const fs::path tmp =
      fs::path(root_dir) / absl::StrCat(kTmpPrefix, StepDirName(step), "-", ::getpid());
  fs::remove_all(tmp, ec);
  if (!fs::create_directory(tmp, ec)) {
    return absl::InternalError(absl::StrCat("cannot create ", tmp.string(), ": ", ec.message()));
  }
  return tmp.string();
}

void AbandonCheckpoint(const std::string& tmp_dir) { WarnRemoveAll(tmp_dir); }

absl::StatusOr<CheckpointShard> WriteCheckpointShard(
    const std::string& tmp_dir, int index, int count, const std::vector<NamedTensor>& model,
    const std::map<std::string, std::vector<NamedTensor>>& state_files, const SaveOptions& opts) {
  ASSIGN_OR_RETURN(Phase crash, CrashPhaseFromEnv());
  const fs::path dir(tmp_dir);
  const std::string suffix = absl::StrFormat("-%05d-of-%05d.safetensors", index + 1, count);
  CheckpointShard out;
  if (!model.empty()) {
    std::vector<NamedTensor> tensors;
    for (const NamedTensor& t : model) {
      if (!t.tensor.defined() || t.tensor.dtype() != DType::kF32) {
        return absl::InvalidArgumentError(
            absl::StrCat("model tensor \"", t.name, "\" must be a defined F32 tensor"));
      }
      const bool f32 = opts.model_dtype == DType::kF32 || KeepsF32(t.name);
      tensors.push_back({t.name, f32 ? t.tensor : t.tensor.To(DType::kBF16)});
      out.model_tensors.push_back(t.name);
      out.model_bytes += t.tensor.numel() * (f32 ? 4 : 2);
    }
    out.model_file = "model" + suffix;
    auto mid_shard = [crash](size_t written) {
      if (written == 1) CrashIf(crash, Phase::kMidShard);
    };
    ASSIGN_OR_RETURN(FileDigest d,
                     WriteSafetensorsWithDigest((dir / out.model_file).string(), tensors,
                                                {{"format", "pt"}}, mid_shard));
    out.files[out.model_file] = d;
  }
  for (const auto& [name, tensors] : state_files) {
    RETURN_IF_ERROR(CheckStateFileName(name));
    const std::string file = name + suffix;
    ASSIGN_OR_RETURN(FileDigest d, WriteSafetensorsWithDigest((dir / file).string(), tensors,
                                                              {{"format", "pt"}}));
    out.files[file] = d;
    out.state_file[name] = file;
    for (const NamedTensor& t : tensors) out.state_tensors[name].push_back(t.name);
  }
  return out;
}

absl::Status FinishCheckpoint(const std::string& root_dir, const std::string& tmp_dir, int64_t step,
                              const CheckpointData& data,
                              const std::vector<CheckpointShard>& shards, const SaveOptions& opts) {
  ASSIGN_OR_RETURN(Phase crash, CrashPhaseFromEnv());
  const fs::path tmp(tmp_dir);
  auto write = [&]() -> absl::StatusOr<Json> {
    if (opts.keep_last < 1)
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint keep_last must be >= 1, got ", opts.keep_last));
    Json files = Json::object();
    auto record = [&files](const std::string& file, const FileDigest& d) {
      files[file] = {{"size", d.size}, {"sha256", d.sha256}};
    };
    ASSIGN_OR_RETURN(std::string config, DumpJson(data.config_json, "config.json"));
    ASSIGN_OR_RETURN(FileDigest d, WriteFileDurably((tmp / "config.json").string(), config));
    record("config.json", d);
    Json weight_map = Json::object(), model_order = Json::array();
    Json state_orders = Json::object(), state_shards = Json::object();
    int64_t total = 0;
    for (const CheckpointShard& s : shards) {
      for (const auto& [file, digest] : s.files) record(file, digest);
      for (const std::string& t : s.model_tensors) {
        if (weight_map.contains(t))
          return absl::InvalidArgumentError(
              absl::StrCat("model tensor \"", t, "\" written by two shards"));
        weight_map[t] = s.model_file;
        model_order.push_back(t);
      }
      total += s.model_bytes;
      for (const auto& [state, tensors] : s.state_tensors) {
        if (!state_orders.contains(state)) state_orders[state] = Json::array();
        for (const std::string& t : tensors) state_orders[state].push_back(t);
        state_shards[state].push_back(s.state_file.at(state));
      }
    }
    const Json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    ASSIGN_OR_RETURN(
        d, WriteFileDurably((tmp / "model.safetensors.index.json").string(), index.dump(2) + "\n"));
    record("model.safetensors.index.json", d);
    Json extra = Json::array();
    for (const auto& [file, source] : data.extra_files) {
      RETURN_IF_ERROR(CheckExtraFileName(file));
      ASSIGN_OR_RETURN(d, CopyFileDurably(source, (tmp / file).string()));
      record(file, d);
      extra.push_back(file);
    }
    ASSIGN_OR_RETURN(std::string train_state, DumpJson(data.train_state, "train_state.json"));
    ASSIGN_OR_RETURN(d, WriteFileDurably((tmp / "train_state.json").string(), train_state));
    record("train_state.json", d);
    Json manifest = {{"format", kFormat},
                     {"version", kVersion},
                     {"step", step},
                     {"model_dtype", DTypeName(opts.model_dtype)},
                     {"model_tensors", std::move(model_order)},
                     {"state_files", std::move(state_orders)},
                     {"state_file_shards", std::move(state_shards)},
                     {"extra_files", std::move(extra)},
                     {"files", std::move(files)}};
    return manifest;
  };
  return CommitStep(root_dir, tmp, step, opts.keep_last, crash, write);
}

}  // namespace mt

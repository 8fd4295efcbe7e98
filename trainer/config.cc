// trainer/config.cc: LoadConfig / ParseConfig: YAML text + --set overrides -> Config, then
// ValidateConfig. The key tables below are the whole schema of the non-model sections; the
// model section lives in config_model.cc, the reading rules in config_reader.cc and the
// cross-key rules in config_validate.cc.
//
// Paths in the config (data, checkpoints, logs) are used as written, i.e. relative to the
// working directory, except model.hf_config, which is relative to the YAML file's directory
// (so a config and its config.json travel together) unless it came from --set.
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "trainer/config_internal.h"

namespace mt {
namespace {

using config_internal::Describe;
using config_internal::Field;
using config_internal::IsPlainNumber;
using config_internal::Key;
using config_internal::KeyLocations;
using config_internal::Reader;

constexpr absl::string_view kTrainPathExpected =
    "a dataset prefix, a list of prefixes (equal weights), or a weighted list "
    "[w1, prefix1, w2, prefix2, ...] with weights > 0";

absl::Status ReadBatchRamp(Reader& r, const YAML::Node& n, const std::string& path,
                           TrainingConfig* t) {
  if (n.IsNull()) {
    t->batch_ramp.reset();
    return absl::OkStatus();
  }
  BatchRamp ramp;
  bool have_start = false, have_tokens = false;
  const std::vector<Key<BatchRamp>> keys = {
      {"start",
       [&](Reader& r, const YAML::Node& v, const std::string& p, BatchRamp* b) -> absl::Status {
         have_start = true;
         ASSIGN_OR_RETURN(b->start, r.Int(v, p));
         return absl::OkStatus();
       }},
      {"tokens",
       [&](Reader& r, const YAML::Node& v, const std::string& p, BatchRamp* b) -> absl::Status {
         have_tokens = true;
         ASSIGN_OR_RETURN(b->tokens, r.Tokens(v, p));
         return absl::OkStatus();
       }},
  };
  RETURN_IF_ERROR(r.ReadMap(n, path, keys, &ramp));
  if (!have_start || !have_tokens) {
    return r.Error(n, path, have_start ? "tokens is missing" : "start is missing",
                   "null or {start: <sequences per step at first>, tokens: <ramp length>}");
  }
  t->batch_ramp = ramp;
  return absl::OkStatus();
}

// One prefix, a list of prefixes, or Megatron's [w1, p1, w2, p2, ...]; weights normalised.
absl::Status ReadTrainPath(Reader& r, const YAML::Node& n, const std::string& path, DataConfig* d) {
  d->train_path.clear();
  d->train_weights.clear();
  if (n.IsNull()) return absl::OkStatus();
  if (n.IsScalar()) {
    ASSIGN_OR_RETURN(std::string prefix, r.String(n, path));
    d->train_path = {prefix};
    d->train_weights = {1.0};
    return absl::OkStatus();
  }
  if (!n.IsSequence() || n.size() == 0) {
    return r.Error(n, path, absl::StrCat("got ", Describe(n)), kTrainPathExpected);
  }
  const bool weighted = IsPlainNumber(n[0]);
  if (weighted && n.size() % 2 != 0) {
    return r.Error(n, path, absl::StrCat("got a weighted list of odd length ", n.size()),
                   kTrainPathExpected);
  }
  double sum = 0;
  for (size_t i = 0; i < n.size(); ++i) {
    const YAML::Node item = n[i];
    const std::string item_path = absl::StrCat(path, "[", i, "]");
    if (weighted && i % 2 == 0) {
      double w = 0;
      if (IsPlainNumber(item)) {
        ASSIGN_OR_RETURN(w, r.Double(item, item_path));
      }
      if (!(w > 0)) {
        return r.Error(item, item_path, absl::StrCat("got ", Describe(item)),
                       "a weight > 0 at each even position of [w1, prefix1, w2, prefix2, ...]");
      }
      d->train_weights.push_back(w);
      sum += w;
      continue;
    }
    if (!item.IsScalar() || item.Scalar().empty() || (weighted && IsPlainNumber(item))) {
      return r.Error(item, item_path, absl::StrCat("got ", Describe(item)),
                     weighted ? "a dataset prefix at each odd position of "
                                "[w1, prefix1, w2, prefix2, ...]"
                              : "a dataset prefix (string)");
    }
    d->train_path.push_back(item.Scalar());
    if (!weighted) {
      d->train_weights.push_back(1.0);
      sum += 1.0;
    }
  }
  for (double& w : d->train_weights) w /= sum;
  return absl::OkStatus();
}

std::vector<Key<TrainingConfig>> TrainingKeys() {
  using T = TrainingConfig;
  return {
      Field("steps", &T::steps),
      Field("seed", &T::seed),
      Field("seq_len", &T::seq_len),
      Field("micro_batch_size", &T::micro_batch_size),
      Field("global_batch_size", &T::global_batch_size),
      Field("precision", &T::precision),
      Field("device", &T::device),
      Field("mtp_lambda", &T::mtp_lambda),
      Field("bias_update_speed", &T::bias_update_speed),
      Field("balance_loss_alpha", &T::balance_loss_alpha),
      {"batch_ramp", ReadBatchRamp},
      Field("eval_interval", &T::eval_interval),
      Field("eval_batches", &T::eval_batches),
      Field("max_consecutive_skips", &T::max_consecutive_skips),
      Field("fault_inject_nan_step", &T::fault_inject_nan_step),
      Field("fault_inject_nan_count", &T::fault_inject_nan_count),
      Field("init_from", &T::init_from),
      Field("recompute", &T::recompute),
      Field("generate_tokens", &T::generate_tokens),
      Field("generate_prompt", &T::generate_prompt),
  };
}

std::vector<Key<OptimizerConfig>> OptimizerKeys() {
  using O = OptimizerConfig;
  return {Field("lr", &O::lr),
          Field("beta1", &O::beta1),
          Field("beta2", &O::beta2),
          Field("eps", &O::eps),
          Field("weight_decay", &O::weight_decay),
          Field("grad_clip", &O::grad_clip),
          Field("moment_dtype", &O::moment_dtype)};
}

std::vector<Key<DataConfig>> DataKeys() {
  return {{"train_path", ReadTrainPath},
          Field("val_path", &DataConfig::val_path),
          Field("tokenizer", &DataConfig::tokenizer)};
}

std::vector<Key<ParallelConfig>> ParallelKeys() {
  using P = ParallelConfig;
  return {Field("pp", &P::pp), Field("ep", &P::ep), Field("dp", &P::dp),
          Field("schedule", &P::schedule), Field("ranks_per_node", &P::ranks_per_node),
          Field("timeout_s", &P::timeout_s)};
}

std::vector<Key<CheckpointConfig>> CheckpointKeys() {
  using C = CheckpointConfig;
  return {Field("dir", &C::dir), Field("interval", &C::interval), Field("keep_last", &C::keep_last),
          Field("dtype", &C::dtype), Field("resume", &C::resume)};
}

std::vector<Key<LoggingConfig>> LoggingKeys() {
  using L = LoggingConfig;
  return {Field("interval", &L::interval), Field("metrics_file", &L::metrics_file),
          Field("tensorboard_dir", &L::tensorboard_dir),
          Field("expert_load_interval", &L::expert_load_interval)};
}

// A section key whose value is read into one member of Config with its own key table.
template <class S>
Key<Config> Section(const char* name, S Config::*member, std::vector<Key<S>> (*keys)()) {
  return {name, [member, keys](Reader& r, const YAML::Node& n, const std::string& path, Config* c) {
            return r.ReadMap(n, path, keys(), &(c->*member));
          }};
}

// model: inline HF keys, or hf_config: config.json with inline keys on top.
absl::Status ReadModel(Reader& r, KeyLocations* locations, const YAML::Node& n,
                       const std::string& path, Config* c) {
  if (!n.IsMap()) {
    return r.Error(n, path, absl::StrCat("got ", Describe(n)),
                   "a map of Hugging Face DeepseekV3 config.json keys, or "
                   "hf_config: path/to/config.json");
  }
  const YAML::Node hf = n["hf_config"];
  if (hf.IsDefined() && !hf.IsNull()) {
    const std::string key = path + ".hf_config";
    ASSIGN_OR_RETURN(std::string file, r.String(hf, key));
    std::filesystem::path resolved = file;
    if (!r.FromOverride(key)) {
      resolved = std::filesystem::path(r.source()).parent_path() / resolved;
    }
    std::ifstream in(resolved);
    if (file.empty() || !in) {
      return r.Error(
          hf, key,
          absl::StrCat("cannot open \"", resolved.string(), "\" (", std::strerror(errno), ")"),
          "a Hugging Face config.json, relative to the YAML file's directory");
    }
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(resolved.string(), ": invalid JSON (",
                                                     e.what(), "); expected a config.json"));
    }
    RETURN_IF_ERROR(config_internal::ApplyHfJson(j, resolved.string(), locations, &c->model));
  }
  return config_internal::ApplyModelKeys(r, n, path, /*allow_hf_config=*/true, &c->model);
}

// Sets root[a][b]...[z] = value for "a.b.z=value" (value parsed as YAML), making maps on
// the way. Unknown keys are left for the reader to reject, naming this --set.
absl::Status ApplyOverride(YAML::Node root, const std::string& text,
                           std::vector<std::string>* paths) {
  const size_t eq = text.find('=');
  const std::string key = text.substr(0, eq == std::string::npos ? text.size() : eq);
  const std::vector<std::string> parts = absl::StrSplit(key, '.');
  bool key_ok = eq != std::string::npos;
  for (const std::string& part : parts) {
    key_ok = key_ok && !part.empty() &&
             part.find_first_not_of(
                 "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456"
                 "789_") == std::string::npos;
  }
  if (!key_ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--set ", text, ": not a key.path=value override; expected e.g. --set training.steps=10"));
  }
  const std::string value_text = text.substr(eq + 1);
  YAML::Node value;
  try {
    value = YAML::Load(value_text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("--set ", key, ": ", key, ": cannot parse \"",
                                                   value_text, "\" (", e.msg,
                                                   "); expected a YAML value"));
  }
  YAML::Node node = root;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node child = node[parts[i]];
    if (!child.IsDefined() || child.IsNull()) {
      node[parts[i]] = YAML::Node(YAML::NodeType::Map);
      child.reset(node[parts[i]]);
    } else if (!child.IsMap()) {
      const std::string at = absl::StrJoin(parts.begin(), parts.begin() + i + 1, ".");
      return absl::InvalidArgumentError(absl::StrCat(
          "--set ", key, ": ", at, ": got ", Describe(child), ", which has no key ", parts[i + 1],
          "; expected a path through maps (set ", at, " itself instead)"));
    }
    node.reset(child);
  }
  node[parts.back()] = value;
  paths->push_back(key);
  return absl::OkStatus();
}

absl::StatusOr<Config> Parse(const std::string& yaml_text, const std::string& source,
                             const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ":", e.mark.line + 1, ": invalid YAML (",
                                                   e.msg, "); expected a map of config sections"));
  }
  if (root.IsNull()) root.reset(YAML::Node(YAML::NodeType::Map));
  std::vector<std::string> override_paths;
  if (root.IsMap()) {
    for (const std::string& o : overrides) RETURN_IF_ERROR(ApplyOverride(root, o, &override_paths));
  }
  KeyLocations locations;
  Reader reader(source, /*has_lines=*/true, override_paths, &locations);
  Config config;
  config.source = source;
  const std::vector<Key<Config>> sections = {
      {"model", [&locations](Reader& r, const YAML::Node& n, const std::string& p,
                             Config* c) { return ReadModel(r, &locations, n, p, c); }},
      Section("training", &Config::training, TrainingKeys),
      Section("optimizer", &Config::optimizer, OptimizerKeys),
      Section("data", &Config::data, DataKeys),
      Section("parallel", &Config::parallel, ParallelKeys),
      Section("checkpoint", &Config::checkpoint, CheckpointKeys),
      Section("logging", &Config::logging, LoggingKeys),
  };
  RETURN_IF_ERROR(reader.ReadMap(root, "", sections, &config));
  if (!static_cast<const YAML::Node&>(root)["model"].IsDefined()) {
    // The struct defaults are the 671B model: never what someone who forgot the section wants.
    return reader.Error(YAML::Node(), "model", "the section is missing",
                        "model: with Hugging Face DeepseekV3 config.json keys, or "
                        "model: {hf_config: path/to/config.json}");
  }
  RETURN_IF_ERROR(config_internal::ValidateConfigAt(config, locations));
  return config;
}

}  // namespace

absl::StatusOr<Config> ParseConfig(const std::string& yaml_text, const std::string& source,
                                   const std::vector<std::string>& overrides) {
  try {
    return Parse(yaml_text, source, overrides);
  } catch (const YAML::Exception& e) {
    // Our readers avoid throwing accessors; this is a backstop so no exception escapes.
    return absl::InvalidArgumentError(
        absl::StrCat(source, ":", e.mark.line + 1, ": ", e.msg, "; expected a valid config"));
  }
}

absl::StatusOr<Config> LoadConfig(const std::string& path,
                                  const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open the config (",
                                            std::strerror(errno), "); expected a YAML file"));
  }
  std::stringstream text;
  text << in.rdbuf();
  return ParseConfig(text.str(), path, overrides);
}

}  // namespace mt

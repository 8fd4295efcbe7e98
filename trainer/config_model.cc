// trainer/config_model.cc: the `model:` section and Hugging Face config.json, which share one
// key table (HF DeepseekV3Config names, reference/ecosystem.md §1.1).
//
// A config.json is read by handing its JSON text to the YAML reader (JSON is YAML), so the
// two paths apply the same types and strictness; only the positions differ (JSON errors name
// the file and key, not a line).
#include "absl/strings/str_cat.h"
#include "trainer/config_internal.h"

namespace mt {
namespace config_internal {
namespace {

// HF config.json keys that describe nothing we model: registry/class names, remote-code
// knobs, inference settings, and the FP8 release's quantization block (weights are converted
// on load). Accepted so a Hub config drops in, and otherwise ignored. Kept explicit: any
// other key is a typo until proven otherwise.
constexpr const char* kIgnoredHfKeys[] = {
    "architectures",
    "model_type",
    "auto_map",
    "transformers_version",
    "quantization_config",
    "ep_size",
    "pretraining_tp",
    "aux_loss_alpha",
    "seq_aux",
    "use_cache",
    "_name_or_path",
    "pad_token_id",
    "output_router_logits",
    "router_aux_loss_coef",
    "head_dim",
};

absl::Status ReadRopeScaling(Reader& r, const YAML::Node& n, const std::string& path,
                             ModelConfig* m) {
  if (n.IsNull()) {
    m->rope_scaling.reset();
    return absl::OkStatus();
  }
  RopeScaling rs;
  bool have_type = false;
  auto read_type = [&have_type](Reader& r, const YAML::Node& v, const std::string& p,
                                RopeScaling* s) -> absl::Status {
    ASSIGN_OR_RETURN(std::string t, r.String(v, p));
    // HF writes both "type" and "rope_type"; DeepseekV3 only ever uses YaRN.
    if (t != "yarn") return r.Error(v, p, absl::StrCat("got \"", t, "\""), "\"yarn\"");
    s->type = t;
    have_type = true;
    return absl::OkStatus();
  };
  const std::vector<Key<RopeScaling>> keys = {
      {"type", read_type},
      {"rope_type", read_type},
      Field("factor", &RopeScaling::factor),
      Field("beta_fast", &RopeScaling::beta_fast),
      Field("beta_slow", &RopeScaling::beta_slow),
      Field("mscale", &RopeScaling::mscale),
      Field("mscale_all_dim", &RopeScaling::mscale_all_dim),
      Field("original_max_position_embeddings", &RopeScaling::original_max_position_embeddings),
  };
  RETURN_IF_ERROR(r.ReadMap(n, path, keys, &rs));
  if (!have_type) {
    return r.Error(n, path, "no type given",
                   "null or a map with type: yarn (or rope_type: yarn) and the YaRN keys");
  }
  m->rope_scaling = rs;
  return absl::OkStatus();
}

std::vector<Key<ModelConfig>> ModelKeys(bool allow_hf_config) {
  using M = ModelConfig;
  std::vector<Key<M>> keys = {
      Field("vocab_size", &M::vocab_size),
      Field("hidden_size", &M::hidden_size),
      Field("intermediate_size", &M::intermediate_size),
      Field("moe_intermediate_size", &M::moe_intermediate_size),
      Field("num_hidden_layers", &M::num_hidden_layers),
      Field("num_attention_heads", &M::num_attention_heads),
      Field("num_key_value_heads", &M::num_key_value_heads),
      Field("n_routed_experts", &M::n_routed_experts),
      Field("n_shared_experts", &M::n_shared_experts),
      Field("num_experts_per_tok", &M::num_experts_per_tok),
      Field("n_group", &M::n_group),
      Field("topk_group", &M::topk_group),
      Field("first_k_dense_replace", &M::first_k_dense_replace),
      Field("moe_layer_freq", &M::moe_layer_freq),
      {"q_lora_rank",
       [](Reader& r, const YAML::Node& n, const std::string& p, M* m) -> absl::Status {
         if (n.IsNull()) {  // HF: null = no query compression
           m->q_lora_rank = 0;
           return absl::OkStatus();
         }
         ASSIGN_OR_RETURN(m->q_lora_rank, r.Int(n, p));
         return absl::OkStatus();
       }},
      Field("kv_lora_rank", &M::kv_lora_rank),
      Field("qk_nope_head_dim", &M::qk_nope_head_dim),
      Field("qk_rope_head_dim", &M::qk_rope_head_dim),
      Field("v_head_dim", &M::v_head_dim),
      Field("num_nextn_predict_layers", &M::num_nextn_predict_layers),
      Field("max_position_embeddings", &M::max_position_embeddings),
      Field("routed_scaling_factor", &M::routed_scaling_factor),
      Field("rope_theta", &M::rope_theta),
      {"rope_scaling", ReadRopeScaling},
      Field("rms_norm_eps", &M::rms_norm_eps),
      Field("initializer_range", &M::initializer_range),
      Field("norm_topk_prob", &M::norm_topk_prob),
      Field("tie_word_embeddings", &M::tie_word_embeddings),
      Field("attention_bias", &M::attention_bias),
      Field("attention_dropout", &M::attention_dropout),
      Field("scoring_func", &M::scoring_func),
      Field("topk_method", &M::topk_method),
      Field("hidden_act", &M::hidden_act),
      Field("bos_token_id", &M::bos_token_id),
      Field("eos_token_id", &M::eos_token_id),
      Field("torch_dtype", &M::torch_dtype),
      // transformers >= 4.56 writes "dtype" for what was "torch_dtype".
      {"dtype", Field("dtype", &M::torch_dtype).read, false},
      // HF's rope_interleave (default true) is the adjacent-pair RoPE we implement; the
      // half-split layout (false) would silently permute the rotary dims, so refuse it.
      {"rope_interleave",
       [](Reader& r, const YAML::Node& n, const std::string& p, M*) -> absl::Status {
         ASSIGN_OR_RETURN(bool interleave, r.Bool(n, p));
         if (!interleave) {
           return r.Error(n, p, "got false (half-split RoPE)",
                          "true: moetrain implements RoPE on adjacent pairs, as DeepSeek-V3");
         }
         return absl::OkStatus();
       },
       false},
  };
  if (allow_hf_config) {
    keys.push_back({"hf_config", [](Reader&, const YAML::Node&, const std::string&, M*) {
                      return absl::OkStatus();  // read by the caller, before the other keys
                    }});
  }
  for (const char* name : kIgnoredHfKeys) {
    keys.push_back(
        {name, [](Reader&, const YAML::Node&, const std::string&, M*) { return absl::OkStatus(); },
         false});
  }
  return keys;
}

}  // namespace

absl::Status ApplyModelKeys(Reader& reader, const YAML::Node& node, const std::string& prefix,
                            bool allow_hf_config, ModelConfig* model) {
  return reader.ReadMap(node, prefix, ModelKeys(allow_hf_config), model);
}

absl::Status ApplyHfJson(const nlohmann::json& j, const std::string& source,
                         KeyLocations* locations, ModelConfig* model) {
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": got a JSON ", j.type_name(),
                     "; expected a Hugging Face config.json object ({\"hidden_size\": ..., ...})"));
  }
  YAML::Node node;
  try {
    node = YAML::Load(j.dump());
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": cannot read the JSON (", e.what(), "); expected plain JSON"));
  }
  Reader reader(source, /*has_lines=*/false, {}, locations, "model.");
  return ApplyModelKeys(reader, node, "", /*allow_hf_config=*/false, model);
}

}  // namespace config_internal

int64_t ModelConfig::num_moe_layers() const {
  int64_t n = 0;
  for (int64_t layer = 0; layer < num_hidden_layers; ++layer) n += IsMoeLayer(layer) ? 1 : 0;
  return n;
}

absl::StatusOr<ModelConfig> ModelConfigFromHfJson(const nlohmann::json& j,
                                                  const std::string& source) {
  ModelConfig model;
  RETURN_IF_ERROR(config_internal::ApplyHfJson(j, source, nullptr, &model));
  return model;
}

nlohmann::json ModelConfigToHfJson(const ModelConfig& m) {
  nlohmann::json j;
  j["architectures"] = nlohmann::json::array({"DeepseekV3ForCausalLM"});
  j["model_type"] = "deepseek_v3";
  j["vocab_size"] = m.vocab_size;
  j["hidden_size"] = m.hidden_size;
  j["intermediate_size"] = m.intermediate_size;
  j["moe_intermediate_size"] = m.moe_intermediate_size;
  j["num_hidden_layers"] = m.num_hidden_layers;
  j["num_attention_heads"] = m.num_attention_heads;
  j["num_key_value_heads"] = m.num_key_value_heads;
  j["n_routed_experts"] = m.n_routed_experts;
  j["n_shared_experts"] = m.n_shared_experts;
  j["num_experts_per_tok"] = m.num_experts_per_tok;
  j["n_group"] = m.n_group;
  j["topk_group"] = m.topk_group;
  j["routed_scaling_factor"] = m.routed_scaling_factor;
  j["scoring_func"] = m.scoring_func;
  j["topk_method"] = m.topk_method;
  j["norm_topk_prob"] = m.norm_topk_prob;
  j["first_k_dense_replace"] = m.first_k_dense_replace;
  j["moe_layer_freq"] = m.moe_layer_freq;
  j["q_lora_rank"] = m.q_lora_rank == 0 ? nlohmann::json(nullptr) : nlohmann::json(m.q_lora_rank);
  j["kv_lora_rank"] = m.kv_lora_rank;
  j["qk_nope_head_dim"] = m.qk_nope_head_dim;
  j["qk_rope_head_dim"] = m.qk_rope_head_dim;
  j["v_head_dim"] = m.v_head_dim;
  j["num_nextn_predict_layers"] = m.num_nextn_predict_layers;
  j["max_position_embeddings"] = m.max_position_embeddings;
  j["rope_theta"] = m.rope_theta;
  if (m.rope_scaling) {
    const RopeScaling& rs = *m.rope_scaling;
    j["rope_scaling"] = {{"type", rs.type},
                         {"factor", rs.factor},
                         {"beta_fast", rs.beta_fast},
                         {"beta_slow", rs.beta_slow},
                         {"mscale", rs.mscale},
                         {"mscale_all_dim", rs.mscale_all_dim},
                         {"original_max_position_embeddings", rs.original_max_position_embeddings}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["rms_norm_eps"] = m.rms_norm_eps;
  j["initializer_range"] = m.initializer_range;
  j["tie_word_embeddings"] = m.tie_word_embeddings;
  j["hidden_act"] = m.hidden_act;
  j["attention_bias"] = m.attention_bias;
  j["attention_dropout"] = m.attention_dropout;
  j["bos_token_id"] = m.bos_token_id;
  j["eos_token_id"] = m.eos_token_id;
  j["torch_dtype"] = m.torch_dtype;
  return j;
}

}  // namespace mt

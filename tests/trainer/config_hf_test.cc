// tests/trainer/config_hf_test.cc: Hugging Face config.json <-> ModelConfig, and
// `model: {hf_config: ...}` in YAML (relative paths, inline keys on top, errors naming the
// JSON file).
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include "gtest/gtest.h"
#include "trainer/config.h"

namespace mt {
namespace {

// DeepSeek-V3's hub config.json (reference/ecosystem.md §1.1), FP8 release keys included.
const char* kDeepSeekV3Json = R"({
  "architectures": ["DeepseekV3ForCausalLM"],
  "attention_bias": false, "attention_dropout": 0.0,
  "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV3Config",
               "AutoModel": "modeling_deepseek.DeepseekV3Model"},
  "aux_loss_alpha": 0.001, "bos_token_id": 0, "eos_token_id": 1, "ep_size": 1,
  "first_k_dense_replace": 3, "hidden_act": "silu", "hidden_size": 7168,
  "initializer_range": 0.02, "intermediate_size": 18432, "kv_lora_rank": 512,
  "max_position_embeddings": 163840, "model_type": "deepseek_v3",
  "moe_intermediate_size": 2048, "moe_layer_freq": 1, "n_group": 8, "n_routed_experts": 256,
  "n_shared_experts": 1, "norm_topk_prob": true, "num_attention_heads": 128,
  "num_experts_per_tok": 8, "num_hidden_layers": 61, "num_key_value_heads": 128,
  "num_nextn_predict_layers": 1, "pretraining_tp": 1, "q_lora_rank": 1536,
  "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
  "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3",
                          "quant_method": "fp8", "weight_block_size": [128, 128]},
  "rms_norm_eps": 1e-06,
  "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0,
                   "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096,
                   "type": "yarn"},
  "rope_theta": 10000, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid",
  "seq_aux": true, "tie_word_embeddings": false, "topk_group": 4, "topk_method": "noaux_tc",
  "torch_dtype": "bfloat16", "transformers_version": "4.33.1", "use_cache": true,
  "v_head_dim": 128, "vocab_size": 129280
})";

std::string Dir() {
  const std::string dir = testing::TempDir() + "/config_hf_test_" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  return dir;
}

void Write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

TEST(HfJson, ReadsDeepSeekV3HubConfig) {
  absl::StatusOr<ModelConfig> m =
      ModelConfigFromHfJson(nlohmann::json::parse(kDeepSeekV3Json), "v3/config.json");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->vocab_size, 129280);
  EXPECT_EQ(m->hidden_size, 7168);
  EXPECT_EQ(m->num_hidden_layers, 61);
  EXPECT_EQ(m->q_lora_rank, 1536);
  EXPECT_EQ(m->n_group, 8);
  EXPECT_EQ(m->topk_group, 4);
  EXPECT_EQ(m->rope_theta, 10000);
  EXPECT_EQ(m->rms_norm_eps, 1e-6);
  ASSERT_TRUE(m->rope_scaling.has_value());
  EXPECT_EQ(m->rope_scaling->factor, 40);
  EXPECT_EQ(m->rope_scaling->mscale_all_dim, 1.0);
  EXPECT_EQ(m->rope_scaling->original_max_position_embeddings, 4096);
  EXPECT_EQ(m->num_moe_layers(), 58);
}

TEST(HfJson, ReadsMoonlightStyleNulls) {
  nlohmann::json j = nlohmann::json::parse(kDeepSeekV3Json);
  j["q_lora_rank"] = nullptr;
  j["rope_scaling"] = nullptr;
  j["dtype"] = "float32";  // newer transformers' name for torch_dtype
  j.erase("torch_dtype");
  absl::StatusOr<ModelConfig> m = ModelConfigFromHfJson(j, "moonlight/config.json");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->q_lora_rank, 0);
  EXPECT_FALSE(m->rope_scaling.has_value());
  EXPECT_EQ(m->torch_dtype, "float32");
}

TEST(HfJson, RejectsWrongTypesNamingFileAndKey) {
  nlohmann::json j = nlohmann::json::parse(kDeepSeekV3Json);
  j["hidden_size"] = "7168";
  EXPECT_EQ(ModelConfigFromHfJson(j, "x/config.json").status().message(),
            "x/config.json: hidden_size: got the string \"7168\"; expected an integer");
  j = nlohmann::json::parse(kDeepSeekV3Json);
  j["num_hidden_layers"] = 61.5;
  EXPECT_EQ(ModelConfigFromHfJson(j, "x/config.json").status().message(),
            "x/config.json: num_hidden_layers: got 61.5; expected an integer");
  j = nlohmann::json::parse(kDeepSeekV3Json);
  j["norm_topk_prob"] = 1;
  EXPECT_EQ(ModelConfigFromHfJson(j, "x/config.json").status().message(),
            "x/config.json: norm_topk_prob: got 1; expected true or false");
  j = nlohmann::json::parse(kDeepSeekV3Json);
  j["rope_scaling"]["factor"] = "forty";
  EXPECT_EQ(ModelConfigFromHfJson(j, "x/config.json").status().message(),
            "x/config.json: rope_scaling.factor: got the string \"forty\"; expected a finite "
            "number");
  j = nlohmann::json::parse(kDeepSeekV3Json);
  j["hiden_size"] = 1;
  EXPECT_NE(ModelConfigFromHfJson(j, "x/config.json")
                .status()
                .message()
                .find("x/config.json: hiden_size: unknown key hiden_size (did you mean "
                      "hidden_size?)"),
            std::string::npos);
  EXPECT_NE(ModelConfigFromHfJson(nlohmann::json::array({1}), "x/config.json")
                .status()
                .message()
                .find("x/config.json: got a JSON array"),
            std::string::npos);
}

TEST(HfJson, WritesHfKeys) {
  ModelConfig m;
  m.q_lora_rank = 0;
  const nlohmann::json j = ModelConfigToHfJson(m);
  EXPECT_EQ(j["architectures"], nlohmann::json::array({"DeepseekV3ForCausalLM"}));
  EXPECT_EQ(j["model_type"], "deepseek_v3");
  EXPECT_TRUE(j["q_lora_rank"].is_null());
  EXPECT_TRUE(j["rope_scaling"].is_null());
  EXPECT_EQ(j["tie_word_embeddings"], false);
  EXPECT_EQ(j["torch_dtype"], "bfloat16");
  EXPECT_FALSE(j.contains("auto_map"));
  EXPECT_FALSE(j.contains("quantization_config"));
  // Every key of the hub config we model is written, with the same JSON type.
  const nlohmann::json hub = nlohmann::json::parse(kDeepSeekV3Json);
  for (const auto& [key, value] : hub.items()) {
    if (key == "auto_map" || key == "quantization_config" || key == "ep_size" ||
        key == "pretraining_tp" || key == "aux_loss_alpha" || key == "seq_aux" ||
        key == "use_cache" || key == "transformers_version" || key == "q_lora_rank" ||
        key == "rope_scaling") {
      continue;
    }
    ASSERT_TRUE(j.contains(key)) << key;
    EXPECT_EQ(j[key].is_string(), value.is_string()) << key;
    EXPECT_EQ(j[key].is_boolean(), value.is_boolean()) << key;
  }
}

void ExpectSameModel(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(ModelConfigToHfJson(a), ModelConfigToHfJson(b));
  EXPECT_EQ(a.q_lora_rank, b.q_lora_rank);
  EXPECT_EQ(a.rope_scaling.has_value(), b.rope_scaling.has_value());
}

TEST(HfJson, RoundTrips) {
  ModelConfig v3;  // defaults: DeepSeek-V3, but without YaRN
  absl::StatusOr<ModelConfig> back = ModelConfigFromHfJson(ModelConfigToHfJson(v3), "rt");
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameModel(v3, *back);

  ModelConfig small;
  small.vocab_size = 300;
  small.q_lora_rank = 0;
  small.rms_norm_eps = 1e-5;
  small.routed_scaling_factor = 2.446;
  small.rope_scaling = RopeScaling{"yarn", 40, 32, 1, 1.0, 1.0, 4096};
  small.bos_token_id = 3;
  // Through text, as it would go through a checkpoint directory.
  back = ModelConfigFromHfJson(nlohmann::json::parse(ModelConfigToHfJson(small).dump(2)), "rt");
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameModel(small, *back);
  EXPECT_EQ(back->rms_norm_eps, 1e-5);
  EXPECT_EQ(back->routed_scaling_factor, 2.446);
  EXPECT_EQ(back->rope_scaling->factor, 40);
}

TEST(HfConfigInYaml, LoadsRelativeToTheYamlWithInlineOverrides) {
  const std::string dir = Dir();
  nlohmann::json j = ModelConfigToHfJson(ModelConfig());
  j["num_hidden_layers"] = 4;
  std::filesystem::create_directories(dir + "/hf");
  Write(dir + "/hf/config.json", j.dump(2));
  Write(dir + "/run.yaml",
        "model:\n  hf_config: hf/config.json\n  hidden_size: 1024\n"
        "data: {train_path: d}\n");
  absl::StatusOr<Config> c = LoadConfig(dir + "/run.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model.num_hidden_layers, 4);  // from config.json
  EXPECT_EQ(c->model.hidden_size, 1024);     // inline key wins
  EXPECT_EQ(c->model.vocab_size, 129280);

  // Through --set, the path is relative to the working directory.
  c = LoadConfig(dir + "/run.yaml", {"model.hf_config=" + dir + "/hf/config.json"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model.num_hidden_layers, 4);
}

TEST(HfConfigInYaml, ErrorsNameTheRightFile) {
  const std::string dir = Dir();
  Write(dir + "/missing.yaml", "model:\n  hf_config: nowhere.json\ndata: {train_path: d}\n");
  absl::StatusOr<Config> c = LoadConfig(dir + "/missing.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find(dir + "/missing.yaml:2: model.hf_config: cannot open \"" +
                                      dir + "/nowhere.json\""),
            std::string::npos)
      << c.status();

  Write(dir + "/bad.json", "{\"hidden_size\": 12,");
  Write(dir + "/bad.yaml", "model: {hf_config: bad.json}\ndata: {train_path: d}\n");
  c = LoadConfig(dir + "/bad.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find(dir + "/bad.json: invalid JSON"), std::string::npos)
      << c.status();

  // A rule broken by a key of config.json names config.json.
  nlohmann::json j = ModelConfigToHfJson(ModelConfig());
  j["n_group"] = 3;
  Write(dir + "/groups.json", j.dump());
  Write(dir + "/groups.yaml", "model: {hf_config: groups.json}\ndata: {train_path: d}\n");
  c = LoadConfig(dir + "/groups.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message().rfind(dir + "/groups.json: model.n_routed_experts: "
                                             "model.n_routed_experts (256) is not divisible "
                                             "by model.n_group (3)",
                                       0),
            0u)
      << c.status();

  // A type error inside config.json names config.json and the HF key.
  j = ModelConfigToHfJson(ModelConfig());
  j["vocab_size"] = "big";
  Write(dir + "/typed.json", j.dump());
  Write(dir + "/typed.yaml", "model: {hf_config: typed.json}\ndata: {train_path: d}\n");
  c = LoadConfig(dir + "/typed.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(),
            dir + "/typed.json: vocab_size: got the string \"big\"; expected an integer");
}

}  // namespace
}  // namespace mt

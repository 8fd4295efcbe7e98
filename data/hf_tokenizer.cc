// data/hf_tokenizer.cc: loading a tokenizer.json and running the whole pipeline.
//
// Encoding follows Hugging Face's Tokenizer::encode: added tokens that are not "normalized"
// are cut out of the raw text; each remaining run is normalized, then cut at the
// "normalized" added tokens; each remaining run is pre-tokenized into pieces and each piece
// goes through the BPE model; the post-processor adds special tokens when asked.
#include "data/hf_tokenizer.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "data/hf_tokenizer_added.h"
#include "data/hf_tokenizer_bpe.h"
#include "data/hf_tokenizer_internal.h"
#include "data/unicode_text.h"
#include "kernels/status.h"

namespace mt::data {
namespace hf {

std::string CleanUpTokenizationSpaces(std::string text);  // hf_tokenizer_decoders.cc

class Impl {
 public:
  std::vector<AddedToken> added;
  absl::flat_hash_map<std::string, int32_t> added_ids;  // content -> id
  AddedTokenMatcher raw_matcher, normalized_matcher;
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<BpeModel> model;
  std::unique_ptr<PostProcessor> post_processor;
  std::unique_ptr<Decoder> decoder;
  std::vector<std::string> id_to_token;  // added tokens over the model's vocabulary
  std::vector<bool> special;             // by id
  int32_t bos = -1, eos = -1;
  bool clean_up_spaces = false;

  int32_t TokenToId(std::string_view token) const {
    auto it = added_ids.find(absl::string_view(token.data(), token.size()));
    return it != added_ids.end() ? it->second : model->TokenToId(token);
  }

  void EncodeRun(std::string_view run, bool at_origin, std::vector<int32_t>* ids) const {
    thread_local PieceList pieces;
    pieces.text.assign(run);
    pieces.spans.assign(1, Span{0, static_cast<uint32_t>(run.size()), at_origin});
    if (pre_tokenizer != nullptr) pre_tokenizer->PreTokenize(&pieces);
    for (const Span& s : pieces.spans) {
      model->Encode(std::string_view(pieces.text).substr(s.begin, s.end - s.begin), ids);
    }
  }

  std::vector<int32_t> Encode(std::string_view input, bool add_special_tokens) const {
    std::string repaired;
    const std::string_view text = unicode::SanitizeUtf8(input, &repaired);
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 4);
    std::vector<Segment> outer, inner;
    raw_matcher.Split(text, &outer);
    for (const Segment& o : outer) {
      if (o.token >= 0) {
        ids.push_back(added[o.token].id);
        continue;
      }
      std::string_view run = text.substr(o.begin, o.end - o.begin);
      std::string normalized;
      if (normalizer != nullptr) {
        normalized = normalizer->Normalize(std::string(run));
        run = normalized;
      }
      normalized_matcher.Split(run, &inner);
      for (const Segment& i : inner) {
        if (i.token >= 0) {
          ids.push_back(added[i.token].id);
        } else {
          EncodeRun(run.substr(i.begin, i.end - i.begin), o.begin == 0 && i.begin == 0, &ids);
        }
      }
    }
    if (add_special_tokens && post_processor != nullptr) post_processor->Process(&ids);
    return ids;
  }

  std::string Decode(const std::vector<int32_t>& ids, bool skip_special) const {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int32_t id : ids) {
      // Ids nobody defines are left out, as Hugging Face's decode does.
      if (id < 0 || static_cast<size_t>(id) >= id_to_token.size() || id_to_token[id].empty()) {
        continue;
      }
      if (skip_special && special[id]) continue;
      tokens.push_back(id_to_token[id]);
    }
    std::string text;
    if (decoder != nullptr) {
      decoder->DecodeChain(&tokens);
      for (const std::string& t : tokens) text += t;
    } else {
      for (size_t k = 0; k < tokens.size(); ++k) absl::StrAppend(&text, k ? " " : "", tokens[k]);
    }
    return clean_up_spaces ? CleanUpTokenizationSpaces(std::move(text)) : text;
  }
};

namespace {

absl::StatusOr<Json> ParseJson(std::string_view text, const std::string& name) {
  Json j = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(name, ": not valid JSON"));
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(name, ": expected an object"));
  return j;
}

absl::StatusOr<std::vector<AddedToken>> ParseAddedTokens(const Json& root) {
  std::vector<AddedToken> added;
  if (!root.contains("added_tokens") || root["added_tokens"].is_null()) return added;
  if (!root["added_tokens"].is_array()) return JsonError("added_tokens", "expected an array");
  for (size_t i = 0; i < root["added_tokens"].size(); ++i) {
    const Json& a = root["added_tokens"][i];
    const std::string path = absl::StrCat("added_tokens[", i, "]");
    if (!a.is_object()) return JsonError(path, "expected an object");
    AddedToken t;
    ASSIGN_OR_RETURN(t.content, GetString(a, path, "content", ""));
    ASSIGN_OR_RETURN(const int64_t id, GetInt(a, path, "id", -1));
    if (t.content.empty() || id < 0 || id >= (1LL << 31)) {
      return JsonError(path, "expected a non-empty \"content\" and an \"id\" >= 0");
    }
    t.id = static_cast<int32_t>(id);
    ASSIGN_OR_RETURN(t.special, GetBool(a, path, "special", false));
    ASSIGN_OR_RETURN(t.single_word, GetBool(a, path, "single_word", false));
    ASSIGN_OR_RETURN(t.lstrip, GetBool(a, path, "lstrip", false));
    ASSIGN_OR_RETURN(t.rstrip, GetBool(a, path, "rstrip", false));
    ASSIGN_OR_RETURN(t.normalized, GetBool(a, path, "normalized", !t.special));
    added.push_back(std::move(t));
  }
  return added;
}

// "<s>", {"content": "<s>", ...}, or null/absent (-> "").
absl::StatusOr<std::string> ConfigToken(const Json& config, const std::string& config_name,
                                        const char* key) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::string();
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return absl::InvalidArgumentError(
      absl::StrCat(config_name, ": ", key, ": expected a token string or {\"content\": ...}"));
}

absl::StatusOr<std::unique_ptr<Impl>> Build(const Json& root, const Json& config,
                                            const std::string& config_name, bool require_eos) {
  auto impl = std::make_unique<Impl>();
  ASSIGN_OR_RETURN(impl->added, ParseAddedTokens(root));
  if (root.contains("normalizer") && !root["normalizer"].is_null()) {
    ASSIGN_OR_RETURN(impl->normalizer, BuildNormalizer(root["normalizer"], "normalizer"));
    // DeepSeek-V3 says {"type": "Sequence", "normalizers": []}: nothing to do, skip the copy.
    const Json& n = root["normalizer"];
    if (n["type"] == "Sequence" && n["normalizers"].empty()) impl->normalizer = nullptr;
  }
  bool byte_level = false;
  if (root.contains("pre_tokenizer") && !root["pre_tokenizer"].is_null()) {
    ASSIGN_OR_RETURN(impl->pre_tokenizer,
                     BuildPreTokenizer(root["pre_tokenizer"], "pre_tokenizer", &byte_level));
  }
  if (!root.contains("model")) return JsonError("model", "missing");
  ASSIGN_OR_RETURN(const std::string model_type, GetType(root["model"], "model"));
  if (model_type != "BPE") {
    return JsonError("model.type",
                     absl::StrCat("unsupported model \"", model_type, "\" (supported: BPE)"));
  }
  ASSIGN_OR_RETURN(impl->model, BpeModel::Build(root["model"], "model", byte_level));
  if (root.contains("post_processor") && !root["post_processor"].is_null()) {
    ASSIGN_OR_RETURN(impl->post_processor,
                     BuildPostProcessor(root["post_processor"], "post_processor"));
  }
  if (root.contains("decoder") && !root["decoder"].is_null()) {
    ASSIGN_OR_RETURN(impl->decoder, BuildDecoder(root["decoder"], "decoder"));
  }
  // "truncation" and "padding" shape batches of encodings, not the tokenization: ignored.

  impl->id_to_token = impl->model->vocab();
  for (const AddedToken& t : impl->added) {
    impl->added_ids[t.content] = t.id;
    if (static_cast<size_t>(t.id) >= impl->id_to_token.size()) impl->id_to_token.resize(t.id + 1);
    impl->id_to_token[t.id] = t.content;
  }
  impl->special.assign(impl->id_to_token.size(), false);
  std::vector<std::string> raw_keys(impl->added.size()), normalized_keys(impl->added.size());
  for (size_t i = 0; i < impl->added.size(); ++i) {
    const AddedToken& t = impl->added[i];
    if (t.special) impl->special[t.id] = true;
    if (!t.normalized) {
      raw_keys[i] = t.content;
    } else {
      normalized_keys[i] =
          impl->normalizer != nullptr ? impl->normalizer->Normalize(t.content) : t.content;
    }
  }
  impl->raw_matcher.Build(&impl->added, raw_keys);
  impl->normalized_matcher.Build(&impl->added, normalized_keys);

  if (!config.is_null()) {
    ASSIGN_OR_RETURN(const std::string bos, ConfigToken(config, config_name, "bos_token"));
    ASSIGN_OR_RETURN(const std::string eos, ConfigToken(config, config_name, "eos_token"));
    for (const auto& [name, id] : {std::pair{bos, &impl->bos}, std::pair{eos, &impl->eos}}) {
      if (name.empty()) continue;
      *id = impl->TokenToId(name);
      if (*id < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(config_name, ": token \"", name, "\" is not in the vocabulary"));
      }
    }
    auto it = config.find("clean_up_tokenization_spaces");
    if (it != config.end() && it->is_boolean()) impl->clean_up_spaces = it->get<bool>();
  }
  if (require_eos && impl->eos < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        config_name, ": no \"eos_token\"; moetrain needs the model's end-of-sequence token ",
        "(it ends every document)"));
  }
  return impl;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace
}  // namespace hf

HfTokenizer::HfTokenizer(std::unique_ptr<hf::Impl> impl, std::string name,
                         std::vector<std::string> files)
    : impl_(std::move(impl)), name_(std::move(name)), files_(std::move(files)) {}

HfTokenizer::~HfTokenizer() = default;

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::FromJson(std::string_view tokenizer_json,
                                                                   std::string_view config_json,
                                                                   const std::string& name,
                                                                   bool require_eos) {
  ASSIGN_OR_RETURN(const hf::Json root, hf::ParseJson(tokenizer_json, name));
  hf::Json config;
  const std::string config_name =
      (std::filesystem::path(name).parent_path() / "tokenizer_config.json").string();
  if (!config_json.empty()) {
    ASSIGN_OR_RETURN(config, hf::ParseJson(config_json, config_name));
  }
  absl::StatusOr<std::unique_ptr<hf::Impl>> impl =
      hf::Build(root, config, config_json.empty() ? name : config_name, require_eos);
  if (!impl.ok()) {
    // Component errors carry only their JSON path; name the file.
    const std::string msg(impl.status().message());
    if (msg.rfind(name, 0) == 0 || msg.rfind(config_name, 0) == 0) return impl.status();
    return absl::Status(impl.status().code(), absl::StrCat(name, ": ", msg));
  }
  return std::unique_ptr<HfTokenizer>(
      new HfTokenizer(std::move(*impl), absl::StrCat("huggingface:", name), {name}));
}

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::Load(const std::string& path) {
  std::filesystem::path file = path;
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec)) file /= "tokenizer.json";
  ASSIGN_OR_RETURN(const std::string json, hf::ReadFile(file.string()));
  const std::filesystem::path config_file = file.parent_path() / "tokenizer_config.json";
  std::string config;
  std::vector<std::string> files = {file.string()};
  if (std::filesystem::exists(config_file, ec)) {
    ASSIGN_OR_RETURN(config, hf::ReadFile(config_file.string()));
    files.push_back(config_file.string());
  }
  // Some repositories name their BOS/EOS only in special_tokens_map.json; transformers fills
  // what tokenizer_config.json lacks from it, and so do we.
  const std::filesystem::path map_file = file.parent_path() / "special_tokens_map.json";
  if (std::filesystem::exists(map_file, ec)) {
    ASSIGN_OR_RETURN(const std::string map_text, hf::ReadFile(map_file.string()));
    ASSIGN_OR_RETURN(const hf::Json map, hf::ParseJson(map_text, map_file.string()));
    hf::Json merged = hf::Json::object();
    if (!config.empty()) {
      ASSIGN_OR_RETURN(merged, hf::ParseJson(config, config_file.string()));
    }
    for (const char* key : {"bos_token", "eos_token"}) {
      if ((!merged.contains(key) || merged[key].is_null()) && map.contains(key)) {
        merged[key] = map[key];
      }
    }
    config = merged.dump();
    files.push_back(map_file.string());
  }
  ASSIGN_OR_RETURN(std::unique_ptr<HfTokenizer> tok, FromJson(json, config, file.string()));
  tok->files_ = std::move(files);
  return tok;
}

std::vector<int32_t> HfTokenizer::Encode(std::string_view text) const {
  return impl_->Encode(text, /*add_special_tokens=*/false);
}
std::vector<int32_t> HfTokenizer::Encode(std::string_view text, bool add_special_tokens) const {
  return impl_->Encode(text, add_special_tokens);
}
std::string HfTokenizer::Decode(const std::vector<int32_t>& ids) const {
  return impl_->Decode(ids, /*skip_special=*/false);
}
std::string HfTokenizer::Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  return impl_->Decode(ids, skip_special_tokens);
}
int64_t HfTokenizer::vocab_size() const { return static_cast<int64_t>(impl_->id_to_token.size()); }
int32_t HfTokenizer::bos_id() const { return impl_->bos; }
int32_t HfTokenizer::eos_id() const { return impl_->eos; }
int32_t HfTokenizer::unk_id() const { return impl_->model->unk_id(); }
std::string HfTokenizer::name() const { return name_; }
int32_t HfTokenizer::TokenToId(std::string_view token) const { return impl_->TokenToId(token); }
std::string HfTokenizer::IdToToken(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->id_to_token.size()) return "";
  return impl_->id_to_token[id];
}

}  // namespace mt::data

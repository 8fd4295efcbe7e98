// data/hf_tokenizer_post.cc: tokenizer.json post-processors.
//
// TemplateProcessing, ByteLevel (offsets only: nothing to do for ids), RobertaProcessing,
// BertProcessing and Sequence add the special tokens of one sequence, as Hugging Face's
// encode(text, add_special_tokens=True) does; "pair" templates are never used here.
#include "absl/strings/str_cat.h"
#include "data/hf_tokenizer_internal.h"
#include "kernels/status.h"

namespace mt::data::hf {
namespace {

class SequenceProcessor : public PostProcessor {
 public:
  explicit SequenceProcessor(std::vector<std::unique_ptr<PostProcessor>> steps)
      : steps_(std::move(steps)) {}
  void Process(std::vector<int32_t>* ids) const override {
    for (const auto& step : steps_) step->Process(ids);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

// What goes before and after the sequence (TemplateProcessing "single", Roberta, Bert).
class WrapProcessor : public PostProcessor {
 public:
  WrapProcessor(std::vector<int32_t> before, std::vector<int32_t> after)
      : before_(std::move(before)), after_(std::move(after)) {}
  void Process(std::vector<int32_t>* ids) const override {
    ids->insert(ids->begin(), before_.begin(), before_.end());
    ids->insert(ids->end(), after_.begin(), after_.end());
  }

 private:
  std::vector<int32_t> before_, after_;
};

class NoOpProcessor : public PostProcessor {
 public:
  void Process(std::vector<int32_t>*) const override {}
};

// ["<s>", 0] as Roberta and Bert spell their cls/sep tokens.
absl::StatusOr<int32_t> TokenPairId(const Json& j, const std::string& path, const char* key) {
  if (!j.contains(key) || !j[key].is_array() || j[key].size() != 2 ||
      !j[key][1].is_number_integer()) {
    return JsonError(absl::StrCat(path, ".", key), "expected [\"token\", id]");
  }
  return j[key][1].get<int32_t>();
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostProcessor>> BuildPostProcessor(const Json& j,
                                                                  const std::string& path) {
  ASSIGN_OR_RETURN(const std::string type, GetType(j, path));
  if (type == "ByteLevel") return std::make_unique<NoOpProcessor>();  // offsets only
  if (type == "Sequence") {
    if (!j.contains("processors") || !j["processors"].is_array()) {
      return JsonError(path + ".processors", "expected an array");
    }
    std::vector<std::unique_ptr<PostProcessor>> steps;
    for (size_t i = 0; i < j["processors"].size(); ++i) {
      ASSIGN_OR_RETURN(auto step, BuildPostProcessor(j["processors"][i],
                                                     absl::StrCat(path, ".processors[", i, "]")));
      steps.push_back(std::move(step));
    }
    return std::make_unique<SequenceProcessor>(std::move(steps));
  }
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    ASSIGN_OR_RETURN(const int32_t cls, TokenPairId(j, path, "cls"));
    ASSIGN_OR_RETURN(const int32_t sep, TokenPairId(j, path, "sep"));
    return std::make_unique<WrapProcessor>(std::vector<int32_t>{cls}, std::vector<int32_t>{sep});
  }
  if (type == "TemplateProcessing") {
    const std::string spath = path + ".single";
    if (!j.contains("single") || !j["single"].is_array())
      return JsonError(spath, "expected an array");
    const Json* specials = j.contains("special_tokens") ? &j["special_tokens"] : nullptr;
    std::vector<int32_t> before, after;
    bool seen_sequence = false;
    for (size_t i = 0; i < j["single"].size(); ++i) {
      const Json& item = j["single"][i];
      const std::string ipath = absl::StrCat(spath, "[", i, "]");
      if (item.contains("Sequence")) {
        if (seen_sequence) return JsonError(ipath, "a second sequence in a single template");
        seen_sequence = true;
      } else if (item.contains("SpecialToken") && item["SpecialToken"].contains("id") &&
                 item["SpecialToken"]["id"].is_string()) {
        const std::string name = item["SpecialToken"]["id"].get<std::string>();
        if (specials == nullptr || !specials->contains(name) ||
            !(*specials)[name].contains("ids") || !(*specials)[name]["ids"].is_array()) {
          return JsonError(path + ".special_tokens",
                           absl::StrCat("no ids for the template's special token \"", name, "\""));
        }
        for (const Json& id : (*specials)[name]["ids"]) {
          if (!id.is_number_integer()) {
            return JsonError(absl::StrCat(path, ".special_tokens[\"", name, "\"].ids"),
                             "expected integer ids");
          }
          (seen_sequence ? after : before).push_back(id.get<int32_t>());
        }
      } else {
        return JsonError(ipath, "expected {\"SpecialToken\": {...}} or {\"Sequence\": {...}}");
      }
    }
    return std::make_unique<WrapProcessor>(std::move(before), std::move(after));
  }
  return JsonError(path + ".type", absl::StrCat("unsupported post-processor \"", type,
                                                "\" (supported: TemplateProcessing, ByteLevel, "
                                                "RobertaProcessing, BertProcessing, Sequence)"));
}

}  // namespace mt::data::hf

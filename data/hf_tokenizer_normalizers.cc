// data/hf_tokenizer_normalizers.cc: tokenizer.json normalizers.
//
// Sequence, NFC/NFD/NFKC/NFKD (ICU), Lowercase, Replace (String or Regex), Prepend, Strip,
// StripAccents. Semantics of Hugging Face's Rust implementation: Prepend leaves an empty
// string empty; Lowercase maps each character on its own (no final-sigma rule, which the JS
// port's toLowerCase applies); Strip trims Unicode White_Space.
#include "absl/strings/str_cat.h"
#include "data/hf_tokenizer_internal.h"
#include "data/hf_tokenizer_regex.h"
#include "data/unicode_text.h"
#include "kernels/status.h"

namespace mt::data::hf {
namespace {

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  std::string Normalize(std::string text) const override {
    for (const auto& step : steps_) text = step->Normalize(std::move(text));
    return text;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(unicode::NormalForm form) : form_(form) {}
  std::string Normalize(std::string text) const override { return unicode::Normalize(text, form_); }

 private:
  unicode::NormalForm form_;
};

class LowercaseNormalizer : public Normalizer {
 public:
  std::string Normalize(std::string text) const override { return unicode::ToLower(text); }
};

class StripAccentsNormalizer : public Normalizer {
 public:
  std::string Normalize(std::string text) const override { return unicode::RemoveMarks(text); }
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(std::unique_ptr<Regex> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::string Normalize(std::string text) const override {
    return pattern_->ReplaceAll(text, content_);
  }

 private:
  std::unique_ptr<Regex> pattern_;
  std::string content_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prepend) : prepend_(std::move(prepend)) {}
  std::string Normalize(std::string text) const override {
    return text.empty() ? text : prepend_ + text;
  }

 private:
  std::string prepend_;
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  std::string Normalize(std::string text) const override {
    size_t begin = 0, end = text.size();
    while (left_ && begin < end) {
      int len;
      if (!unicode::IsWhiteSpace(unicode::DecodeAt(text, begin, &len))) break;
      begin += len;
    }
    while (right_ && end > begin) {
      size_t start = end - 1;
      while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
      int len;
      if (!unicode::IsWhiteSpace(unicode::DecodeAt(text, start, &len))) break;
      end = start;
    }
    return text.substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

}  // namespace

// {"String": "..."} or {"Regex": "..."}, as Replace and Split spell their patterns.
absl::StatusOr<std::unique_ptr<Regex>> BuildPattern(const Json& j, const std::string& path) {
  if (j.is_object() && j.size() == 1 && j.begin().value().is_string()) {
    const std::string& kind = j.begin().key();
    const std::string& body = j.begin().value().get_ref<const std::string&>();
    if (kind == "String" || kind == "Regex") {
      absl::StatusOr<std::unique_ptr<Regex>> re = Regex::Compile(body, kind == "String");
      if (!re.ok())
        return JsonError(absl::StrCat(path, ".", kind), std::string(re.status().message()));
      return re;
    }
  }
  return JsonError(path, "expected {\"String\": ...} or {\"Regex\": ...}");
}

absl::StatusOr<std::unique_ptr<Normalizer>> BuildNormalizer(const Json& j,
                                                            const std::string& path) {
  ASSIGN_OR_RETURN(const std::string type, GetType(j, path));
  if (type == "Sequence") {
    if (!j.contains("normalizers") || !j["normalizers"].is_array()) {
      return JsonError(path + ".normalizers", "expected an array");
    }
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (size_t i = 0; i < j["normalizers"].size(); ++i) {
      ASSIGN_OR_RETURN(auto step, BuildNormalizer(j["normalizers"][i],
                                                  absl::StrCat(path, ".normalizers[", i, "]")));
      steps.push_back(std::move(step));
    }
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(unicode::NormalForm::kNFC);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(unicode::NormalForm::kNFD);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(unicode::NormalForm::kNFKC);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(unicode::NormalForm::kNFKD);
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "StripAccents") return std::make_unique<StripAccentsNormalizer>();
  if (type == "Replace") {
    if (!j.contains("pattern")) return JsonError(path + ".pattern", "missing");
    ASSIGN_OR_RETURN(auto pattern, BuildPattern(j["pattern"], path + ".pattern"));
    ASSIGN_OR_RETURN(std::string content, GetString(j, path, "content", ""));
    return std::make_unique<ReplaceNormalizer>(std::move(pattern), std::move(content));
  }
  if (type == "Prepend") {
    ASSIGN_OR_RETURN(std::string prepend, GetString(j, path, "prepend", ""));
    return std::make_unique<PrependNormalizer>(std::move(prepend));
  }
  if (type == "Strip") {
    ASSIGN_OR_RETURN(const bool left, GetBool(j, path, "strip_left", true));
    ASSIGN_OR_RETURN(const bool right, GetBool(j, path, "strip_right", true));
    return std::make_unique<StripNormalizer>(left, right);
  }
  return JsonError(path + ".type",
                   absl::StrCat("unsupported normalizer \"", type,
                                "\" (supported: Sequence, NFC, NFD, NFKC, NFKD, Lowercase, "
                                "Replace, Prepend, Strip, StripAccents)"));
}

}  // namespace mt::data::hf

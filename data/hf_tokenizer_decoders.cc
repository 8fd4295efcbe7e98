// data/hf_tokenizer_decoders.cc: tokenizer.json decoders.
//
// Decoders (ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace, BPEDecoder,
// WordPiece, Sequence) turn token strings back into text, as Hugging Face's Rust crate does:
// ByteLevel maps byte-level characters back to bytes (a token with any other character is
// taken as its own UTF-8) and repairs invalid UTF-8 with U+FFFD; ByteFallback turns runs of
// <0xXX> tokens into their text, or one U+FFFD per byte when they are not valid UTF-8.
#include <cctype>
#include <string>

#include "absl/strings/str_cat.h"
#include "data/hf_tokenizer_internal.h"
#include "data/hf_tokenizer_regex.h"
#include "data/unicode_text.h"
#include "kernels/status.h"

namespace mt::data::hf {
namespace {

using Tokens = std::vector<std::string>;

bool IsHexDigit(char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; }

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps)
      : steps_(std::move(steps)) {}
  void DecodeChain(Tokens* tokens) const override {
    for (const auto& step : steps_) step->DecodeChain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

class ByteLevelDecoder : public Decoder {
 public:
  void DecodeChain(Tokens* tokens) const override {
    std::string bytes;
    for (const std::string& t : *tokens) {
      const size_t mark = bytes.size();
      bool all_mapped = true;
      for (size_t i = 0; i < t.size() && all_mapped;) {
        int len;
        const int b = UnicodeToByte(unicode::DecodeAt(t, i, &len));
        if (b < 0) {
          all_mapped = false;
        } else {
          bytes.push_back(static_cast<char>(b));
        }
        i += len;
      }
      if (!all_mapped) {
        bytes.resize(mark);
        bytes += t;
      }
    }
    std::string storage;
    const std::string_view text = unicode::SanitizeUtf8(bytes, &storage);
    *tokens = {std::string(text)};
  }
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool strip_first)
      : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  void DecodeChain(Tokens* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      std::string& t = (*tokens)[i];
      std::string out;
      for (size_t at = 0; at < t.size();) {
        if (t.compare(at, replacement_.size(), replacement_) == 0) {
          // Rust drops every replacement character of the first token, not just a leading one.
          if (!(i == 0 && strip_first_)) out.push_back(' ');
          at += replacement_.size();
        } else {
          out.push_back(t[at++]);
        }
      }
      t = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

class ByteFallbackDecoder : public Decoder {
 public:
  void DecodeChain(Tokens* tokens) const override {
    Tokens out;
    std::string run;  // bytes of consecutive <0xXX> tokens
    size_t run_tokens = 0;
    auto flush = [&] {
      if (run_tokens == 0) return;
      if (unicode::IsValidUtf8(run)) {
        out.push_back(run);
      } else {
        for (size_t k = 0; k < run_tokens; ++k) out.push_back("\xEF\xBF\xBD");
      }
      run.clear();
      run_tokens = 0;
    };
    for (std::string& t : *tokens) {
      int byte = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && IsHexDigit(t[3]) &&
          IsHexDigit(t[4])) {
        byte = std::stoi(t.substr(3, 2), nullptr, 16);
      }
      if (byte >= 0) {
        run.push_back(static_cast<char>(byte));
        ++run_tokens;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens->swap(out);
  }
};

class FuseDecoder : public Decoder {
 public:
  void DecodeChain(Tokens* tokens) const override {
    std::string all;
    for (const std::string& t : *tokens) all += t;
    *tokens = {std::move(all)};
  }
};

class StripDecoder : public Decoder {
 public:
  StripDecoder(std::string content, int64_t start, int64_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void DecodeChain(Tokens* tokens) const override {
    const size_t n = content_.size();
    for (std::string& t : *tokens) {
      size_t begin = 0, end = t.size();
      for (int64_t k = 0; k < start_ && begin + n <= end && t.compare(begin, n, content_) == 0;
           ++k) {
        begin += n;
      }
      for (int64_t k = 0; k < stop_ && end >= begin + n && t.compare(end - n, n, content_) == 0;
           ++k) {
        end -= n;
      }
      t = t.substr(begin, end - begin);
    }
  }

 private:
  std::string content_;  // one character
  int64_t start_, stop_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(std::unique_ptr<Regex> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void DecodeChain(Tokens* tokens) const override {
    for (std::string& t : *tokens) t = pattern_->ReplaceAll(t, content_);
  }

 private:
  std::unique_ptr<Regex> pattern_;
  std::string content_;
};

class BpeSuffixDecoder : public Decoder {
 public:
  explicit BpeSuffixDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  void DecodeChain(Tokens* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      std::string& t = (*tokens)[i];
      const std::string with = i + 1 == tokens->size() ? "" : " ";
      std::string out;
      for (size_t at = 0; at < t.size();) {
        if (!suffix_.empty() && t.compare(at, suffix_.size(), suffix_) == 0) {
          out += with;
          at += suffix_.size();
        } else {
          out.push_back(t[at++]);
        }
      }
      t = std::move(out);
    }
  }

 private:
  std::string suffix_;
};

// transformers' clean_up_tokenization: no space before . ? ! , and English contractions.
std::string CleanUp(std::string s) {
  static const std::pair<const char*, const char*> kRules[] = {
      {" .", "."},     {" ?", "?"},   {" !", "!"},   {" ,", ","},     {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kRules) {
    std::string out;
    const std::string_view f(from);
    for (size_t at = 0; at < s.size();) {
      if (s.compare(at, f.size(), f) == 0) {
        out += to;
        at += f.size();
      } else {
        out.push_back(s[at++]);
      }
    }
    s = std::move(out);
  }
  return s;
}

class WordPieceDecoder : public Decoder {
 public:
  WordPieceDecoder(std::string prefix, bool cleanup)
      : prefix_(std::move(prefix)), cleanup_(cleanup) {}
  void DecodeChain(Tokens* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      std::string& t = (*tokens)[i];
      if (i > 0) {
        if (!prefix_.empty() && t.compare(0, prefix_.size(), prefix_) == 0) {
          t = t.substr(prefix_.size());
        } else {
          t = " " + t;
        }
      }
      if (cleanup_) t = CleanUp(std::move(t));
    }
  }

 private:
  std::string prefix_;
  bool cleanup_;
};

}  // namespace

std::string CleanUpTokenizationSpaces(std::string text) { return CleanUp(std::move(text)); }

absl::StatusOr<std::unique_ptr<Decoder>> BuildDecoder(const Json& j, const std::string& path) {
  ASSIGN_OR_RETURN(const std::string type, GetType(j, path));
  if (type == "Sequence") {
    if (!j.contains("decoders") || !j["decoders"].is_array()) {
      return JsonError(path + ".decoders", "expected an array");
    }
    std::vector<std::unique_ptr<Decoder>> steps;
    for (size_t i = 0; i < j["decoders"].size(); ++i) {
      ASSIGN_OR_RETURN(auto step,
                       BuildDecoder(j["decoders"][i], absl::StrCat(path, ".decoders[", i, "]")));
      steps.push_back(std::move(step));
    }
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Metaspace") {
    ASSIGN_OR_RETURN(std::string replacement, GetString(j, path, "replacement", "\u2581"));
    ASSIGN_OR_RETURN(const bool legacy_prefix, GetBool(j, path, "add_prefix_space", true));
    ASSIGN_OR_RETURN(const std::string scheme,
                     GetString(j, path, "prepend_scheme", legacy_prefix ? "always" : "never"));
    if (replacement.empty()) return JsonError(path + ".replacement", "expected one character");
    return std::make_unique<MetaspaceDecoder>(std::move(replacement), scheme != "never");
  }
  if (type == "Strip") {
    ASSIGN_OR_RETURN(std::string content, GetString(j, path, "content", " "));
    ASSIGN_OR_RETURN(const int64_t start, GetInt(j, path, "start", 0));
    ASSIGN_OR_RETURN(const int64_t stop, GetInt(j, path, "stop", 0));
    if (content.empty()) return JsonError(path + ".content", "expected one character");
    return std::make_unique<StripDecoder>(std::move(content), start, stop);
  }
  if (type == "Replace") {
    if (!j.contains("pattern")) return JsonError(path + ".pattern", "missing");
    ASSIGN_OR_RETURN(auto pattern, BuildPattern(j["pattern"], path + ".pattern"));
    ASSIGN_OR_RETURN(std::string content, GetString(j, path, "content", ""));
    return std::make_unique<ReplaceDecoder>(std::move(pattern), std::move(content));
  }
  if (type == "BPEDecoder") {
    ASSIGN_OR_RETURN(std::string suffix, GetString(j, path, "suffix", "</w>"));
    return std::make_unique<BpeSuffixDecoder>(std::move(suffix));
  }
  if (type == "WordPiece") {
    ASSIGN_OR_RETURN(std::string prefix, GetString(j, path, "prefix", "##"));
    ASSIGN_OR_RETURN(const bool cleanup, GetBool(j, path, "cleanup", true));
    return std::make_unique<WordPieceDecoder>(std::move(prefix), cleanup);
  }
  return JsonError(path + ".type",
                   absl::StrCat("unsupported decoder \"", type,
                                "\" (supported: Sequence, ByteLevel, Metaspace, ByteFallback, "
                                "Fuse, Strip, Replace, BPEDecoder, WordPiece)"));
}

}  // namespace mt::data::hf

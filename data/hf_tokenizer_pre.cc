// data/hf_tokenizer_pre.cc: tokenizer.json pre-tokenizers.
//
// Sequence, Split (String/Regex pattern, invert, the five delimiter behaviours), ByteLevel,
// Whitespace, WhitespaceSplit, Metaspace, Digits, Punctuation, BertPreTokenizer and
// CharDelimiterSplit, each as Hugging Face's Rust implementation defines it. The JS port
// approximates some of these (it has no MergedWith*/Contiguous, joins punctuation runs,
// and its Metaspace never splits); the Rust behaviour is the reference here.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "data/hf_tokenizer_internal.h"
#include "data/hf_tokenizer_regex.h"
#include "data/unicode_text.h"
#include "kernels/status.h"

namespace mt::data::hf {
namespace {

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

using Ranges = std::vector<std::pair<uint32_t, uint32_t>>;

struct Cut {
  uint32_t begin, end;
  bool flag;  // is_match before the behaviour, "remove" after it
};

// The Rust NormalizedString::split: matches -> the pieces the behaviour keeps.
void ApplyBehavior(Behavior behavior, std::vector<Cut>* cuts) {
  std::vector<Cut> out;
  switch (behavior) {
    case Behavior::kRemoved:
      return;
    case Behavior::kIsolated:
      for (Cut& c : *cuts) c.flag = false;
      return;
    case Behavior::kContiguous: {
      bool previous = false;
      for (const Cut& c : *cuts) {
        if (c.flag == previous && !out.empty()) {
          out.back().end = c.end;
        } else {
          out.push_back({c.begin, c.end, false});
        }
        previous = c.flag;
      }
      break;
    }
    case Behavior::kMergedWithPrevious: {
      bool previous = false;
      for (const Cut& c : *cuts) {
        if (c.flag && !previous && !out.empty()) {
          out.back().end = c.end;
        } else {
          out.push_back({c.begin, c.end, false});
        }
        previous = c.flag;
      }
      break;
    }
    case Behavior::kMergedWithNext: {
      bool previous = false;
      for (auto it = cuts->rbegin(); it != cuts->rend(); ++it) {
        if (it->flag && !previous && !out.empty()) {
          out.back().begin = it->begin;
        } else {
          out.push_back({it->begin, it->end, false});
        }
        previous = it->flag;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
  }
  cuts->swap(out);
}

// Splits every piece at the matches `find(piece, &ranges)` reports.
template <typename Find>
void SplitPieces(PieceList* pieces, Behavior behavior, bool invert, const Find& find) {
  std::vector<Span> out;
  out.reserve(pieces->spans.size() * 2);
  Ranges ranges;
  std::vector<Cut> cuts;
  for (const Span& span : pieces->spans) {
    const std::string_view piece(pieces->text.data() + span.begin, span.end - span.begin);
    ranges.clear();
    find(piece, &ranges);
    cuts.clear();
    uint32_t prev = 0;
    for (const auto& [b, e] : ranges) {
      if (prev < b) cuts.push_back({prev, b, false});
      cuts.push_back({b, e, true});
      prev = e;
    }
    if (prev < piece.size()) cuts.push_back({prev, static_cast<uint32_t>(piece.size()), false});
    if (invert) {
      for (Cut& c : cuts) c.flag = !c.flag;
    }
    ApplyBehavior(behavior, &cuts);
    for (const Cut& c : cuts) {
      if (c.flag || c.begin == c.end) continue;  // removed, or empty
      out.push_back({span.begin + c.begin, span.begin + c.end, span.at_origin && c.begin == 0});
    }
  }
  pieces->spans.swap(out);
}

// Each character for which `pred` holds is a match of its own (Rust's char patterns).
template <typename Pred>
auto CharMatcher(Pred pred) {
  return [pred](std::string_view piece, Ranges* ranges) {
    for (size_t i = 0; i < piece.size();) {
      int len;
      const char32_t cp = unicode::DecodeAt(piece, i, &len);
      if (pred(cp)) ranges->emplace_back(static_cast<uint32_t>(i), static_cast<uint32_t>(i + len));
      i += len;
    }
  };
}

auto RegexMatcher(const Regex* re) {
  return [re](std::string_view piece, Ranges* ranges) { re->FindAll(piece, ranges); };
}

// Replaces span `s` by `content`, appended to the arena.
void Rewrite(PieceList* pieces, Span* s, std::string_view content) {
  const uint32_t begin = static_cast<uint32_t>(pieces->text.size());
  pieces->text.append(content);
  s->begin = begin;
  s->end = static_cast<uint32_t>(pieces->text.size());
}

class SequencePre : public PreTokenizer {
 public:
  explicit SequencePre(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  void PreTokenize(PieceList* pieces) const override {
    for (const auto& step : steps_) step->PreTokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

class SplitPre : public PreTokenizer {
 public:
  SplitPre(std::unique_ptr<Regex> pattern, Behavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void PreTokenize(PieceList* pieces) const override {
    SplitPieces(pieces, behavior_, invert_, RegexMatcher(pattern_.get()));
  }

 private:
  std::unique_ptr<Regex> pattern_;
  Behavior behavior_;
  bool invert_;
};

template <typename Pred>
class CharSplitPre : public PreTokenizer {
 public:
  CharSplitPre(Pred pred, Behavior behavior) : pred_(pred), behavior_(behavior) {}
  void PreTokenize(PieceList* pieces) const override {
    SplitPieces(pieces, behavior_, false, CharMatcher(pred_));
  }

 private:
  Pred pred_;
  Behavior behavior_;
};
template <typename Pred>
std::unique_ptr<PreTokenizer> MakeCharSplit(Pred pred, Behavior behavior) {
  return std::make_unique<CharSplitPre<Pred>>(pred, behavior);
}

class ByteLevelPre : public PreTokenizer {
 public:
  ByteLevelPre(bool add_prefix_space, std::unique_ptr<Regex> gpt2, bool map_bytes)
      : add_prefix_space_(add_prefix_space), gpt2_(std::move(gpt2)), map_bytes_(map_bytes) {}
  bool is_byte_level() const override { return true; }
  void PreTokenize(PieceList* pieces) const override {
    if (add_prefix_space_) {
      for (Span& s : pieces->spans) {
        if (pieces->text[s.begin] == ' ') continue;
        const std::string content = " " + pieces->text.substr(s.begin, s.end - s.begin);
        Rewrite(pieces, &s, content);
      }
    }
    if (gpt2_ != nullptr)
      SplitPieces(pieces, Behavior::kIsolated, false, RegexMatcher(gpt2_.get()));
    if (map_bytes_) {
      // Not the last stage: later stages see the byte-level characters, as in Rust.
      for (Span& s : pieces->spans) {
        std::string mapped;
        for (uint32_t i = s.begin; i < s.end; ++i) {
          mapped += ByteToUnicode(static_cast<uint8_t>(pieces->text[i]));
        }
        Rewrite(pieces, &s, mapped);
      }
    }
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> gpt2_;  // null: use_regex false
  bool map_bytes_;
};

enum class Prepend { kAlways, kFirst, kNever };

class MetaspacePre : public PreTokenizer {
 public:
  MetaspacePre(std::string replacement, Prepend prepend, bool split)
      : replacement_(std::move(replacement)), prepend_(prepend), split_(split) {}
  void PreTokenize(PieceList* pieces) const override {
    for (Span& s : pieces->spans) {
      const std::string_view piece(pieces->text.data() + s.begin, s.end - s.begin);
      std::string content;
      for (char c : piece) {
        if (c == ' ') {
          content += replacement_;
        } else {
          content.push_back(c);
        }
      }
      const bool starts = content.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts &&
          (prepend_ == Prepend::kAlways || (prepend_ == Prepend::kFirst && s.at_origin))) {
        content.insert(0, replacement_);
      }
      if (content != piece) Rewrite(pieces, &s, content);
    }
    if (split_) {
      const std::string& r = replacement_;
      SplitPieces(pieces, Behavior::kMergedWithNext, false, [&r](std::string_view p, Ranges* out) {
        for (size_t at = p.find(r); at != std::string_view::npos; at = p.find(r, at + r.size())) {
          out->emplace_back(static_cast<uint32_t>(at), static_cast<uint32_t>(at + r.size()));
        }
      });
    }
  }

 private:
  std::string replacement_;
  Prepend prepend_;
  bool split_;
};

absl::StatusOr<Behavior> ParseBehavior(const Json& j, const std::string& path, Behavior fallback) {
  ASSIGN_OR_RETURN(const std::string b, GetString(j, path, "behavior", ""));
  if (b.empty()) return fallback;
  if (b == "Removed") return Behavior::kRemoved;
  if (b == "Isolated") return Behavior::kIsolated;
  if (b == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::kMergedWithNext;
  if (b == "Contiguous") return Behavior::kContiguous;
  return JsonError(path + ".behavior",
                   absl::StrCat("unknown behavior \"", b,
                                "\" (Removed, Isolated, MergedWithPrevious, MergedWithNext, "
                                "Contiguous)"));
}

// Hugging Face's GPT-2 pattern, the one ByteLevel's use_regex applies.
constexpr char kGpt2Pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

absl::StatusOr<std::unique_ptr<PreTokenizer>> Build(const Json& j, const std::string& path,
                                                    bool final_position, bool* byte_level_last) {
  ASSIGN_OR_RETURN(const std::string type, GetType(j, path));
  if (type == "Sequence") {
    if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array()) {
      return JsonError(path + ".pretokenizers", "expected an array");
    }
    const Json& list = j["pretokenizers"];
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      ASSIGN_OR_RETURN(auto step, Build(list[i], absl::StrCat(path, ".pretokenizers[", i, "]"),
                                        final_position && i + 1 == list.size(), byte_level_last));
      steps.push_back(std::move(step));
    }
    return std::make_unique<SequencePre>(std::move(steps));
  }
  if (type == "Split") {
    if (!j.contains("pattern")) return JsonError(path + ".pattern", "missing");
    ASSIGN_OR_RETURN(auto pattern, BuildPattern(j["pattern"], path + ".pattern"));
    if (!j.contains("behavior")) return JsonError(path + ".behavior", "missing");
    ASSIGN_OR_RETURN(const Behavior behavior, ParseBehavior(j, path, Behavior::kIsolated));
    ASSIGN_OR_RETURN(const bool invert, GetBool(j, path, "invert", false));
    return std::make_unique<SplitPre>(std::move(pattern), behavior, invert);
  }
  if (type == "ByteLevel") {
    ASSIGN_OR_RETURN(const bool prefix, GetBool(j, path, "add_prefix_space", true));
    ASSIGN_OR_RETURN(const bool use_regex, GetBool(j, path, "use_regex", true));
    std::unique_ptr<Regex> gpt2;
    if (use_regex) {
      ASSIGN_OR_RETURN(gpt2, Regex::Compile(kGpt2Pattern));
    }
    if (final_position) *byte_level_last = true;
    return std::make_unique<ByteLevelPre>(prefix, std::move(gpt2), !final_position);
  }
  if (type == "Whitespace") {
    ASSIGN_OR_RETURN(auto re, Regex::Compile("\\w+|[^\\w\\s]+"));
    return std::make_unique<SplitPre>(std::move(re), Behavior::kRemoved, /*invert=*/true);
  }
  if (type == "WhitespaceSplit") return MakeCharSplit(unicode::IsWhiteSpace, Behavior::kRemoved);
  if (type == "CharDelimiterSplit") {
    ASSIGN_OR_RETURN(const std::string d, GetString(j, path, "delimiter", ""));
    int len = 0;
    const char32_t cp = d.empty() ? 0 : unicode::DecodeAt(d, 0, &len);
    if (d.empty() || static_cast<size_t>(len) != d.size()) {
      return JsonError(path + ".delimiter", "expected one character");
    }
    return MakeCharSplit([cp](char32_t c) { return c == cp; }, Behavior::kRemoved);
  }
  if (type == "Punctuation") {
    ASSIGN_OR_RETURN(const Behavior behavior, ParseBehavior(j, path, Behavior::kIsolated));
    return MakeCharSplit(unicode::IsPunctuation, behavior);
  }
  if (type == "BertPreTokenizer") {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    steps.push_back(MakeCharSplit(unicode::IsWhiteSpace, Behavior::kRemoved));
    steps.push_back(MakeCharSplit(unicode::IsPunctuation, Behavior::kIsolated));
    return std::make_unique<SequencePre>(std::move(steps));
  }
  if (type == "Digits") {
    ASSIGN_OR_RETURN(const bool individual, GetBool(j, path, "individual_digits", false));
    return MakeCharSplit(unicode::IsNumeric,
                         individual ? Behavior::kIsolated : Behavior::kContiguous);
  }
  if (type == "Metaspace") {
    ASSIGN_OR_RETURN(const std::string replacement, GetString(j, path, "replacement", "\u2581"));
    int len = 0;
    if (!replacement.empty()) unicode::DecodeAt(replacement, 0, &len);
    if (replacement.empty() || static_cast<size_t>(len) != replacement.size()) {
      return JsonError(path + ".replacement", "expected one character");
    }
    // Files written before prepend_scheme existed say add_prefix_space instead.
    ASSIGN_OR_RETURN(const bool legacy_prefix, GetBool(j, path, "add_prefix_space", true));
    ASSIGN_OR_RETURN(const std::string scheme,
                     GetString(j, path, "prepend_scheme", legacy_prefix ? "always" : "never"));
    Prepend prepend;
    if (scheme == "always") {
      prepend = Prepend::kAlways;
    } else if (scheme == "first") {
      prepend = Prepend::kFirst;
    } else if (scheme == "never") {
      prepend = Prepend::kNever;
    } else {
      return JsonError(path + ".prepend_scheme", "expected \"always\", \"first\" or \"never\"");
    }
    ASSIGN_OR_RETURN(const bool split, GetBool(j, path, "split", true));
    return std::make_unique<MetaspacePre>(replacement, prepend, split);
  }
  return JsonError(path + ".type",
                   absl::StrCat("unsupported pre-tokenizer \"", type,
                                "\" (supported: Sequence, Split, ByteLevel, Whitespace, "
                                "WhitespaceSplit, Metaspace, Digits, Punctuation, "
                                "BertPreTokenizer, CharDelimiterSplit)"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> BuildPreTokenizer(const Json& j,
                                                                const std::string& path,
                                                                bool* byte_level_last) {
  *byte_level_last = false;
  return Build(j, path, /*final_position=*/true, byte_level_last);
}

}  // namespace mt::data::hf

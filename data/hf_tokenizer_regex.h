// data/hf_tokenizer_regex.h: tokenizer.json regexes (Oniguruma syntax) run by PCRE2.
//
// Hugging Face's Rust tokenizers compile `{"Regex": ...}` patterns with Oniguruma (Ruby
// syntax). We translate the few places where Oniguruma and PCRE2 disagree, then compile with
// PCRE2 in UTF + UCP mode with JIT:
//   \s \S          Unicode White_Space (PCRE2's UCP \s differs on U+0085 and friends)
//   \d \D          \p{Nd}
//   \w \W          UTS #18 word characters (Alphabetic, Mark, Nd, Pc, Join_Control)
//   \h \H          hex digits (in PCRE2 \h is horizontal space)
//   \uHHHH         \x{HHHH};  \p{Word} as \w
//   X{n,m}+        Ruby reads "{n,m}" then "+" (one or more), PCRE2 a possessive interval
//   X{n}?          Ruby: X{n} made optional, PCRE2: lazy (a no-op)
//   {,m}           {0,m}
//   (?m)           Ruby's dot-all is PCRE2's (?s)
//   ^ $            line anchors in Ruby: compiled with PCRE2_MULTILINE
// Class intersections (&&) and nested classes have no PCRE2 10.42 equivalent: an error.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace mt::data::hf {

// The PCRE2 spelling of an Oniguruma pattern, or an error saying what is unsupported.
absl::StatusOr<std::string> TranslateOnigRegex(std::string_view pattern);

// A compiled pattern; const methods are thread-safe (match state is per thread).
class Regex {
 public:
  // `pattern` in Oniguruma syntax (translated) or, with literal = true, a plain string.
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(std::string_view pattern,
                                                        bool literal = false);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends the byte ranges [begin, end) of successive non-overlapping matches in valid
  // UTF-8 `text`, with Oniguruma's find_iter rule for empty matches: an empty match right
  // where the previous match ended is skipped by one character.
  void FindAll(std::string_view text, std::vector<std::pair<uint32_t, uint32_t>>* matches) const;
  // Every match replaced by `replacement` (taken literally).
  std::string ReplaceAll(std::string_view text, std::string_view replacement) const;
  const std::string& pcre2_pattern() const { return pcre2_pattern_; }

 private:
  Regex() = default;
  // The first match at or after `start`; false when there is none.
  bool Match(std::string_view text, size_t start, size_t* begin, size_t* end) const;

  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;      // JIT-compiled: matched through pcre2_jit_match
  std::string pcre2_pattern_;
  std::string literal_;  // non-empty: a plain-string pattern, matched without PCRE2
};

}  // namespace mt::data::hf

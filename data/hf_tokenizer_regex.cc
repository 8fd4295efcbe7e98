// data/hf_tokenizer_regex.cc: Oniguruma -> PCRE2 translation and the JIT-compiled matcher.
#include "data/hf_tokenizer_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cctype>

#include "absl/strings/str_cat.h"
#include "data/unicode_text.h"
#include "kernels/status.h"

namespace mt::data::hf {
namespace {

constexpr char kWordInClass[] = "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}";

absl::Status Unsupported(std::string_view pattern, size_t at, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("regex \"", std::string(pattern), "\" at offset ",
                                                 at, ": ", std::string(what), " is not supported"));
}

bool IsHex(char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; }

// Translates the escape at pattern[i] (a backslash); `in_class` for inside [...]. Appends
// the PCRE2 text to *out and returns the index after the escape.
absl::StatusOr<size_t> TranslateEscape(std::string_view p, size_t i, bool in_class,
                                       std::string* out) {
  if (i + 1 >= p.size()) return Unsupported(p, i, "a trailing backslash");
  const char c = p[i + 1];
  auto word = [&](bool negated) -> absl::StatusOr<size_t> {
    if (in_class && negated) return Unsupported(p, i, "a negated word class inside [...]");
    if (in_class) {
      out->append(kWordInClass);
    } else {
      absl::StrAppend(out, negated ? "[^" : "[", kWordInClass, "]");
    }
    return i + 2;
  };
  switch (c) {
    case 's':
      out->append("\\p{White_Space}");
      return i + 2;
    case 'S':
      out->append("\\P{White_Space}");
      return i + 2;
    case 'd':
      out->append("\\p{Nd}");
      return i + 2;
    case 'D':
      out->append("\\P{Nd}");
      return i + 2;
    case 'w':
      return word(false);
    case 'W':
      return word(true);
    case 'h':
      out->append(in_class ? "0-9A-Fa-f" : "[0-9A-Fa-f]");
      return i + 2;
    case 'H':
      if (in_class) return Unsupported(p, i, "\\H inside [...]");
      out->append("[^0-9A-Fa-f]");
      return i + 2;
    case 'u':
      if (i + 5 < p.size() && IsHex(p[i + 2]) && IsHex(p[i + 3]) && IsHex(p[i + 4]) &&
          IsHex(p[i + 5])) {
        absl::StrAppend(out, "\\x{", std::string(p.substr(i + 2, 4)), "}");
        return i + 6;
      }
      return Unsupported(p, i, "\\u without four hex digits");
    case 'p':
    case 'P': {
      const std::string_view rest = p.substr(i + 2);
      const bool caret = rest.substr(0, 7) == "{^Word}";
      if (!caret && rest.substr(0, 6) != "{Word}") break;
      RETURN_IF_ERROR(word((c == 'P') != caret).status());
      return i + 2 + (caret ? 7 : 6);
    }
    default:
      break;
  }
  // Braced escapes (\x{263a}, \p{L}, \P{^N}, \o{17}, \k{name}) are copied whole.
  if (std::string_view("xpPoNgk").find(c) != std::string_view::npos && i + 2 < p.size() &&
      p[i + 2] == '{') {
    const size_t close = p.find('}', i + 3);
    if (close == std::string_view::npos) return Unsupported(p, i, "an unterminated \\x{/\\p{");
    out->append(p.substr(i, close + 1 - i));
    return close + 1;
  }
  // Everything else (\n, \t, \A, \z, \b, \x41, escaped punctuation, ...) means the same in
  // both; copy the backslash and the whole next character.
  const int len = unicode::Utf8Length(static_cast<unsigned char>(c));
  out->append(p.substr(i, 1 + len));
  return i + 1 + len;
}

}  // namespace

absl::StatusOr<std::string> TranslateOnigRegex(std::string_view p) {
  std::string out;
  out.reserve(p.size() * 2);
  size_t atom_start = std::string::npos;  // where the last complete atom begins in `out`
  std::vector<size_t> groups;             // `out` offsets of the open groups
  for (size_t i = 0; i < p.size();) {
    const char c = p[i];
    if (c == '\\') {
      const size_t start = out.size();
      ASSIGN_OR_RETURN(i, TranslateEscape(p, i, /*in_class=*/false, &out));
      atom_start = start;
      continue;
    }
    if (c == '[') {
      const size_t start = out.size();
      out.push_back('[');
      size_t j = i + 1;
      if (j < p.size() && p[j] == '^') out.push_back(p[j++]);
      if (j < p.size() && p[j] == ']') {
        out.append("\\]");
        ++j;
      }
      bool closed = false;
      while (j < p.size()) {
        const char d = p[j];
        if (d == ']') {
          out.push_back(']');
          ++j;
          closed = true;
          break;
        }
        if (d == '\\') {
          ASSIGN_OR_RETURN(j, TranslateEscape(p, j, /*in_class=*/true, &out));
          continue;
        }
        if (d == '[') {
          if (j + 1 < p.size() && p[j + 1] == ':') {  // POSIX [:alpha:], same in PCRE2
            const size_t end = p.find(":]", j + 2);
            if (end == std::string_view::npos) return Unsupported(p, j, "an unclosed [:");
            out.append(p.substr(j, end + 2 - j));
            j = end + 2;
            continue;
          }
          return Unsupported(p, j, "a nested character class");
        }
        if (d == '&' && j + 1 < p.size() && p[j + 1] == '&') {
          return Unsupported(p, j, "a character-class intersection (&&)");
        }
        const int len = unicode::Utf8Length(static_cast<unsigned char>(d));
        out.append(p.substr(j, len));
        j += len;
      }
      if (!closed) return Unsupported(p, i, "an unterminated character class");
      atom_start = start;
      i = j;
      continue;
    }
    if (c == '(') {
      groups.push_back(out.size());
      out.push_back('(');
      ++i;
      if (i < p.size() && p[i] == '?') {
        // Inline options: Ruby's m (dot matches newline) is PCRE2's s.
        size_t j = i + 1;
        while (j < p.size() && (p[j] == 'i' || p[j] == 'm' || p[j] == 'x' || p[j] == '-')) ++j;
        if (j > i + 1 && j < p.size() && (p[j] == ')' || p[j] == ':')) {
          out.push_back('?');
          for (size_t k = i + 1; k < j; ++k) out.push_back(p[k] == 'm' ? 's' : p[k]);
          i = j;
        }
      }
      atom_start = std::string::npos;
      continue;
    }
    if (c == ')') {
      out.push_back(')');
      ++i;
      atom_start = groups.empty() ? std::string::npos : groups.back();
      if (!groups.empty()) groups.pop_back();
      continue;
    }
    if (c == '|') {
      out.push_back('|');
      ++i;
      atom_start = std::string::npos;
      continue;
    }
    if (c == '{') {
      // An interval {n}, {n,}, {n,m} or {,m}; anything else is a literal brace.
      size_t j = i + 1;
      std::string lo, hi;
      bool comma = false;
      while (j < p.size() && std::isdigit(static_cast<unsigned char>(p[j]))) lo += p[j++];
      if (j < p.size() && p[j] == ',') {
        comma = true;
        ++j;
        while (j < p.size() && std::isdigit(static_cast<unsigned char>(p[j]))) hi += p[j++];
      }
      const bool interval = j < p.size() && p[j] == '}' && (!lo.empty() || !hi.empty()) &&
                            atom_start != std::string::npos;
      if (!interval) {
        out.append("\\{");
        ++i;
        continue;
      }
      ++j;
      const std::string body = absl::StrCat("{", lo.empty() ? "0" : lo, comma ? "," : "", hi, "}");
      const char next = j < p.size() ? p[j] : '\0';
      if (next == '+' || (next == '?' && !comma)) {
        // Ruby: a repeat of the interval (or an optional fixed count), not possessive/lazy.
        const std::string atom = out.substr(atom_start);
        out.resize(atom_start);
        absl::StrAppend(&out, "(?:", atom, body, ")", std::string(1, next));
        ++j;
      } else {
        out.append(body);
      }
      i = j;
      continue;
    }
    if (c == '*' || c == '+' || c == '?') {
      out.push_back(c);
      ++i;
      continue;
    }
    const int len = unicode::Utf8Length(static_cast<unsigned char>(c));
    atom_start = out.size();
    out.append(p.substr(i, len));
    i += len;
  }
  return out;
}

namespace {

// Per-thread match state: PCRE2 match data and a JIT stack that may grow to 64 MiB (long
// runs of spaces under \s+(?!\S) backtrack once per character).
struct ThreadMatchState {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(64 * 1024, 64 * 1024 * 1024, nullptr);
  ThreadMatchState() {
    MT_CHECK(data != nullptr && context != nullptr && stack != nullptr, "PCRE2 out of memory");
    pcre2_jit_stack_assign(context, nullptr, stack);
    pcre2_set_heap_limit(context, 1u << 22);  // KiB: the interpreter's fallback, 4 GiB
  }
  ~ThreadMatchState() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};

ThreadMatchState& MatchState() {
  thread_local ThreadMatchState state;
  return state;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Regex>> Regex::Compile(std::string_view pattern, bool literal) {
  std::unique_ptr<Regex> re(new Regex());
  if (literal) {
    if (pattern.empty()) return absl::InvalidArgumentError("an empty String pattern");
    re->literal_ = std::string(pattern);
    return re;
  }
  ASSIGN_OR_RETURN(re->pcre2_pattern_, TranslateOnigRegex(pattern));
  pcre2_compile_context* cc = pcre2_compile_context_create(nullptr);
  pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(re->pcre2_pattern_.data()),
                                   re->pcre2_pattern_.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &error, &offset, cc);
  pcre2_compile_context_free(cc);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return absl::InvalidArgumentError(
        absl::StrCat("regex \"", std::string(pattern), "\" (PCRE2 \"", re->pcre2_pattern_,
                     "\"): ", reinterpret_cast<const char*>(message), " at offset ", offset));
  }
  re->code_ = code;
  // Without JIT (an unusual build) matching still works through the interpreter.
  re->jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return re;
}

Regex::~Regex() {
  if (code_ != nullptr) pcre2_code_free(static_cast<pcre2_code*>(code_));
}

bool Regex::Match(std::string_view text, size_t start, size_t* begin, size_t* end) const {
  if (!literal_.empty()) {
    const size_t at = text.find(literal_, start);
    if (at == std::string_view::npos) return false;
    *begin = at;
    *end = at + literal_.size();
    return true;
  }
  ThreadMatchState& state = MatchState();
  const auto* code = static_cast<const pcre2_code*>(code_);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  // pcre2_jit_match skips pcre2_match's per-call checks (our input is valid UTF-8).
  int rc = jit_ ? pcre2_jit_match(code, subject, text.size(), start, 0, state.data, state.context)
                : pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, state.data,
                              state.context);
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
    // Pathological backtracking past the JIT stack: the interpreter keeps its frames on the
    // heap and gives the same answer.
    rc = pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                     state.data, state.context);
  }
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  MT_CHECK(rc >= 0, "PCRE2 match of \"", pcre2_pattern_, "\" failed with error ", rc, " on a ",
           text.size(), "-byte text");
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(state.data);
  *begin = ovector[0];
  *end = ovector[1];
  return true;
}

void Regex::FindAll(std::string_view text,
                    std::vector<std::pair<uint32_t, uint32_t>>* matches) const {
  size_t pos = 0;
  size_t last_match_end = std::string_view::npos;
  while (pos <= text.size()) {
    size_t b, e;
    if (!Match(text, pos, &b, &e)) return;
    if (b == e && e == last_match_end) {
      // Oniguruma's find_iter: no empty match right after the previous match.
      if (pos >= text.size()) return;
      pos += unicode::Utf8Length(static_cast<unsigned char>(text[pos]));
      continue;
    }
    matches->emplace_back(static_cast<uint32_t>(b), static_cast<uint32_t>(e));
    last_match_end = e;
    pos = e;
  }
}

std::string Regex::ReplaceAll(std::string_view text, std::string_view replacement) const {
  std::vector<std::pair<uint32_t, uint32_t>> matches;
  FindAll(text, &matches);
  std::string out;
  out.reserve(text.size());
  size_t prev = 0;
  for (const auto& [b, e] : matches) {
    out.append(text.substr(prev, b - prev));
    out.append(replacement);
    prev = e;
  }
  out.append(text.substr(prev));
  return out;
}

}  // namespace mt::data::hf

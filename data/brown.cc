// data/brown.cc: tag stripping and detokenisation of Brown corpus files.
#include "data/brown.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <memory>

#include "absl/strings/str_cat.h"

namespace mt::data {
namespace {

// How a token joins its neighbours.
enum class Join {
  kWord,   // spaces on both sides
  kLeft,   // attaches to the previous token: , . ) n't
  kRight,  // the next token attaches to it: ( "opening
  kBoth,   // attaches on both sides: the dash in "word--word"
};

bool IsCloser(std::string_view w) {
  static constexpr std::array<std::string_view, 10> kPunct = {",", ".", ";", ":", "!",
                                                              "?", ")", "]", "}", "%"};
  for (std::string_view p : kPunct) {
    if (w == p) return true;
  }
  // Split-off clitics, as other Penn-style corpora have them (Brown keeps them attached).
  static constexpr std::array<std::string_view, 7> kClitics = {"n't", "'s", "'re", "'ve",
                                                               "'ll", "'d", "'m"};
  for (std::string_view c : kClitics) {
    if (w.size() == c.size() && std::equal(w.begin(), w.end(), c.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) == b;
        })) {
      return true;
    }
  }
  return false;
}

// Detokenises one paragraph's words into `out`.
class ParagraphWriter {
 public:
  explicit ParagraphWriter(std::string* out) : out_(out), start_(out->size()) {}

  void Add(std::string_view word) {
    std::string_view text = word;
    Join join = Join::kWord;
    if (word == "``") {
      text = "\"";
      join = Join::kRight;
    } else if (word == "''") {
      text = "\"";
      join = Join::kLeft;
    } else if (word == "`") {
      text = "'";
      join = Join::kRight;
    } else if (word == "'") {
      // Brown marks single quotes with the same token on both sides: alternate.
      join = single_open_ ? Join::kLeft : Join::kRight;
      single_open_ = !single_open_;
    } else if (word == "(" || word == "[" || word == "{") {
      join = Join::kRight;
    } else if (word == "--") {
      join = Join::kBoth;
    } else if (IsCloser(word)) {
      join = Join::kLeft;
    }
    const bool first = out_->size() == start_;
    if (!first && !glue_next_ && join != Join::kLeft && join != Join::kBoth) out_->push_back(' ');
    out_->append(text);
    glue_next_ = join == Join::kRight || join == Join::kBoth;
  }

 private:
  std::string* out_;
  size_t start_;
  bool glue_next_ = false;
  bool single_open_ = false;
};

// Debian's Abseil has its own string_view class, so its splitters do not take ours.
std::string_view Strip(std::string_view s) {
  const size_t b = s.find_first_not_of(" \t\r\n\f\v");
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(" \t\r\n\f\v") - b + 1);
}

}  // namespace

absl::StatusOr<std::string> BrownToText(std::string_view tagged, std::string_view file) {
  std::string out;
  std::unique_ptr<ParagraphWriter> paragraph;
  int line_number = 0;
  size_t line_begin = 0;
  while (line_begin <= tagged.size()) {
    size_t line_end = tagged.find('\n', line_begin);
    if (line_end == std::string_view::npos) line_end = tagged.size();
    std::string_view line = Strip(tagged.substr(line_begin, line_end - line_begin));
    line_begin = line_end + 1;
    ++line_number;
    if (line.empty()) {
      paragraph.reset();
      continue;
    }
    if (paragraph == nullptr) {
      if (!out.empty()) out.push_back('\n');
      paragraph = std::make_unique<ParagraphWriter>(&out);
    }
    while (!line.empty()) {
      const size_t token_end = std::min(line.find_first_of(" \t"), line.size());
      const std::string_view token = line.substr(0, token_end);
      line = Strip(line.substr(token_end));
      const size_t slash = token.rfind('/');
      if (slash == std::string_view::npos || slash == 0 || slash + 1 == token.size()) {
        return absl::InvalidArgumentError(absl::StrCat(std::string(file), ":", line_number,
                                                       ": token \"", std::string(token),
                                                       "\" is not word/tag (not a tagged Brown "
                                                       "corpus file?)"));
      }
      paragraph->Add(token.substr(0, slash));
    }
  }
  return out;
}

}  // namespace mt::data

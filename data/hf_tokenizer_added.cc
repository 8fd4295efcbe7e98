// data/hf_tokenizer_added.cc: the added-token trie and Hugging Face's matching rules.
#include "data/hf_tokenizer_added.h"

#include <algorithm>
#include <cstring>

#include "data/unicode_text.h"

namespace mt::data::hf {
namespace {

// The character ending at text[end) / starting at text[begin] of valid UTF-8.
char32_t LastChar(std::string_view text, size_t end) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  int len;
  return unicode::DecodeAt(text, start, &len);
}

// Where the run of whitespace that ends at `end` begins (Rust's \s*$ on text[..end]).
size_t WhitespaceRunStart(std::string_view text, size_t end) {
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
    int len;
    if (!unicode::IsWhiteSpace(unicode::DecodeAt(text, start, &len))) break;
    end = start;
  }
  return end;
}

// Where the run of whitespace that starts at `begin` ends (Rust's ^\s* on text[begin..]).
size_t WhitespaceRunEnd(std::string_view text, size_t begin) {
  while (begin < text.size()) {
    int len;
    if (!unicode::IsWhiteSpace(unicode::DecodeAt(text, begin, &len))) break;
    begin += len;
  }
  return begin;
}

}  // namespace

void AddedTokenMatcher::Build(const std::vector<AddedToken>* tokens,
                              const std::vector<std::string>& keys) {
  tokens_ = tokens;
  for (size_t t = 0; t < keys.size(); ++t) {
    const std::string& key = keys[t];
    if (key.empty()) continue;
    first_byte_[static_cast<unsigned char>(key[0])] = true;
    uint32_t node = 0;
    for (unsigned char c : key) {
      auto [it, inserted] = children_.try_emplace((static_cast<uint64_t>(node) << 8) | c, nodes_);
      if (inserted) {
        ++nodes_;
        terminal_.push_back(-1);
      }
      node = it->second;
    }
    // Two tokens with the same text: the later one wins, as a later map insertion does.
    terminal_[node] = static_cast<int32_t>(t);
  }
  int distinct = 0;
  for (int b = 0; b < 256; ++b) {
    if (first_byte_[b]) {
      ++distinct;
      single_first_byte_ = b;
    }
  }
  if (distinct != 1) single_first_byte_ = -1;
}

int32_t AddedTokenMatcher::Longest(std::string_view text, size_t pos, size_t* length) const {
  int32_t best = -1;
  uint32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    auto it =
        children_.find((static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(text[i]));
    if (it == children_.end()) break;
    node = it->second;
    if (terminal_[node] >= 0) {
      best = terminal_[node];
      *length = i + 1 - pos;
    }
  }
  return best;
}

void AddedTokenMatcher::Split(std::string_view text, std::vector<Segment>* out) const {
  out->clear();
  if (text.empty()) return;
  size_t start_offset = 0;                   // end of the previous accepted match
  size_t i = nodes_ == 1 ? text.size() : 0;  // no tokens: one plain run
  while (i < text.size()) {
    if (single_first_byte_ >= 0) {
      // Every token starts with the same byte ('<' in most vocabularies): memchr to it.
      const void* hit = std::memchr(text.data() + i, single_first_byte_, text.size() - i);
      if (hit == nullptr) break;
      i = static_cast<const char*>(hit) - text.data();
    } else if (!first_byte_[static_cast<unsigned char>(text[i])]) {
      ++i;
      continue;
    }
    size_t length = 0;
    const int32_t t = Longest(text, i, &length);
    if (t < 0) {
      ++i;
      continue;
    }
    size_t start = i, stop = i + length;
    i = stop;  // the automaton resumes after a match even when it is then discarded
    const AddedToken& token = (*tokens_)[t];
    if (token.single_word) {
      const bool space_before = start == 0 || !unicode::IsWordChar(LastChar(text, start));
      int len;
      const bool space_after =
          stop == text.size() || !unicode::IsWordChar(unicode::DecodeAt(text, stop, &len));
      if (!space_before || !space_after) continue;
    }
    // The previous match may have swallowed these spaces already.
    if (token.lstrip) start = std::max(WhitespaceRunStart(text, start), start_offset);
    if (token.rstrip) {
      stop = WhitespaceRunEnd(text, stop);
      i = stop;
    }
    if (start_offset < start) {
      out->push_back({-1, static_cast<uint32_t>(start_offset), static_cast<uint32_t>(start)});
    }
    out->push_back({t, static_cast<uint32_t>(start), static_cast<uint32_t>(stop)});
    start_offset = stop;
  }
  if (start_offset < text.size()) {
    out->push_back({-1, static_cast<uint32_t>(start_offset), static_cast<uint32_t>(text.size())});
  }
}

}  // namespace mt::data::hf

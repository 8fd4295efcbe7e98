// data/hf_tokenizer_added.h: finding added and special tokens in text before pre-tokenization.
//
// Hugging Face matches added tokens leftmost-longest (Aho-Corasick) and then applies each
// token's options: single_word drops a match touching a word character on either side,
// lstrip/rstrip swallow the whitespace to its left/right. A byte trie gives the same
// matches; its first-byte table lets text without any token's first byte pass at memory speed.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace mt::data::hf {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

// A run of text: token >= 0 is an index into the matcher's token list, -1 plain text.
struct Segment {
  int32_t token;
  uint32_t begin, end;
};

class AddedTokenMatcher {
 public:
  // `keys[i]` is the text to find for tokens[i] (its content, or its normalized content);
  // tokens with an empty key are never matched. `tokens` must outlive the matcher.
  void Build(const std::vector<AddedToken>* tokens, const std::vector<std::string>& keys);
  bool empty() const { return nodes_ == 1; }
  // Cuts `text` into plain runs and token matches covering it, in order (Rust's
  // AddedVocabulary::find_matches). Empty text gives no segments.
  void Split(std::string_view text, std::vector<Segment>* out) const;

 private:
  // The index of the longest key starting at text[pos] and its length, or -1.
  int32_t Longest(std::string_view text, size_t pos, size_t* length) const;

  const std::vector<AddedToken>* tokens_ = nullptr;
  absl::flat_hash_map<uint64_t, uint32_t> children_;  // (node << 8 | byte) -> child node
  std::vector<int32_t> terminal_{-1};                 // node -> token index ending here
  uint32_t nodes_ = 1;                                // node 0 is the root
  std::array<bool, 256> first_byte_{};
  int single_first_byte_ = -1;  // the only first byte of all keys, or -1
};

}  // namespace mt::data::hf

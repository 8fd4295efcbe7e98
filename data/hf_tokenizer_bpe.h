// data/hf_tokenizer_bpe.h: the BPE model of a tokenizer.json, with a shared piece cache.
//
// Merges run in id space as in Hugging Face's Rust BPE: a min-heap of (rank, position)
// candidates over a linked list of symbols, lowest rank first and leftmost among equals,
// stale candidates skipped. Characters missing from the vocabulary become <0xXX> byte tokens
// (byte_fallback), else the unk token (runs fused with fuse_unk), else are dropped. When the
// pre-tokenizer ends with ByteLevel the model is fed raw bytes and applies GPT-2's
// byte-to-character map itself, so cache keys are the raw pieces.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "data/hf_tokenizer_internal.h"

namespace mt::data::hf {

// Pre-token piece -> ids. Two levels: a small per-thread table consulted without any lock,
// then a table shared by all threads (64 shards, each behind a reader/writer lock). Tables
// are cleared when full: the cache only ever saves work, never changes a result.
class PieceCache {
 public:
  static constexpr size_t kMaxKeyBytes = 256;  // longer pieces are rare; not cached
  PieceCache();
  // Appends the cached ids of `key` to *ids; false on a miss.
  bool Lookup(std::string_view key, std::vector<int32_t>* ids) const;
  void Insert(std::string_view key, const int32_t* ids, size_t n);

  // ids of one piece: one id inline (most pieces are one token), more in `pool`.
  struct Entry {
    uint32_t first;  // the id when n == 1, else the offset into the pool
    uint32_t n;
  };
  // One table: piece -> Entry, plus the pool of multi-token entries.
  struct Table {
    absl::flat_hash_map<std::string, Entry> index;
    std::vector<int32_t> pool;  // [total ids of multi-token entries]
    bool Find(std::string_view key, std::vector<int32_t>* ids) const;
    void Put(std::string_view key, const int32_t* ids, size_t n, size_t max_entries);
  };

 private:
  static constexpr size_t kShards = 64;
  static constexpr size_t kMaxEntriesPerShard = 8192;  // 512k pieces in all
  static constexpr size_t kMaxLocalEntries = 65536;
  struct alignas(64) Shard {
    mutable std::shared_mutex mu;
    Table table;
  };
  const uint64_t uid_;  // tells this cache's per-thread table from another instance's
  std::array<Shard, kShards> shards_;
};

class BpeModel {
 public:
  // `model` is tokenizer.json's "model" object (type BPE), at JSON path `path`.
  static absl::StatusOr<std::unique_ptr<BpeModel>> Build(const Json& model, const std::string& path,
                                                         bool byte_level_input);
  // Appends the ids of one pre-token piece. Thread-safe.
  void Encode(std::string_view piece, std::vector<int32_t>* ids) const;
  int32_t TokenToId(std::string_view token) const;  // -1 when absent
  // id -> token string (the model's spelling; empty for ids it does not define).
  const std::vector<std::string>& vocab() const { return id_to_token_; }
  int32_t unk_id() const { return unk_id_; }

 private:
  struct Merge {
    uint32_t rank;
    int32_t new_id;
  };
  BpeModel() = default;
  // `word` is in the vocabulary's alphabet (byte-level characters when byte_level_).
  void EncodeWord(std::string_view word, std::vector<int32_t>* ids) const;
  // The initial symbols of `word` (characters, with prefix/suffix, fallback, unk).
  void InitialSymbols(std::string_view word, std::vector<int32_t>* symbols) const;
  void MergeAll(std::vector<int32_t>* symbols) const;
  const Merge* FindMerge(int32_t left, int32_t right) const {
    auto it = merges_.find((static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
                           static_cast<uint32_t>(right));
    return it == merges_.end() ? nullptr : &it->second;
  }

  absl::flat_hash_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  absl::flat_hash_map<uint64_t, Merge> merges_;  // (left id << 32 | right id) -> merge
  bool byte_level_ = false;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  int32_t unk_id_ = -1;
  std::string prefix_, suffix_;  // continuing_subword_prefix, end_of_word_suffix
  // Byte-level fast path: the symbol of each raw byte (-1 when its character is missing).
  std::array<int32_t, 256> byte_symbol_;
  bool byte_symbols_complete_ = false;
  std::array<int32_t, 256> fallback_id_;  // <0xXX> tokens, -1 when absent
  mutable PieceCache cache_;
};

}  // namespace mt::data::hf

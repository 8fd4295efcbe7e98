// data/hf_tokenizer_bpe.cc: BPE model loading, the merge loop and the piece cache.
#include "data/hf_tokenizer_bpe.h"

#include <algorithm>
#include <atomic>
#include <mutex>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "data/unicode_text.h"
#include "kernels/status.h"

namespace mt::data::hf {
namespace {

// Debian's Abseil has its own string_view: heterogeneous lookups need that type.
absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

struct Symbol {
  int32_t id;
  int32_t prev, next;  // neighbours in the list, -1 at the ends
  bool alive;
};

struct Candidate {
  uint32_t rank;
  uint32_t pos;  // the left symbol's index: original order, so smaller is further left
  int32_t new_id;
};
// std::push_heap builds a max-heap: "less" means lower priority.
bool LowerPriority(const Candidate& a, const Candidate& b) {
  return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
}

struct Scratch {
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
  std::vector<int32_t> ids;
};
Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

}  // namespace

bool PieceCache::Table::Find(std::string_view key, std::vector<int32_t>* ids) const {
  auto it = index.find(AbslView(key));
  if (it == index.end()) return false;
  const Entry e = it->second;
  if (e.n == 1) {
    ids->push_back(static_cast<int32_t>(e.first));
  } else {
    ids->insert(ids->end(), pool.begin() + e.first, pool.begin() + e.first + e.n);
  }
  return true;
}

void PieceCache::Table::Put(std::string_view key, const int32_t* ids, size_t n,
                            size_t max_entries) {
  if (index.size() >= max_entries) {
    index.clear();
    pool.clear();
  }
  Entry e{static_cast<uint32_t>(n == 1 ? ids[0] : pool.size()), static_cast<uint32_t>(n)};
  if (index.try_emplace(std::string(key), e).second && n != 1)
    pool.insert(pool.end(), ids, ids + n);
}

namespace {

std::atomic<uint64_t> next_cache_uid{1};

// The calling thread's first-level table, emptied when it last served another cache.
PieceCache::Table& LocalTable(uint64_t uid) {
  thread_local uint64_t owner = 0;
  thread_local PieceCache::Table table;
  if (owner != uid) {
    table.index.clear();
    table.pool.clear();
    owner = uid;
  }
  return table;
}

size_t ShardOf(std::string_view key, size_t shards) {
  return (absl::Hash<absl::string_view>{}(AbslView(key)) >> 7) % shards;
}

}  // namespace

PieceCache::PieceCache() : uid_(next_cache_uid.fetch_add(1)) {}

bool PieceCache::Lookup(std::string_view key, std::vector<int32_t>* ids) const {
  Table& local = LocalTable(uid_);
  if (local.Find(key, ids)) return true;
  const size_t first = ids->size();
  const Shard& shard = shards_[ShardOf(key, kShards)];
  {
    std::shared_lock lock(shard.mu);
    if (!shard.table.Find(key, ids)) return false;
  }
  local.Put(key, ids->data() + first, ids->size() - first, kMaxLocalEntries);
  return true;
}

void PieceCache::Insert(std::string_view key, const int32_t* ids, size_t n) {
  LocalTable(uid_).Put(key, ids, n, kMaxLocalEntries);
  Shard& shard = shards_[ShardOf(key, kShards)];
  std::unique_lock lock(shard.mu);
  shard.table.Put(key, ids, n, kMaxEntriesPerShard);
}

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::Build(const Json& j, const std::string& path,
                                                          bool byte_level_input) {
  std::unique_ptr<BpeModel> m(new BpeModel());
  m->byte_level_ = byte_level_input;
  if (j.contains("dropout") && !j["dropout"].is_null() &&
      !(j["dropout"].is_number() && j["dropout"].get<double>() == 0.0)) {
    return JsonError(path + ".dropout", "BPE dropout is random at encoding time; need null or 0");
  }
  ASSIGN_OR_RETURN(const std::string unk, GetString(j, path, "unk_token", ""));
  ASSIGN_OR_RETURN(m->byte_fallback_, GetBool(j, path, "byte_fallback", false));
  ASSIGN_OR_RETURN(m->fuse_unk_, GetBool(j, path, "fuse_unk", false));
  ASSIGN_OR_RETURN(m->ignore_merges_, GetBool(j, path, "ignore_merges", false));
  ASSIGN_OR_RETURN(m->prefix_, GetString(j, path, "continuing_subword_prefix", ""));
  ASSIGN_OR_RETURN(m->suffix_, GetString(j, path, "end_of_word_suffix", ""));

  if (!j.contains("vocab") || !j["vocab"].is_object()) {
    return JsonError(path + ".vocab", "expected an object of token -> id");
  }
  int64_t max_id = -1;
  m->vocab_.reserve(j["vocab"].size());
  for (const auto& [token, id] : j["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= (1LL << 31)) {
      return JsonError(absl::StrCat(path, ".vocab[\"", token, "\"]"), "expected an id >= 0");
    }
    m->vocab_[token] = static_cast<int32_t>(id.get<int64_t>());
    max_id = std::max(max_id, id.get<int64_t>());
  }
  m->id_to_token_.resize(max_id + 1);
  for (const auto& [token, id] : m->vocab_) m->id_to_token_[id] = token;
  if (!unk.empty()) {
    m->unk_id_ = m->TokenToId(unk);
    if (m->unk_id_ < 0) {
      return JsonError(path + ".unk_token", absl::StrCat("\"", unk, "\" is not in the vocab"));
    }
  }

  if (!j.contains("merges") || !j["merges"].is_array()) {
    return JsonError(path + ".merges", "expected an array of merges");
  }
  const Json& merges = j["merges"];
  m->merges_.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    const Json& mj = merges[r];
    const std::string mpath = absl::StrCat(path, ".merges[", r, "]");
    std::string a, b;
    if (mj.is_string()) {  // "a b": split at the first space, as the Rust reader does
      const std::string& s = mj.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos) return JsonError(mpath, "expected \"left right\"");
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (mj.is_array() && mj.size() == 2 && mj[0].is_string() && mj[1].is_string()) {
      a = mj[0].get<std::string>();
      b = mj[1].get<std::string>();
    } else {
      return JsonError(mpath, "expected \"left right\" or [\"left\", \"right\"]");
    }
    // With a continuing-subword prefix the right part carries it and the merge drops it.
    std::string merged = a;
    merged +=
        (!m->prefix_.empty() && b.rfind(m->prefix_, 0) == 0) ? b.substr(m->prefix_.size()) : b;
    const int32_t ia = m->TokenToId(a), ib = m->TokenToId(b), im = m->TokenToId(merged);
    if (ia < 0 || ib < 0 || im < 0) {
      return JsonError(mpath, absl::StrCat("merge \"", a, "\" + \"", b, "\": \"",
                                           ia < 0   ? a
                                           : ib < 0 ? b
                                                    : merged,
                                           "\" is not in the vocab"));
    }
    // A repeated pair keeps its last rank, as in both Hugging Face implementations.
    m->merges_[(static_cast<uint64_t>(ia) << 32) | static_cast<uint32_t>(ib)] =
        Merge{static_cast<uint32_t>(r), im};
  }

  m->byte_symbols_complete_ = true;
  for (int b = 0; b < 256; ++b) {
    m->byte_symbol_[b] = m->TokenToId(ByteToUnicode(static_cast<uint8_t>(b)));
    if (m->byte_symbol_[b] < 0) m->byte_symbols_complete_ = false;
    m->fallback_id_[b] = m->TokenToId(absl::StrFormat("<0x%02X>", b));
  }
  return m;
}

int32_t BpeModel::TokenToId(std::string_view token) const {
  auto it = vocab_.find(AbslView(token));
  return it == vocab_.end() ? -1 : it->second;
}

void BpeModel::Encode(std::string_view piece, std::vector<int32_t>* ids) const {
  if (piece.empty()) return;
  const bool cacheable = piece.size() < PieceCache::kMaxKeyBytes;
  if (cacheable && cache_.Lookup(piece, ids)) return;
  Scratch& scratch = ThreadScratch();
  const size_t first = ids->size();
  if (byte_level_ && byte_symbols_complete_ && prefix_.empty() && suffix_.empty() &&
      !ignore_merges_) {
    // Fast path: one symbol per raw byte, no string building.
    std::vector<int32_t>& symbols = scratch.ids;
    symbols.clear();
    for (unsigned char c : piece) symbols.push_back(byte_symbol_[c]);
    MergeAll(&symbols);
    ids->insert(ids->end(), symbols.begin(), symbols.end());
  } else if (byte_level_) {
    std::string word;
    word.reserve(piece.size() * 2);
    for (unsigned char c : piece) word += ByteToUnicode(c);
    EncodeWord(word, ids);
  } else {
    EncodeWord(piece, ids);
  }
  if (cacheable) cache_.Insert(piece, ids->data() + first, ids->size() - first);
}

void BpeModel::EncodeWord(std::string_view word, std::vector<int32_t>* ids) const {
  if (ignore_merges_) {
    const int32_t whole = TokenToId(word);
    if (whole >= 0) {
      ids->push_back(whole);
      return;
    }
  }
  std::vector<int32_t> symbols;
  InitialSymbols(word, &symbols);
  MergeAll(&symbols);
  ids->insert(ids->end(), symbols.begin(), symbols.end());
}

void BpeModel::InitialSymbols(std::string_view word, std::vector<int32_t>* symbols) const {
  int32_t pending_unk = -1;  // an unk not yet emitted (so a fused run stays one token)
  std::string s;
  for (size_t i = 0; i < word.size();) {
    const int len = unicode::Utf8Length(static_cast<unsigned char>(word[i]));
    const bool first = i == 0, last = i + len >= word.size();
    s.clear();
    if (!first) s += prefix_;
    s.append(word.substr(i, len));
    if (last) s += suffix_;
    i += len;
    const int32_t id = TokenToId(s);
    if (id >= 0) {
      if (pending_unk >= 0) symbols->push_back(pending_unk);
      pending_unk = -1;
      symbols->push_back(id);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char c : s) all = all && fallback_id_[c] >= 0;
      if (all) {
        // Rust emits the bytes without flushing a pending unk first; so do we.
        for (unsigned char c : s) symbols->push_back(fallback_id_[c]);
        continue;
      }
    }
    if (unk_id_ >= 0) {
      if (pending_unk >= 0 && !fuse_unk_) symbols->push_back(pending_unk);
      pending_unk = unk_id_;
    }
  }
  if (pending_unk >= 0) symbols->push_back(pending_unk);
}

void BpeModel::MergeAll(std::vector<int32_t>* ids) const {
  const size_t n = ids->size();
  if (n < 2) return;
  Scratch& scratch = ThreadScratch();
  std::vector<Symbol>& sym = scratch.symbols;
  std::vector<Candidate>& heap = scratch.heap;
  sym.resize(n);
  heap.clear();
  for (size_t i = 0; i < n; ++i) {
    sym[i] = Symbol{(*ids)[i], static_cast<int32_t>(i) - 1,
                    i + 1 < n ? static_cast<int32_t>(i + 1) : -1, true};
  }
  for (size_t i = 0; i + 1 < n; ++i) {
    if (const Merge* m = FindMerge(sym[i].id, sym[i + 1].id)) {
      heap.push_back({m->rank, static_cast<uint32_t>(i), m->new_id});
    }
  }
  std::make_heap(heap.begin(), heap.end(), LowerPriority);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), LowerPriority);
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = sym[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = sym[left.next];
    // Stale when either side changed since the candidate was queued.
    const Merge* now = FindMerge(left.id, right.id);
    if (now == nullptr || now->new_id != top.new_id) continue;
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) sym[right.next].prev = static_cast<int32_t>(top.pos);
    if (left.prev >= 0) {
      if (const Merge* m = FindMerge(sym[left.prev].id, left.id)) {
        heap.push_back({m->rank, static_cast<uint32_t>(left.prev), m->new_id});
        std::push_heap(heap.begin(), heap.end(), LowerPriority);
      }
    }
    if (left.next >= 0) {
      if (const Merge* m = FindMerge(left.id, sym[left.next].id)) {
        heap.push_back({m->rank, top.pos, m->new_id});
        std::push_heap(heap.begin(), heap.end(), LowerPriority);
      }
    }
  }
  ids->clear();
  for (int32_t i = 0; i >= 0; i = sym[i].next) ids->push_back(sym[i].id);
}

}  // namespace mt::data::hf

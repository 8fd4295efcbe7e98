// data/indexed_dataset.cc: dtype helpers and the validating mmap reader of .bin/.idx files.
#include "data/indexed_dataset.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "kernels/status.h"

namespace mt::data {
namespace {

template <typename T>
T LoadUnaligned(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

absl::Status ErrnoError(const std::string& path, const char* what) {
  return absl::NotFoundError(absl::StrCat(path, ": cannot ", what, ": ", std::strerror(errno)));
}

// Maps a whole file read-only. An empty file maps to {nullptr, 0}.
absl::Status MapFile(const std::string& path, const uint8_t** map, int64_t* size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(path, "open");
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    absl::Status s = ErrnoError(path, "stat");
    ::close(fd);
    return s;
  }
  *size = st.st_size;
  *map = nullptr;
  if (st.st_size > 0) {
    void* p = ::mmap(nullptr, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      absl::Status s = ErrnoError(path, "mmap");
      ::close(fd);
      return s;
    }
    *map = static_cast<const uint8_t*>(p);
  }
  ::close(fd);  // the mapping keeps the file alive
  return absl::OkStatus();
}

// One stored element widened to int64 (int64 files may hold ids beyond int32).
int64_t LoadToken(const uint8_t* p, TokenDType dtype) {
  switch (dtype) {
    case TokenDType::kUInt8:
      return *p;
    case TokenDType::kInt8:
      return static_cast<int8_t>(*p);
    case TokenDType::kInt16:
      return LoadUnaligned<int16_t>(p);
    case TokenDType::kUInt16:
      return LoadUnaligned<uint16_t>(p);
    case TokenDType::kInt32:
      return LoadUnaligned<int32_t>(p);
    case TokenDType::kInt64:
      return LoadUnaligned<int64_t>(p);
    default:
      return -1;
  }
}

uint64_t Mix64(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  h ^= h >> 31;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 29;
  return h;
}

}  // namespace

int64_t MaxTokenId(TokenDType dtype) {
  switch (dtype) {
    case TokenDType::kUInt8:
      return std::numeric_limits<uint8_t>::max();
    case TokenDType::kInt8:
      return std::numeric_limits<int8_t>::max();
    case TokenDType::kInt16:
      return std::numeric_limits<int16_t>::max();
    case TokenDType::kUInt16:
      return std::numeric_limits<uint16_t>::max();
    case TokenDType::kInt32:
      return std::numeric_limits<int32_t>::max();
    case TokenDType::kInt64:
      return std::numeric_limits<int64_t>::max();
    default:
      return -1;
  }
}

int64_t TokenDTypeSize(TokenDType dtype) {
  switch (dtype) {
    case TokenDType::kUInt8:
    case TokenDType::kInt8:
      return 1;
    case TokenDType::kInt16:
    case TokenDType::kUInt16:
      return 2;
    case TokenDType::kInt32:
    case TokenDType::kFloat32:
      return 4;
    case TokenDType::kInt64:
    case TokenDType::kFloat64:
      return 8;
  }
  return 0;
}

const char* TokenDTypeName(TokenDType dtype) {
  switch (dtype) {
    case TokenDType::kUInt8:
      return "uint8";
    case TokenDType::kInt8:
      return "int8";
    case TokenDType::kInt16:
      return "int16";
    case TokenDType::kInt32:
      return "int32";
    case TokenDType::kInt64:
      return "int64";
    case TokenDType::kFloat64:
      return "float64";
    case TokenDType::kFloat32:
      return "float32";
    case TokenDType::kUInt16:
      return "uint16";
  }
  return "unknown";
}

TokenDType OptimalTokenDType(int64_t vocab_size) {
  return vocab_size < 65500 ? TokenDType::kUInt16 : TokenDType::kInt32;
}

// ---- Reader ----

IndexedDataset::~IndexedDataset() {
  if (idx_map_ != nullptr) ::munmap(const_cast<uint8_t*>(idx_map_), idx_size_);
  if (bin_map_ != nullptr) ::munmap(const_cast<uint8_t*>(bin_map_), bin_size_);
}

absl::StatusOr<std::unique_ptr<IndexedDataset>> IndexedDataset::Open(const std::string& prefix) {
  std::unique_ptr<IndexedDataset> ds(new IndexedDataset());
  ds->prefix_ = prefix;
  RETURN_IF_ERROR(MapFile(ds->idx_path(), &ds->idx_map_, &ds->idx_size_));
  RETURN_IF_ERROR(MapFile(ds->bin_path(), &ds->bin_map_, &ds->bin_size_));
  RETURN_IF_ERROR(ds->Validate());
  ds->fingerprint_ = ds->ComputeFingerprint();
  return ds;
}

absl::Status IndexedDataset::Validate() {
  const std::string idx = idx_path(), bin = bin_path();
  auto bad = [&idx](auto&&... parts) {
    return absl::DataLossError(absl::StrCat(idx, ": ", parts...));
  };
  if (idx_size_ < kIndexHeaderBytes) {
    return bad("file is ", idx_size_, " bytes, shorter than the ", kIndexHeaderBytes,
               "-byte header");
  }
  if (std::memcmp(idx_map_, kIndexMagic, sizeof(kIndexMagic)) != 0) {
    return bad("bad magic \"",
               absl::CHexEscape(absl::string_view(reinterpret_cast<const char*>(idx_map_), 9)),
               "\", expected \"MMIDIDX\\000\\000\" (not a Megatron indexed dataset)");
  }
  const uint64_t version = LoadUnaligned<uint64_t>(idx_map_ + 9);
  if (version != kIndexVersion) {
    return bad("unsupported version ", version, ", expected ", kIndexVersion);
  }
  const uint8_t code = idx_map_[17];
  dtype_ = static_cast<TokenDType>(code);
  if (code < 1 || code > 8) return bad("unknown dtype code ", static_cast<int>(code));
  if (MaxTokenId(dtype_) <= 0) {
    return bad("dtype code ", static_cast<int>(code), " (", TokenDTypeName(dtype_),
               ") cannot hold token ids");
  }
  item_size_ = TokenDTypeSize(dtype_);
  const uint64_t s = LoadUnaligned<uint64_t>(idx_map_ + 18);
  const uint64_t d = LoadUnaligned<uint64_t>(idx_map_ + 26);
  // Bound the counts by the file size before any arithmetic that could overflow.
  const uint64_t body = idx_size_ - kIndexHeaderBytes;
  if (s > body / 12 || d > body / 8 || 12 * s + 8 * d > body) {
    return bad("header says ", s, " sequences and ", d, " document indices, which need ",
               static_cast<double>(kIndexHeaderBytes) + 12.0 * s + 8.0 * d,
               " bytes, but the file has ", idx_size_);
  }
  const uint64_t expected = kIndexHeaderBytes + 12 * s + 8 * d;
  // Multimodal datasets append one int8 mode per sequence; we accept and ignore them.
  if (idx_size_ != static_cast<int64_t>(expected) &&
      idx_size_ != static_cast<int64_t>(expected + s)) {
    return bad("file is ", idx_size_, " bytes, but ", s, " sequences and ", d,
               " document indices need ", expected);
  }
  num_sequences_ = s;
  num_document_indices_ = d;
  lengths_ = idx_map_ + kIndexHeaderBytes;
  pointers_ = lengths_ + 4 * s;
  doc_indices_ = pointers_ + 8 * s;

  int64_t pointer = 0;
  for (int64_t i = 0; i < num_sequences_; ++i) {
    const int32_t len = sequence_length(i);
    if (len < 0) return bad("sequence ", i, " has negative length ", len);
    const int64_t ptr = sequence_pointer(i);
    if (ptr != pointer) {
      return bad("sequence ", i, " pointer is byte ", ptr, ", expected ", pointer,
                 " (previous pointer + length x ", item_size_, ")");
    }
    pointer += static_cast<int64_t>(len) * item_size_;
  }
  if (bin_size_ != pointer) {
    return absl::DataLossError(absl::StrCat(
        bin, ": file is ", bin_size_, " bytes, but ", idx, " describes ", pointer / item_size_, " ",
        TokenDTypeName(dtype_), " tokens = ", pointer, " bytes",
        bin_size_ < pointer ? " (truncated .bin?)" : " (.idx does not match this .bin)"));
  }
  num_tokens_ = pointer / item_size_;

  if (num_document_indices_ < 1) return bad("document_count is 0; it must be at least 1");
  if (document_index(0) != 0) {
    return bad("document_indices[0] is ", document_index(0), ", expected 0");
  }
  for (int64_t k = 1; k < num_document_indices_; ++k) {
    if (document_index(k) < document_index(k - 1)) {
      return bad("document_indices[", k, "] = ", document_index(k), " is below document_indices[",
                 k - 1, "] = ", document_index(k - 1));
    }
  }
  if (document_index(num_document_indices_ - 1) != num_sequences_) {
    return bad("last document index is ", document_index(num_document_indices_ - 1),
               ", expected the sequence count ", num_sequences_);
  }
  return absl::OkStatus();
}

int32_t IndexedDataset::sequence_length(int64_t i) const {
  MT_CHECK(i >= 0 && i < num_sequences_, "sequence ", i, " of ", num_sequences_);
  return LoadUnaligned<int32_t>(lengths_ + 4 * i);
}

int64_t IndexedDataset::sequence_pointer(int64_t i) const {
  MT_CHECK(i >= 0 && i < num_sequences_, "sequence ", i, " of ", num_sequences_);
  return LoadUnaligned<int64_t>(pointers_ + 8 * i);
}

int64_t IndexedDataset::document_index(int64_t d) const {
  MT_CHECK(d >= 0 && d < num_document_indices_, "document index ", d, " of ",
           num_document_indices_);
  return LoadUnaligned<int64_t>(doc_indices_ + 8 * d);
}

void IndexedDataset::ReadTokens(int64_t first, int64_t count, int32_t* out) const {
  MT_CHECK(first >= 0 && count >= 0 && first + count <= num_tokens_, "tokens [", first, ", ",
           first + count, ") outside [0, ", num_tokens_, ") of ", bin_path());
  const uint8_t* p = bin_map_ + first * item_size_;
  switch (dtype_) {
    case TokenDType::kUInt16:
      for (int64_t i = 0; i < count; ++i) out[i] = LoadUnaligned<uint16_t>(p + 2 * i);
      break;
    case TokenDType::kInt32:
      std::memcpy(out, p, count * 4);
      break;
    default:
      for (int64_t i = 0; i < count; ++i) {
        out[i] = static_cast<int32_t>(LoadToken(p + i * item_size_, dtype_));
      }
  }
}

absl::Status IndexedDataset::CheckVocab(int64_t vocab_size) const {
  // Each block finds its first bad token; the earliest over all blocks is reported, so the
  // message does not depend on the thread count.
  constexpr int64_t kBlock = 1 << 20;
  const int64_t num_blocks = (num_tokens_ + kBlock - 1) / kBlock;
  int64_t first_bad = std::numeric_limits<int64_t>::max();
#pragma omp parallel for schedule(dynamic) reduction(min : first_bad)
  for (int64_t b = 0; b < num_blocks; ++b) {
    const int64_t end = std::min(num_tokens_, (b + 1) * kBlock);
    for (int64_t t = b * kBlock; t < end; ++t) {
      const int64_t id = LoadToken(bin_map_ + t * item_size_, dtype_);
      if (id < 0 || id >= vocab_size) {
        first_bad = std::min(first_bad, t);
        break;
      }
    }
  }
  if (first_bad == std::numeric_limits<int64_t>::max()) return absl::OkStatus();
  const int64_t id = LoadToken(bin_map_ + first_bad * item_size_, dtype_);
  return absl::OutOfRangeError(absl::StrCat(bin_path(), ": token id ", id, " at token offset ",
                                            first_bad, " is outside the vocabulary [0, ",
                                            vocab_size, ")"));
}

uint64_t IndexedDataset::ComputeFingerprint() const {
  uint64_t h = 0x6d6f657472616e31ULL;
  for (int64_t i = 0; i < kIndexHeaderBytes; ++i) h = Mix64(h, idx_map_[i]);
  // The lengths and document boundaries in full (they are small beside the tokens).
  for (int64_t i = 0; i < num_sequences_; ++i)
    h = Mix64(h, LoadUnaligned<uint32_t>(lengths_ + 4 * i));
  for (int64_t i = 0; i < num_document_indices_; ++i) h = Mix64(h, document_index(i));
  // Tokens: the first and last 256 and 256 spread evenly between.
  auto token = [&](int64_t t) {
    return static_cast<uint64_t>(LoadToken(bin_map_ + t * item_size_, dtype_));
  };
  const int64_t edge = std::min<int64_t>(256, num_tokens_);
  for (int64_t t = 0; t < edge; ++t) h = Mix64(h, token(t));
  for (int64_t t = num_tokens_ - edge; t < num_tokens_; ++t) h = Mix64(h, token(t));
  for (int64_t k = 0; k < 256 && num_tokens_ > 0; ++k) h = Mix64(h, token(k * num_tokens_ / 256));
  return h;
}

}  // namespace mt::data

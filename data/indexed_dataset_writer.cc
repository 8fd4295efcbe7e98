// data/indexed_dataset_writer.cc: Megatron's IndexedDatasetBuilder, one sequence per document.
#include <cerrno>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "data/indexed_dataset.h"
#include "kernels/status.h"

namespace mt::data {
namespace {

absl::Status ErrnoError(const std::string& path, const char* what) {
  return absl::InternalError(absl::StrCat(path, ": cannot ", what, ": ", std::strerror(errno)));
}

}  // namespace

IndexedDatasetWriter::IndexedDatasetWriter(std::string prefix, TokenDType dtype, std::FILE* bin)
    : prefix_(std::move(prefix)), dtype_(dtype), bin_(bin), document_indices_{0} {}

IndexedDatasetWriter::~IndexedDatasetWriter() {
  if (bin_ != nullptr) {
    std::fclose(bin_);
    std::remove((prefix_ + ".bin.tmp").c_str());
  }
}

absl::StatusOr<std::unique_ptr<IndexedDatasetWriter>> IndexedDatasetWriter::Create(
    const std::string& prefix, TokenDType dtype) {
  if (MaxTokenId(dtype) <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix, ".bin: token dtype ", TokenDTypeName(dtype), " is not an integer type"));
  }
  std::string tmp = prefix + ".bin.tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return ErrnoError(tmp, "create");
  return std::unique_ptr<IndexedDatasetWriter>(new IndexedDatasetWriter(prefix, dtype, f));
}

absl::Status IndexedDatasetWriter::AddDocument(std::span<const int32_t> tokens) {
  MT_CHECK(!finalized_, "AddDocument after Finalize on ", prefix_);
  if (tokens.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError(absl::StrCat(prefix_, ".bin: document ", num_documents(),
                                                   " has ", tokens.size(),
                                                   " tokens, more than an int32 length holds"));
  }
  const int64_t item = TokenDTypeSize(dtype_);
  const int64_t max_id = MaxTokenId(dtype_);
  buffer_.resize(tokens.size() * item);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int64_t id = tokens[i];
    if (id < 0 || id > max_id) {
      return absl::InvalidArgumentError(absl::StrCat(prefix_, ".bin: token id ", id, " (document ",
                                                     num_documents(), ", position ", i,
                                                     ") does not fit ", TokenDTypeName(dtype_)));
    }
    char* dst = buffer_.data() + i * item;
    switch (dtype_) {
      case TokenDType::kUInt8:
        *reinterpret_cast<uint8_t*>(dst) = id;
        break;
      case TokenDType::kInt8:
        *reinterpret_cast<int8_t*>(dst) = id;
        break;
      case TokenDType::kInt16: {
        int16_t v = id;
        std::memcpy(dst, &v, 2);
        break;
      }
      case TokenDType::kUInt16: {
        uint16_t v = id;
        std::memcpy(dst, &v, 2);
        break;
      }
      case TokenDType::kInt32: {
        int32_t v = id;
        std::memcpy(dst, &v, 4);
        break;
      }
      case TokenDType::kInt64:
        std::memcpy(dst, &id, 8);
        break;
      default:
        break;
    }
  }
  if (!buffer_.empty() && std::fwrite(buffer_.data(), 1, buffer_.size(), bin_) != buffer_.size()) {
    return ErrnoError(prefix_ + ".bin.tmp", "write");
  }
  sequence_lengths_.push_back(static_cast<int32_t>(tokens.size()));
  document_indices_.push_back(static_cast<int64_t>(sequence_lengths_.size()));
  num_tokens_ += static_cast<int64_t>(tokens.size());
  return absl::OkStatus();
}

absl::Status IndexedDatasetWriter::Finalize() {
  MT_CHECK(!finalized_, "Finalize twice on ", prefix_);
  finalized_ = true;
  const std::string bin_tmp = prefix_ + ".bin.tmp", idx_tmp = prefix_ + ".idx.tmp";
  const bool bin_ok = std::fflush(bin_) == 0;
  std::fclose(bin_);
  bin_ = nullptr;
  if (!bin_ok) return ErrnoError(bin_tmp, "write");

  // Header, lengths, cumulative byte pointers, document indices: Megatron's _IndexWriter.
  std::string idx(kIndexMagic, sizeof(kIndexMagic));
  auto put = [&idx](const void* p, size_t n) { idx.append(static_cast<const char*>(p), n); };
  const uint64_t version = kIndexVersion;
  const uint8_t code = static_cast<uint8_t>(dtype_);
  const uint64_t sequence_count = sequence_lengths_.size();
  const uint64_t document_count = document_indices_.size();
  put(&version, 8);
  put(&code, 1);
  put(&sequence_count, 8);
  put(&document_count, 8);
  put(sequence_lengths_.data(), sequence_lengths_.size() * 4);
  int64_t pointer = 0;
  const int64_t item = TokenDTypeSize(dtype_);
  for (int32_t len : sequence_lengths_) {
    put(&pointer, 8);
    pointer += static_cast<int64_t>(len) * item;
  }
  put(document_indices_.data(), document_indices_.size() * 8);

  std::FILE* f = std::fopen(idx_tmp.c_str(), "wb");
  if (f == nullptr) return ErrnoError(idx_tmp, "create");
  const bool idx_ok = std::fwrite(idx.data(), 1, idx.size(), f) == idx.size();
  if (std::fclose(f) != 0 || !idx_ok) return ErrnoError(idx_tmp, "write");
  // The .bin first: a reader that finds the .idx then finds its .bin complete.
  if (std::rename(bin_tmp.c_str(), (prefix_ + ".bin").c_str()) != 0) {
    return ErrnoError(prefix_ + ".bin", "rename into place");
  }
  if (std::rename(idx_tmp.c_str(), (prefix_ + ".idx").c_str()) != 0) {
    return ErrnoError(prefix_ + ".idx", "rename into place");
  }
  return absl::OkStatus();
}

}  // namespace mt::data

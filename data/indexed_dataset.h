// data/indexed_dataset.h: Megatron-LM's indexed dataset (.bin + .idx), written and read.
//
// The format is byte-for-byte Megatron's (reference/ecosystem.md section 3.1), so token files
// preprocessed for Megatron-LM train here and ours train there. A prefix P names P.bin (raw
// token ids of one dtype, no header) and P.idx (header, sequence lengths, byte pointers into
// the .bin, document boundaries). We write one sequence per document, as Megatron's
// preprocess_data.py does without sentence splitting.
//
// Readers memory-map both files and validate every count and pointer against the files'
// sizes before handing out a single token: bad data must fail before training starts, with
// one message that names the file and the offending value.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mt::data {

// Megatron's DType codes (the byte at offset 17 of the .idx).
enum class TokenDType : uint8_t {
  kUInt8 = 1,
  kInt8 = 2,
  kInt16 = 3,
  kInt32 = 4,
  kInt64 = 5,
  kFloat64 = 6,
  kFloat32 = 7,
  kUInt16 = 8,
};

// Bytes per element; 0 for a code that is not a Megatron dtype.
int64_t TokenDTypeSize(TokenDType dtype);
// "uint16", "int32", ...
const char* TokenDTypeName(TokenDType dtype);
// Largest token id an integer dtype holds; -1 for the float codes (not token types).
int64_t MaxTokenId(TokenDType dtype);
// Megatron's DType.optimal_dtype: uint16 below a 65,500-token vocabulary, int32 otherwise.
TokenDType OptimalTokenDType(int64_t vocab_size);

inline constexpr char kIndexMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
inline constexpr uint64_t kIndexVersion = 1;
// magic(9) + version(8) + dtype(1) + sequence_count(8) + document_count(8).
inline constexpr int64_t kIndexHeaderBytes = 34;

// Writes PREFIX.bin while documents arrive and PREFIX.idx at Finalize(), like Megatron's
// IndexedDatasetBuilder with one sequence per document. Files are written under temporary
// names and renamed by Finalize(), so a present .idx always belongs to a complete .bin.
class IndexedDatasetWriter {
 public:
  static absl::StatusOr<std::unique_ptr<IndexedDatasetWriter>> Create(const std::string& prefix,
                                                                      TokenDType dtype);
  ~IndexedDatasetWriter();
  IndexedDatasetWriter(const IndexedDatasetWriter&) = delete;
  IndexedDatasetWriter& operator=(const IndexedDatasetWriter&) = delete;

  // Appends one document as one sequence. Token ids must fit the dtype.
  absl::Status AddDocument(std::span<const int32_t> tokens);  // [len]
  // Writes the .idx and commits both files. No AddDocument after this.
  absl::Status Finalize();

  int64_t num_documents() const { return static_cast<int64_t>(document_indices_.size()) - 1; }
  int64_t num_tokens() const { return num_tokens_; }
  const std::string& prefix() const { return prefix_; }

 private:
  IndexedDatasetWriter(std::string prefix, TokenDType dtype, std::FILE* bin);

  std::string prefix_;
  TokenDType dtype_;
  std::FILE* bin_ = nullptr;               // open on PREFIX.bin.tmp until Finalize()
  std::vector<char> buffer_;               // converted tokens of the current document
  std::vector<int32_t> sequence_lengths_;  // [S]
  std::vector<int64_t> document_indices_;  // [num_docs + 1], starts at 0
  int64_t num_tokens_ = 0;
  bool finalized_ = false;
};

// A read-only, memory-mapped indexed dataset. Sequences are contiguous in the .bin (the
// pointers are checked to be cumulative), so a "global token offset" indexes the
// concatenation of all sequences, which is what the sampler's windows run over.
class IndexedDataset {
 public:
  // Opens PREFIX.idx and PREFIX.bin and validates them fully (not the token values: see
  // CheckVocab).
  static absl::StatusOr<std::unique_ptr<IndexedDataset>> Open(const std::string& prefix);
  ~IndexedDataset();
  IndexedDataset(const IndexedDataset&) = delete;
  IndexedDataset& operator=(const IndexedDataset&) = delete;

  const std::string& prefix() const { return prefix_; }
  std::string bin_path() const { return prefix_ + ".bin"; }
  std::string idx_path() const { return prefix_ + ".idx"; }
  TokenDType dtype() const { return dtype_; }

  int64_t num_sequences() const { return num_sequences_; }
  // Megatron's document_count is len(document_indices) = documents + 1; this is documents.
  int64_t num_documents() const { return num_document_indices_ - 1; }
  int64_t num_tokens() const { return num_tokens_; }

  int32_t sequence_length(int64_t i) const;   // tokens
  int64_t sequence_pointer(int64_t i) const;  // byte offset into the .bin
  // Document d spans sequences [document_index(d), document_index(d + 1)).
  int64_t document_index(int64_t d) const;
  // Global token offset of sequence i's first token.
  int64_t sequence_offset(int64_t i) const { return sequence_pointer(i) / item_size_; }

  // out[0, count) = tokens [first, first + count) of the concatenated sequences, widened to
  // int32 whatever the stored dtype. The range must lie inside [0, num_tokens()).
  void ReadTokens(int64_t first, int64_t count, int32_t* out) const;  // out: [count]

  // Scans every token (in parallel) and fails on the first id outside [0, vocab_size),
  // naming the .bin, the token offset and the id.
  absl::Status CheckVocab(int64_t vocab_size) const;

  // A 64-bit fingerprint of the index and a spread sample of tokens: enough to tell that a
  // resumed run reads the same data without hashing a multi-terabyte .bin.
  // Computed once by Open().
  uint64_t Fingerprint() const { return fingerprint_; }

 private:
  IndexedDataset() = default;
  absl::Status Validate();
  uint64_t ComputeFingerprint() const;

  std::string prefix_;
  TokenDType dtype_ = TokenDType::kUInt16;
  int64_t item_size_ = 2;
  int64_t num_sequences_ = 0;
  int64_t num_document_indices_ = 0;
  int64_t num_tokens_ = 0;
  uint64_t fingerprint_ = 0;
  // Mappings (null when the file is empty).
  const uint8_t* idx_map_ = nullptr;
  int64_t idx_size_ = 0;
  const uint8_t* bin_map_ = nullptr;
  int64_t bin_size_ = 0;
  // Views into idx_map_; unaligned in general, so read through memcpy (see .cc).
  const uint8_t* lengths_ = nullptr;      // int32[S]
  const uint8_t* pointers_ = nullptr;     // int64[S]
  const uint8_t* doc_indices_ = nullptr;  // int64[D]
};

}  // namespace mt::data

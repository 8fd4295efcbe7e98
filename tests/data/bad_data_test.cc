// tests/data/bad_data_test.cc: every kind of broken dataset is one clear error that names the
// file and the offending value, raised when the dataset is opened (or vocab-checked).
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "data/indexed_dataset.h"
#include "tests/data/test_util.h"

namespace mt::data {
namespace {

using testing::ReadBytes;
using testing::TempDir;
using testing::WriteBytes;

class BadData : public ::testing::Test {
 protected:
  void SetUp() override {
    prefix_ = dir_ / "ds";
    auto writer = IndexedDatasetWriter::Create(prefix_, TokenDType::kUInt16);
    ASSERT_TRUE(writer.ok());
    const std::vector<std::vector<int32_t>> docs = {{5, 6, 7, 2}, {8, 9, 2}, {10, 11, 12, 13, 2}};
    for (const auto& d : docs) ASSERT_TRUE((*writer)->AddDocument(d).ok());
    ASSERT_TRUE((*writer)->Finalize().ok());
    idx_ = ReadBytes(prefix_ + ".idx");
    bin_ = ReadBytes(prefix_ + ".bin");
    ASSERT_TRUE(IndexedDataset::Open(prefix_).ok());
  }

  // Overwrites bytes of the .idx at `offset` with the little-endian value.
  template <typename T>
  void PatchIdx(size_t offset, T value) {
    std::memcpy(idx_.data() + offset, &value, sizeof(T));
    WriteBytes(prefix_ + ".idx", idx_);
  }

  // Opens the dataset, expects failure, and checks the message mentions each piece.
  void ExpectError(const std::vector<std::string>& pieces) {
    auto ds = IndexedDataset::Open(prefix_);
    ASSERT_FALSE(ds.ok()) << "opened a broken dataset";
    const std::string msg(ds.status().message());
    for (const std::string& p : pieces) EXPECT_NE(msg.find(p), std::string::npos) << msg;
  }

  // .idx layout for S = 3, D = 4: lengths at 34, pointers at 46, document indices at 70.
  static constexpr size_t kLengths = 34, kPointers = 46, kDocIndices = 70;
  TempDir dir_;
  std::string prefix_, idx_, bin_;
};

TEST_F(BadData, TruncatedBin) {
  WriteBytes(prefix_ + ".bin", bin_.substr(0, bin_.size() - 3));
  ExpectError({prefix_ + ".bin", "is 21 bytes", "24 bytes", "truncated"});
}

TEST_F(BadData, BinLongerThanIndexSays) {
  WriteBytes(prefix_ + ".bin", bin_ + std::string(4, '\0'));
  ExpectError({prefix_ + ".bin", "is 28 bytes", "24 bytes"});
}

TEST_F(BadData, IdxLengthsDisagreeWithBin) {
  // Sequence 2 claims 6 tokens instead of 5; pointers stay cumulative, so only the .bin
  // size gives it away.
  PatchIdx<int32_t>(kLengths + 8, 6);
  ExpectError({prefix_ + ".bin", prefix_ + ".idx", "13 uint16 tokens = 26 bytes", "is 24 bytes"});
}

TEST_F(BadData, IdxPointerDisagreesWithLengths) {
  PatchIdx<int64_t>(kPointers + 8, 10);  // sequence 1 should start at byte 8
  ExpectError({prefix_ + ".idx", "sequence 1 pointer is byte 10", "expected 8"});
}

TEST_F(BadData, IdxCountsDisagreeWithFileSize) {
  PatchIdx<uint64_t>(18, 4);  // S = 4, but the file holds arrays for 3
  ExpectError({prefix_ + ".idx", "4 sequences", "bytes"});
}

TEST_F(BadData, IdxHugeCountDoesNotOverflow) {
  PatchIdx<uint64_t>(18, uint64_t{1} << 62);
  ExpectError({prefix_ + ".idx", "4611686018427387904 sequences"});
}

TEST_F(BadData, WrongMagic) {
  idx_[0] = 'X';
  WriteBytes(prefix_ + ".idx", idx_);
  ExpectError({prefix_ + ".idx", "bad magic", "XMIDIDX"});
}

TEST_F(BadData, WrongVersion) {
  PatchIdx<uint64_t>(9, 2);
  ExpectError({prefix_ + ".idx", "unsupported version 2", "expected 1"});
}

TEST_F(BadData, FloatDTypeCode) {
  PatchIdx<uint8_t>(17, 7);
  ExpectError({prefix_ + ".idx", "dtype code 7", "float32"});
}

TEST_F(BadData, UnknownDTypeCode) {
  PatchIdx<uint8_t>(17, 42);
  ExpectError({prefix_ + ".idx", "unknown dtype code 42"});
}

TEST_F(BadData, DocumentIndicesNotMonotone) {
  PatchIdx<int64_t>(kDocIndices + 16, 0);  // [0, 1, 0, 3]
  ExpectError({prefix_ + ".idx", "document_indices[2] = 0", "document_indices[1] = 1"});
}

TEST_F(BadData, DocumentIndicesDoNotEndAtSequenceCount) {
  PatchIdx<int64_t>(kDocIndices + 24, 2);
  ExpectError({prefix_ + ".idx", "last document index is 2", "sequence count 3"});
}

TEST_F(BadData, ShortIdx) {
  WriteBytes(prefix_ + ".idx", idx_.substr(0, 20));
  ExpectError({prefix_ + ".idx", "20 bytes", "header"});
}

TEST_F(BadData, MissingBin) {
  std::filesystem::remove(prefix_ + ".bin");
  ExpectError({prefix_ + ".bin", "cannot open"});
}

TEST_F(BadData, TokenIdAtOrAboveVocab) {
  auto ds = IndexedDataset::Open(prefix_);
  ASSERT_TRUE(ds.ok());
  EXPECT_TRUE((*ds)->CheckVocab(14).ok());
  const absl::Status s = (*ds)->CheckVocab(13);  // token 13 at offset 10 is out
  ASSERT_FALSE(s.ok());
  const std::string msg(s.message());
  EXPECT_NE(msg.find(prefix_ + ".bin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("token id 13"), std::string::npos) << msg;
  EXPECT_NE(msg.find("offset 10"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[0, 13)"), std::string::npos) << msg;
}

TEST(BadDataLarge, VocabScanReportsTheFirstBadTokenAcrossThreads) {
  // Several parallel blocks, bad ids in two of them: the earlier one is reported.
  TempDir dir;
  const std::string prefix = dir / "big";
  auto writer = IndexedDatasetWriter::Create(prefix, TokenDType::kUInt16);
  ASSERT_TRUE(writer.ok());
  std::vector<int32_t> doc(3'000'000);
  for (size_t i = 0; i < doc.size(); ++i) doc[i] = static_cast<int32_t>(i % 1000);
  doc[2'500'000] = 5000;
  doc[1'500'001] = 4000;
  ASSERT_TRUE((*writer)->AddDocument(doc).ok());
  ASSERT_TRUE((*writer)->Finalize().ok());
  auto ds = IndexedDataset::Open(prefix);
  ASSERT_TRUE(ds.ok());
  const absl::Status s = (*ds)->CheckVocab(1000);
  ASSERT_FALSE(s.ok());
  const std::string msg(s.message());
  EXPECT_NE(msg.find("token id 4000 at token offset 1500001"), std::string::npos) << msg;
  EXPECT_TRUE((*ds)->CheckVocab(5001).ok());
}

}  // namespace
}  // namespace mt::data

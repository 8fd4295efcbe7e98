// tests/data/indexed_dataset_test.cc: our .bin/.idx against a reference writer built from the
// spec (reference/ecosystem.md 3.1, Megatron's IndexedDatasetBuilder), byte for byte, and
// files from that reference read back exactly.
#include "data/indexed_dataset.h"

#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/data/test_util.h"

namespace mt::data {
namespace {

using testing::ReadBytes;
using testing::Reference;
using testing::ReferenceWrite;
using testing::TempDir;
using testing::WriteBytes;

std::vector<std::vector<int64_t>> SampleDocs(int64_t max_id) {
  return {{1, 2, 3, 2}, {}, {max_id}, {7, 0, max_id - 1, 5, 6, 9, 2}, {42}};
}

void WriteWithOurs(const std::string& prefix, const std::vector<std::vector<int64_t>>& docs,
                   TokenDType dtype) {
  auto writer = IndexedDatasetWriter::Create(prefix, dtype);
  ASSERT_TRUE(writer.ok()) << writer.status();
  for (const auto& doc : docs) {
    std::vector<int32_t> tokens(doc.begin(), doc.end());
    ASSERT_TRUE((*writer)->AddDocument(tokens).ok());
  }
  ASSERT_TRUE((*writer)->Finalize().ok());
}

TEST(IndexedDataset, OptimalDTypeFollowsMegatron) {
  EXPECT_EQ(OptimalTokenDType(4096), TokenDType::kUInt16);
  EXPECT_EQ(OptimalTokenDType(65499), TokenDType::kUInt16);
  EXPECT_EQ(OptimalTokenDType(65500), TokenDType::kInt32);
  EXPECT_EQ(OptimalTokenDType(129280), TokenDType::kInt32);  // DeepSeek-V3
}

TEST(IndexedDataset, ReferenceWriterMatchesHandWrittenBytes) {
  // Two documents [5, 258] and [7] as uint16, spelled out from the spec by hand.
  const Reference r = ReferenceWrite({{5, 258}, {7}}, 8, 2);
  const std::string expected_idx(
      "MMIDIDX\0\0"         // magic
      "\x01\0\0\0\0\0\0\0"  // version 1
      "\x08"                // dtype uint16
      "\x02\0\0\0\0\0\0\0"  // S = 2
      "\x03\0\0\0\0\0\0\0"  // D = 3
      "\x02\0\0\0"
      "\x01\0\0\0"  // lengths
      "\0\0\0\0\0\0\0\0"
      "\x04\0\0\0\0\0\0\0"  // byte pointers
      "\0\0\0\0\0\0\0\0"
      "\x01\0\0\0\0\0\0\0"
      "\x02\0\0\0\0\0\0\0",  // document indices
      34 + 8 + 16 + 24);
  EXPECT_EQ(r.idx, expected_idx);
  EXPECT_EQ(r.bin, std::string("\x05\0\x02\x01\x07\0", 6));
}

TEST(IndexedDataset, WriterIsByteIdenticalToReferenceUInt16) {
  TempDir dir;
  const auto docs = SampleDocs(4095);
  WriteWithOurs(dir / "u16", docs, OptimalTokenDType(4096));
  const Reference ref = ReferenceWrite(docs, 8, 2);
  EXPECT_EQ(ReadBytes(dir / "u16.idx"), ref.idx);
  EXPECT_EQ(ReadBytes(dir / "u16.bin"), ref.bin);
}

TEST(IndexedDataset, WriterIsByteIdenticalToReferenceInt32) {
  TempDir dir;
  const auto docs = SampleDocs(129279);
  WriteWithOurs(dir / "i32", docs, OptimalTokenDType(129280));
  const Reference ref = ReferenceWrite(docs, 4, 4);
  EXPECT_EQ(ReadBytes(dir / "i32.idx"), ref.idx);
  EXPECT_EQ(ReadBytes(dir / "i32.bin"), ref.bin);
}

TEST(IndexedDataset, EmptyDatasetIsValid) {
  TempDir dir;
  WriteWithOurs(dir / "empty", {}, TokenDType::kUInt16);
  EXPECT_EQ(ReadBytes(dir / "empty.idx"), ReferenceWrite({}, 8, 2).idx);
  auto ds = IndexedDataset::Open(dir / "empty");
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ((*ds)->num_sequences(), 0);
  EXPECT_EQ((*ds)->num_documents(), 0);
  EXPECT_EQ((*ds)->num_tokens(), 0);
}

// Writes reference files, opens them with our reader and checks every accessor.
void CheckReadsReference(int code, int item, int64_t max_id) {
  TempDir dir;
  const auto docs = SampleDocs(max_id);
  const Reference ref = ReferenceWrite(docs, code, item);
  WriteBytes(dir / "ref.idx", ref.idx);
  WriteBytes(dir / "ref.bin", ref.bin);
  auto opened = IndexedDataset::Open(dir / "ref");
  ASSERT_TRUE(opened.ok()) << opened.status();
  const IndexedDataset& ds = **opened;
  EXPECT_EQ(static_cast<int>(ds.dtype()), code);
  ASSERT_EQ(ds.num_sequences(), static_cast<int64_t>(docs.size()));
  EXPECT_EQ(ds.num_documents(), static_cast<int64_t>(docs.size()));
  std::vector<int32_t> all;
  int64_t ptr = 0;
  for (size_t i = 0; i < docs.size(); ++i) {
    EXPECT_EQ(ds.sequence_length(i), static_cast<int32_t>(docs[i].size()));
    EXPECT_EQ(ds.sequence_pointer(i), ptr);
    EXPECT_EQ(ds.sequence_offset(i), ptr / item);
    EXPECT_EQ(ds.document_index(i), static_cast<int64_t>(i));
    ptr += static_cast<int64_t>(docs[i].size()) * item;
    all.insert(all.end(), docs[i].begin(), docs[i].end());
  }
  EXPECT_EQ(ds.document_index(docs.size()), static_cast<int64_t>(docs.size()));
  ASSERT_EQ(ds.num_tokens(), static_cast<int64_t>(all.size()));
  // Every sub-range of the concatenation, across sequence boundaries.
  for (int64_t first = 0; first < ds.num_tokens(); ++first) {
    for (int64_t count = 0; first + count <= ds.num_tokens(); ++count) {
      std::vector<int32_t> got(count + 1, -7);
      ds.ReadTokens(first, count, got.data());
      for (int64_t k = 0; k < count; ++k) ASSERT_EQ(got[k], all[first + k]) << first << "+" << k;
      ASSERT_EQ(got[count], -7);  // nothing written past the range
    }
  }
  EXPECT_TRUE(ds.CheckVocab(max_id + 1).ok());
}

TEST(IndexedDataset, ReadsReferenceUInt16) { CheckReadsReference(8, 2, 65535); }
TEST(IndexedDataset, ReadsReferenceInt32) { CheckReadsReference(4, 4, 129279); }
TEST(IndexedDataset, ReadsReferenceOtherIntegerDTypes) {
  CheckReadsReference(1, 1, 255);     // uint8
  CheckReadsReference(2, 1, 127);     // int8
  CheckReadsReference(3, 2, 32767);   // int16
  CheckReadsReference(5, 8, 200000);  // int64
}

TEST(IndexedDataset, ReadsMultimodalIndexWithSequenceModes) {
  TempDir dir;
  const auto docs = SampleDocs(100);
  Reference ref = ReferenceWrite(docs, 8, 2);
  ref.idx.append(docs.size(), '\0');  // int8 mode per sequence
  WriteBytes(dir / "mm.idx", ref.idx);
  WriteBytes(dir / "mm.bin", ref.bin);
  auto ds = IndexedDataset::Open(dir / "mm");
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ((*ds)->num_sequences(), static_cast<int64_t>(docs.size()));
}

TEST(IndexedDataset, WriterRejectsIdsTheDTypeCannotHold) {
  TempDir dir;
  auto writer = IndexedDatasetWriter::Create(dir / "w", TokenDType::kUInt16);
  ASSERT_TRUE(writer.ok());
  const std::vector<int32_t> doc = {1, 70000};
  const absl::Status s = (*writer)->AddDocument(doc);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find(dir / "w.bin"), std::string::npos) << s;
  EXPECT_NE(s.message().find("70000"), std::string::npos) << s;
  EXPECT_NE(s.message().find("uint16"), std::string::npos) << s;
}

TEST(IndexedDataset, UnfinalizedWriterLeavesNoDataset) {
  TempDir dir;
  {
    auto writer = IndexedDatasetWriter::Create(dir / "partial", TokenDType::kUInt16);
    ASSERT_TRUE(writer.ok());
    const std::vector<int32_t> doc = {1, 2, 3};
    ASSERT_TRUE((*writer)->AddDocument(doc).ok());
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "partial.idx"));
  EXPECT_FALSE(std::filesystem::exists(dir / "partial.bin"));
  EXPECT_FALSE(std::filesystem::exists(dir / "partial.bin.tmp"));
}

TEST(IndexedDataset, FingerprintSeesTokenChanges) {
  TempDir dir;
  const auto docs = SampleDocs(1000);
  WriteWithOurs(dir / "a", docs, TokenDType::kUInt16);
  auto changed = docs;
  changed[0][1] = 999;
  WriteWithOurs(dir / "b", changed, TokenDType::kUInt16);
  auto a = IndexedDataset::Open(dir / "a");
  auto a2 = IndexedDataset::Open(dir / "a");
  auto b = IndexedDataset::Open(dir / "b");
  ASSERT_TRUE(a.ok() && a2.ok() && b.ok());
  EXPECT_EQ((*a)->Fingerprint(), (*a2)->Fingerprint());
  EXPECT_NE((*a)->Fingerprint(), (*b)->Fingerprint());
}

}  // namespace
}  // namespace mt::data

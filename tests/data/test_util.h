// tests/data/test_util.h: temporary directories, whole-file I/O, and the reference
// Megatron .idx/.bin writer (built from the spec alone) shared by the data tests.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace mt::data::testing {

// A fresh directory under $TMPDIR, removed when the object dies.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "mt_data_test_XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed";
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

// Little-endian appends, written out byte by byte so the reference shares no code (and no
// host-endianness assumption) with the implementation.
inline void PutLE(std::string* s, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

struct Reference {
  std::string idx, bin;
};

// Megatron's builder with one sequence per document: add_document appends the tokens, the
// length, and len(sequence_lengths) to document_indices (which starts as [0]); finalize
// writes magic, version 1, dtype code, S, D, int32 lengths, int64 byte pointers, int64
// document indices.
inline Reference ReferenceWrite(const std::vector<std::vector<int64_t>>& docs, int code, int item) {
  Reference r;
  std::vector<int64_t> lengths, doc_idx = {0};
  for (const auto& doc : docs) {
    for (int64_t t : doc) PutLE(&r.bin, static_cast<uint64_t>(t), item);
    lengths.push_back(static_cast<int64_t>(doc.size()));
    doc_idx.push_back(static_cast<int64_t>(lengths.size()));
  }
  r.idx = std::string("MMIDIDX\0\0", 9);
  PutLE(&r.idx, 1, 8);
  PutLE(&r.idx, code, 1);
  PutLE(&r.idx, lengths.size(), 8);
  PutLE(&r.idx, doc_idx.size(), 8);
  for (int64_t len : lengths) PutLE(&r.idx, len, 4);
  int64_t ptr = 0;
  for (int64_t len : lengths) {
    PutLE(&r.idx, ptr, 8);
    ptr += len * item;
  }
  for (int64_t d : doc_idx) PutLE(&r.idx, d, 8);
  return r;
}

}  // namespace mt::data::testing

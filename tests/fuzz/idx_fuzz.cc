// tests/fuzz/idx_fuzz.cc: libFuzzer target for the Megatron indexed-dataset reader.
//
// Input: a 2-byte little-endian length n, then n bytes of PREFIX.idx (n is cut to what is
// left), then the bytes of PREFIX.bin. Both are written to a private temporary directory
// and opened the way training opens them. Beyond "no crash, no sanitizer report", a dataset
// the reader accepts must be safe to read everywhere it says it has tokens. Built and run
// by run_fuzzers.sh.
#include <stdlib.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "data/indexed_dataset.h"

namespace {

std::string* dir = nullptr;  // the private temporary directory, removed at exit

void RemoveDir() {
  std::remove((*dir + "/d.idx").c_str());
  std::remove((*dir + "/d.bin").c_str());
  ::rmdir(dir->c_str());
}

const std::string& Prefix() {
  static const std::string prefix = [] {
    char tmpl[] = "/tmp/mt_idx_fuzz_XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) std::abort();
    dir = new std::string(tmpl);
    std::atexit(RemoveDir);
    return *dir + "/d";
  }();
  return prefix;
}

void WriteAll(const std::string& path, const uint8_t* data, size_t n) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();
  if (n > 0 && std::fwrite(data, 1, n, f) != n) std::abort();
  std::fclose(f);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  size_t n = data[0] | (static_cast<size_t>(data[1]) << 8);
  data += 2;
  size -= 2;
  if (n > size) n = size;
  WriteAll(Prefix() + ".idx", data, n);
  WriteAll(Prefix() + ".bin", data + n, size - n);
  auto ds = mt::data::IndexedDataset::Open(Prefix());
  if (!ds.ok()) return 0;
  const mt::data::IndexedDataset& d = **ds;
  int64_t total = 0;
  for (int64_t i = 0; i < d.num_sequences(); ++i) {
    const int64_t len = d.sequence_length(i);
    if (len < 0 || d.sequence_offset(i) != total) std::abort();
    total += len;
  }
  if (total != d.num_tokens()) std::abort();
  int64_t prev = 0;
  for (int64_t k = 0; k <= d.num_documents(); ++k) {
    const int64_t idx = d.document_index(k);
    if (idx < prev || idx > d.num_sequences()) std::abort();
    prev = idx;
  }
  // Every token the index promises is readable (ASan flags any read past the mapping).
  std::vector<int32_t> tokens(static_cast<size_t>(d.num_tokens()));
  if (d.num_tokens() > 0) d.ReadTokens(0, d.num_tokens(), tokens.data());
  (void)d.CheckVocab(int64_t{1} << 40);
  return 0;
}

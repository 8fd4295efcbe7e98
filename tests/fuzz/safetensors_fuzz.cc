// tests/fuzz/safetensors_fuzz.cc: libFuzzer target for the safetensors header parser.
//
// The input is a whole file. Beyond "no crash, no sanitizer report", every header the parser
// accepts must satisfy what the reader relies on: tensors tile the byte buffer exactly, in
// bounds, with byte counts that match their shapes. Built and run by run_fuzzers.sh.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "trainer/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto header = mt::ParseSafetensorsHeader(bytes, size);
  if (!header.ok()) return 0;
  if (header->data_start < 8 || header->data_start > size) std::abort();
  const uint64_t buffer = size - header->data_start;
  if (header->names.size() != header->tensors.size()) std::abort();
  uint64_t pos = 0;
  for (const std::string& name : header->names) {
    const mt::SafetensorsTensorInfo& t = header->tensors.at(name);
    if (t.begin != pos || t.end < t.begin || t.end > buffer) std::abort();
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) std::abort();
      numel *= static_cast<uint64_t>(d);
    }
    if (numel * mt::DTypeSize(t.dtype) != t.end - t.begin) std::abort();
    pos = t.end;
  }
  if (pos != buffer) std::abort();
  return 0;
}

// trainer/safetensors.h: the safetensors file format, written like the reference writer and
// read by a parser that treats every file as hostile.
//
// Layout (huggingface/safetensors, shared/reference/ecosystem.md §2): u64 little-endian
// header length N, N bytes of JSON (padded with spaces to a multiple of 8), then the byte
// buffer, which the tensors' data_offsets must cover exactly. Checkpoints we write and
// Hugging Face checkpoints we import both go through here, so the reader checks everything
// a malformed or malicious file could get wrong before touching the buffer; a fuzzer drives
// ParseSafetensorsHeader directly.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/tensor.h"
#include "trainer/durable_file.h"

namespace mt {

struct NamedTensor {
  std::string name;
  Tensor tensor;  // any shape, any dtype, CPU
};

// The header caps the reference reader enforces.
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

// Writes `tensors` to `path` as the reference writer would (sorted by dtype alignment,
// descending, then by name; header padded to 8 bytes) and fsyncs it. `__metadata__` always
// carries "format": "pt" (Hugging Face loaders refuse files without it) plus `metadata`.
absl::Status WriteSafetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {
                                  {"format", "pt"}});

// WriteSafetensors that also returns the file's size and SHA-256 (hashed as it is written)
// and calls `after_tensor(k)` after the k-th tensor's bytes went out (the checkpoint's
// crash-injection point).
absl::StatusOr<FileDigest> WriteSafetensorsWithDigest(
    const std::string& path, const std::vector<NamedTensor>& tensors,
    const std::map<std::string, std::string>& metadata,
    const std::function<void(size_t)>& after_tensor = nullptr);

struct SafetensorsTensorInfo {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // data_offsets, relative to the start of the byte buffer
  uint64_t end = 0;
};

struct SafetensorsHeader {
  uint64_t data_start = 0;  // file offset of the byte buffer: 8 + N
  std::map<std::string, std::string> metadata;
  std::vector<std::string> names;  // in buffer order
  std::map<std::string, SafetensorsTensorInfo> tensors;
};

// Validates a header: `bytes` holds at least the first 8 + N bytes of a file that is
// `file_size` bytes long (a fuzzer passes a whole file). `file` names it in errors.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string_view bytes, uint64_t file_size,
                                                         const std::string& file = "<buffer>");

// An open, validated safetensors file. Reads go through pread, so a file that shrinks under
// us yields an error rather than the SIGBUS an mmap would. Copies share the descriptor.
class SafetensorsFile {
 public:
  static absl::StatusOr<SafetensorsFile> Open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<std::string>& names() const { return header_.names; }  // buffer order
  bool Contains(const std::string& name) const { return header_.tensors.count(name) > 0; }
  absl::StatusOr<SafetensorsTensorInfo> Info(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }

  // The tensor in its stored dtype.
  absl::StatusOr<Tensor> Read(const std::string& name) const;
  // Every tensor, in buffer order.
  absl::StatusOr<std::vector<NamedTensor>> ReadAll() const;

 private:
  SafetensorsFile(std::string path, std::shared_ptr<const int> fd, SafetensorsHeader header)
      : path_(std::move(path)), fd_(std::move(fd)), header_(std::move(header)) {}

  std::string path_;
  std::shared_ptr<const int> fd_;
  SafetensorsHeader header_;
};

}  // namespace mt

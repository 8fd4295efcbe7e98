// trainer/durable_file.h: files that are on disk when we say they are, with their SHA-256.
//
// Checkpoints are committed by rename, which only means something if every byte under the
// renamed directory was fsync'd first. The writer hashes bytes as they go out, so a manifest
// costs no second read of multi-gigabyte shards. Used by the safetensors writer, the
// checkpoint commit protocol and the Hugging Face exporter.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mt {

// Size and lowercase-hex SHA-256 of a file's contents.
struct FileDigest {
  uint64_t size = 0;
  std::string sha256;
};

// Creates (truncating) a file, appends bytes, and on Close() fsyncs it. Errors name the path.
// Destroying an unclosed writer closes the descriptor without fsync (the caller is failing).
class DurableFileWriter {
 public:
  static absl::StatusOr<DurableFileWriter> Create(const std::string& path);
  DurableFileWriter(DurableFileWriter&&) noexcept;
  DurableFileWriter& operator=(DurableFileWriter&&) noexcept;
  ~DurableFileWriter();

  absl::Status Append(const void* data, size_t n);
  // fsync + close; returns what was written.
  absl::StatusOr<FileDigest> Close();

 private:
  struct State;
  explicit DurableFileWriter(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// Writes `contents` to `path` and fsyncs it (not atomic: callers write into a temporary
// directory or rename afterwards).
absl::StatusOr<FileDigest> WriteFileDurably(const std::string& path, std::string_view contents);

// fsync on a directory, so that entries created or renamed in it survive a crash.
absl::Status FsyncDir(const std::string& dir);

// Streams a file through SHA-256.
absl::StatusOr<FileDigest> DigestFile(const std::string& path);

// Reads a whole regular file of at most `max_bytes` (a bound for files we parse as JSON).
absl::StatusOr<std::string> ReadSmallFile(const std::string& path, uint64_t max_bytes);

}  // namespace mt

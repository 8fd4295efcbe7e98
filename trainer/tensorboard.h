// trainer/tensorboard.h: TensorBoard scalar event files, written directly.
//
// An event file is TFRecord-framed protobuf Events (reference/ecosystem.md §5): a
// "brain.Event:2" header event, then one Event per step holding a Summary of scalar
// Values. Scalars need three tiny messages, so we encode them by hand instead of pulling
// in protobuf and TensorFlow's .proto files.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace mt {

// CRC-32C (Castagnoli), and TFRecord's masked form of it.
uint32_t Crc32c(const void* data, size_t n);
uint32_t MaskedCrc32c(const void* data, size_t n);

// The record bytes for one Event (exposed for tests against the spec's test vectors).
std::string EventRecord(double wall_time, int64_t step,
                        const std::vector<std::pair<std::string, float>>& scalars,
                        bool file_version_header);

class TensorBoardWriter {
 public:
  // Creates dir (and parents) and events.out.tfevents.<time>.<host>.<pid>.moetrain in it.
  static absl::StatusOr<std::unique_ptr<TensorBoardWriter>> Create(const std::string& dir);
  ~TensorBoardWriter();
  absl::Status AddScalars(int64_t step, const std::vector<std::pair<std::string, float>>& scalars);
  const std::string& path() const { return path_; }

 private:
  TensorBoardWriter(std::string path, std::FILE* f) : path_(std::move(path)), f_(f) {}
  std::string path_;
  std::FILE* f_;
};

}  // namespace mt

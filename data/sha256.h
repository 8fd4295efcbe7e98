// data/sha256.h: SHA-256 (OpenSSL's EVP): source and model digests in prepare's sidecar, and
// the file digests of checkpoint manifests (trainer/durable_file.h).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace mt::data {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(std::string_view bytes);
  void Update(const void* data, size_t n) {
    Update(std::string_view(static_cast<const char*>(data), n));
  }
  // Lower-case hex digest; the hasher is spent afterwards.
  std::string HexDigest();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::string Sha256Hex(std::string_view bytes);
absl::StatusOr<std::string> Sha256File(const std::string& path);

}  // namespace mt::data

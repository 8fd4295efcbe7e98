#include "trainer/tensorboard.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace mt {
namespace {

constexpr std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    table[i] = c;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kCrcTable = MakeCrcTable();

void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

template <typename T>
void PutFixed(std::string* out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // little-endian hosts only (x86-64, aarch64)
  out->append(b, sizeof(T));
}

// field (number, wire type 2) = length-delimited bytes
void PutBytesField(std::string* out, int field, const std::string& bytes) {
  out->push_back(static_cast<char>(field << 3 | 2));
  PutVarint(out, bytes.size());
  out->append(bytes);
}

double WallTime() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

uint32_t Crc32c(const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = kCrcTable[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t MaskedCrc32c(const void* data, size_t n) {
  uint32_t crc = Crc32c(data, n);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

std::string EventRecord(double wall_time, int64_t step,
                        const std::vector<std::pair<std::string, float>>& scalars,
                        bool file_version_header) {
  std::string event;
  event.push_back(0x09);  // wall_time = 1, fixed64
  PutFixed(&event, wall_time);
  if (step != 0) {          // proto3 omits defaults
    event.push_back(0x10);  // step = 2, varint
    PutVarint(&event, static_cast<uint64_t>(step));
  }
  if (file_version_header) {
    PutBytesField(&event, 3, "brain.Event:2");
  } else {
    std::string summary;
    for (const auto& [tag, value] : scalars) {
      std::string v;
      PutBytesField(&v, 1, tag);  // Value.tag = 1
      v.push_back(0x15);          // Value.simple_value = 2, fixed32
      PutFixed(&v, value);
      PutBytesField(&summary, 1, v);  // Summary.value = 1
    }
    PutBytesField(&event, 5, summary);  // Event.summary = 5
  }
  std::string record;
  PutFixed<uint64_t>(&record, event.size());
  PutFixed<uint32_t>(&record, MaskedCrc32c(record.data(), 8));
  record += event;
  PutFixed<uint32_t>(&record, MaskedCrc32c(event.data(), event.size()));
  return record;
}

absl::StatusOr<std::unique_ptr<TensorBoardWriter>> TensorBoardWriter::Create(
    const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("creating ", dir, ": ", ec.message()));
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  const std::string path =
      absl::StrCat(dir, "/events.out.tfevents.", static_cast<int64_t>(WallTime()), ".", host, ".",
                   getpid(), ".moetrain");
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f)
    return absl::InternalError(absl::StrCat("cannot create ", path, ": ", std::strerror(errno)));
  std::unique_ptr<TensorBoardWriter> w(new TensorBoardWriter(path, f));
  std::string header = EventRecord(WallTime(), 0, {}, /*file_version_header=*/true);
  std::fwrite(header.data(), 1, header.size(), f);
  std::fflush(f);
  return w;
}

TensorBoardWriter::~TensorBoardWriter() {
  if (f_) std::fclose(f_);
}

absl::Status TensorBoardWriter::AddScalars(
    int64_t step, const std::vector<std::pair<std::string, float>>& scalars) {
  std::string rec = EventRecord(WallTime(), step, scalars, false);
  if (std::fwrite(rec.data(), 1, rec.size(), f_) != rec.size() || std::fflush(f_) != 0)
    return absl::InternalError(absl::StrCat("writing ", path_, ": ", std::strerror(errno)));
  return absl::OkStatus();
}

}  // namespace mt

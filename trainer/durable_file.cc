// trainer/durable_file.cc: fsync'd writes, SHA-256 digests (data/sha256.h), bounded reads.
#include "trainer/durable_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "data/sha256.h"
#include "kernels/status.h"

namespace mt {
namespace {

absl::Status ErrnoError(const char* what, const std::string& path, int err) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(err)));
}

}  // namespace

struct DurableFileWriter::State {
  std::string path;
  int fd = -1;
  uint64_t size = 0;
  data::Sha256 sha;
};

DurableFileWriter::DurableFileWriter(std::unique_ptr<State> state) : state_(std::move(state)) {}
DurableFileWriter::DurableFileWriter(DurableFileWriter&&) noexcept = default;
DurableFileWriter& DurableFileWriter::operator=(DurableFileWriter&&) noexcept = default;
DurableFileWriter::~DurableFileWriter() {
  if (state_ != nullptr && state_->fd >= 0) ::close(state_->fd);
}

absl::StatusOr<DurableFileWriter> DurableFileWriter::Create(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("cannot create", path, errno);
  auto state = std::make_unique<State>();
  state->path = path;
  state->fd = fd;
  return DurableFileWriter(std::move(state));
}

absl::Status DurableFileWriter::Append(const void* data, size_t n) {
  if (state_ == nullptr || state_->fd < 0) return absl::InternalError("write to a closed file");
  state_->sha.Update(data, n);
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    // Linux caps one write at ~2 GiB; loop also covers short writes.
    ssize_t w = ::write(state_->fd, p, std::min<size_t>(n, size_t{1} << 30));
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("cannot write", state_->path, errno);
    }
    p += w;
    n -= static_cast<size_t>(w);
    state_->size += static_cast<uint64_t>(w);
  }
  return absl::OkStatus();
}

absl::StatusOr<FileDigest> DurableFileWriter::Close() {
  if (state_ == nullptr || state_->fd < 0) return absl::InternalError("close of a closed file");
  int fd = state_->fd;
  state_->fd = -1;
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoError("cannot fsync", state_->path, err);
  }
  if (::close(fd) != 0) return ErrnoError("cannot close", state_->path, errno);
  FileDigest d;
  d.size = state_->size;
  d.sha256 = state_->sha.HexDigest();
  return d;
}

absl::StatusOr<FileDigest> WriteFileDurably(const std::string& path, std::string_view contents) {
  auto w = DurableFileWriter::Create(path);
  if (!w.ok()) return w.status();
  RETURN_IF_ERROR(w->Append(contents.data(), contents.size()));
  return w->Close();
}

absl::Status FsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("cannot open directory", dir, errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoError("cannot fsync directory", dir, err);
  return absl::OkStatus();
}

absl::StatusOr<FileDigest> DigestFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) return ErrnoError("cannot open", path, errno);
  data::Sha256 sha;
  FileDigest d;
  std::vector<char> buf(size_t{8} << 20);
  while (true) {
    ssize_t r = ::read(fd, buf.data(), buf.size());
    if (r < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return ErrnoError("cannot read", path, err);
    }
    if (r == 0) break;
    sha.Update(buf.data(), static_cast<size_t>(r));
    d.size += static_cast<uint64_t>(r);
  }
  ::close(fd);
  d.sha256 = sha.HexDigest();
  return d;
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path, uint64_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);  // a FIFO must not block
  if (fd < 0) return ErrnoError("cannot open", path, errno);
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    ::close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is ", st.st_size, " bytes, more than the limit of ", max_bytes));
  }
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < out.size()) {
    ssize_t r = ::read(fd, out.data() + got, out.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      int err = r < 0 ? errno : EIO;
      ::close(fd);
      return ErrnoError("cannot read", path, err);
    }
    got += static_cast<size_t>(r);
  }
  ::close(fd);
  return out;
}

}  // namespace mt

// trainer/safetensors.cc: reference-layout writer, hardened header parser, pread reader.
#include "trainer/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <set>
#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "kernels/status.h"
#include "nlohmann/json.hpp"

namespace mt {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; this reader copies bytes as they are");

using Json = nlohmann::json;

// Position of each dtype in the reference crate's `Dtype` enum, which is declared in
// increasing alignment order; its writer sorts by this rank, descending, then by name, and
// we do the same so our files are byte-identical to safetensors.torch.save_file's.
int ReferenceDTypeRank(DType d) {
  switch (d) {
    case DType::kU8:
      return 1;
    case DType::kI8:
      return 2;
    case DType::kF8E5M2:
      return 3;
    case DType::kF8E4M3:
      return 4;
    case DType::kI16:
      return 5;
    case DType::kU16:
      return 6;
    case DType::kF16:
      return 7;
    case DType::kBF16:
      return 8;
    case DType::kI32:
      return 9;
    case DType::kF32:
      return 11;
    case DType::kF64:
      return 12;
    case DType::kI64:
      return 13;
  }
  return 0;
}

// Thrown from the JSON parser callback to abort parsing; caught in ParseSafetensorsHeader.
struct HeaderRejected {
  std::string message;
};

// JSON with duplicate keys rejected (nlohmann keeps the last one silently, which would let
// two readers disagree on a tensor) and nesting capped at what a header needs, so a
// pathological header cannot build a deep DOM.
Json ParseStrictJson(std::string_view text) {
  std::vector<std::set<std::string>> keys;
  std::string entry;  // the top-level key being parsed, for messages
  Json::parser_callback_t cb = [&](int depth, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
      case Json::parse_event_t::array_start:
        if (depth > 2) {
          throw HeaderRejected{
              absl::StrCat("entry \"", entry, "\": JSON nested deeper than a header allows")};
        }
        if (event == Json::parse_event_t::object_start) keys.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        keys.pop_back();
        break;
      case Json::parse_event_t::key: {
        const std::string& k = parsed.get_ref<const std::string&>();
        if (depth == 1) entry = k;
        if (!keys.back().insert(k).second) {
          throw HeaderRejected{
              depth == 1 ? absl::StrCat("duplicate tensor name \"", k, "\"")
                         : absl::StrCat("entry \"", entry, "\": duplicate key \"", k, "\"")};
        }
        break;
      }
      default:
        break;
    }
    return true;
  };
  return Json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/true);
}

// A JSON value that must be an integer in [0, 2^63): returns false otherwise.
bool AsNonNegativeInt(const Json& v, uint64_t* out) {
  if (!v.is_number_unsigned()) return false;  // negative ints and floats have other types
  uint64_t u = v.get<uint64_t>();
  if (u > static_cast<uint64_t>(INT64_MAX)) return false;
  *out = u;
  return true;
}

absl::Status Reject(const std::string& file, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("safetensors file ", file, ": ", what));
}

// Validates one tensor entry against the buffer size; fills `info`.
absl::Status ParseEntry(const std::string& file, const std::string& name, const Json& v,
                        uint64_t buffer_size, SafetensorsTensorInfo* info) {
  auto bad = [&](const std::string& what) {
    return Reject(file, absl::StrCat("tensor \"", name, "\": ", what));
  };
  if (!v.is_object()) return bad("entry is not a JSON object");
  auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string()) return bad("missing string field \"dtype\"");
  auto dtype = DTypeFromName(dt->get_ref<const std::string&>());
  if (!dtype.ok()) {
    return bad(
        absl::StrCat("unknown or unsupported dtype \"", dt->get_ref<const std::string&>(), "\""));
  }
  info->dtype = *dtype;
  auto sh = v.find("shape");
  if (sh == v.end() || !sh->is_array()) return bad("missing array field \"shape\"");
  uint64_t numel = 1;
  bool overflow = false;
  for (size_t i = 0; i < sh->size(); ++i) {
    uint64_t d;
    if (!AsNonNegativeInt((*sh)[i], &d)) {
      return bad(
          absl::StrCat("shape[", i, "] = ", (*sh)[i].dump(), " is not a non-negative integer"));
    }
    info->shape.push_back(static_cast<int64_t>(d));
    overflow |= __builtin_mul_overflow(numel, d, &numel);
  }
  auto off = v.find("data_offsets");
  if (off == v.end() || !off->is_array() || off->size() != 2) {
    return bad("missing field \"data_offsets\" (an array [begin, end])");
  }
  if (!AsNonNegativeInt((*off)[0], &info->begin) || !AsNonNegativeInt((*off)[1], &info->end)) {
    return bad(absl::StrCat("data_offsets ", off->dump(), " are not non-negative integers"));
  }
  if (info->end < info->begin) {
    return bad(absl::StrCat("data_offsets [", info->begin, ", ", info->end,
                            "] are unordered (end before begin)"));
  }
  if (info->end > buffer_size) {
    return bad(absl::StrCat("data_offsets [", info->begin, ", ", info->end,
                            "] are out of bounds: the byte buffer is ", buffer_size, " bytes"));
  }
  uint64_t nbytes = 0;
  overflow |= __builtin_mul_overflow(numel, DTypeSize(info->dtype), &nbytes);
  if (overflow) return bad(absl::StrCat("shape ", sh->dump(), " overflows 64-bit byte counts"));
  if (nbytes != info->end - info->begin) {
    return bad(absl::StrCat("shape ", ShapeString(info->shape), " of ", DTypeName(info->dtype),
                            " needs ", nbytes, " bytes but data_offsets [", info->begin, ", ",
                            info->end, "] hold ", info->end - info->begin));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string_view bytes, uint64_t file_size,
                                                         const std::string& file) {
  if (bytes.size() < 8 || file_size < 8) {
    return Reject(file, absl::StrCat("file is ", std::min<uint64_t>(bytes.size(), file_size),
                                     " bytes, too short for the 8-byte header length"));
  }
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  if (n > kSafetensorsMaxHeaderBytes) {
    return Reject(file, absl::StrCat("header length ", n, " exceeds the limit of ",
                                     kSafetensorsMaxHeaderBytes, " bytes"));
  }
  if (8 + n > file_size) {
    return Reject(file, absl::StrCat("header length ", n, " runs past the end of the file (",
                                     file_size, " bytes)"));
  }
  if (8 + n > bytes.size()) {
    return Reject(file, absl::StrCat("only ", bytes.size(), " of the ", 8 + n,
                                     " header bytes were provided"));
  }
  SafetensorsHeader h;
  h.data_start = 8 + n;
  const uint64_t buffer_size = file_size - h.data_start;

  Json root;
  try {
    root = ParseStrictJson(bytes.substr(8, n));
  } catch (const HeaderRejected& e) {
    return Reject(file, absl::StrCat("header: ", e.message));
  } catch (const Json::exception& e) {
    return Reject(file, absl::StrCat("header is not valid JSON: ", e.what()));
  }
  if (!root.is_object()) return Reject(file, "header is not a JSON object");

  for (const auto& [name, value] : root.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) return Reject(file, "\"__metadata__\" is not a JSON object");
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string()) {
          return Reject(file,
                        absl::StrCat("\"__metadata__\" value for \"", k, "\" is not a string"));
        }
        h.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    SafetensorsTensorInfo info;
    RETURN_IF_ERROR(ParseEntry(file, name, value, buffer_size, &info));
    h.tensors.emplace(name, std::move(info));
  }

  // Ranges must tile [0, buffer_size) exactly: sorted by offsets, each begins where the
  // previous ended. Zero-byte tensors may sit anywhere on that chain.
  std::vector<const std::pair<const std::string, SafetensorsTensorInfo>*> order;
  for (const auto& kv : h.tensors) order.push_back(&kv);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) {
    return std::tie(a->second.begin, a->second.end, a->first) <
           std::tie(b->second.begin, b->second.end, b->first);
  });
  uint64_t pos = 0;
  std::string prev = "the start of the buffer";
  for (const auto* kv : order) {
    const SafetensorsTensorInfo& t = kv->second;
    if (t.begin < pos) {
      return Reject(file, absl::StrCat("tensor \"", kv->first, "\" at [", t.begin, ", ", t.end,
                                       ") overlaps ", prev, ", which ends at ", pos));
    }
    if (t.begin > pos) {
      return Reject(file, absl::StrCat("hole: bytes [", pos, ", ", t.begin, ") between ", prev,
                                       " and tensor \"", kv->first, "\" belong to no tensor"));
    }
    pos = t.end;
    prev = absl::StrCat("tensor \"", kv->first, "\"");
    h.names.push_back(kv->first);
  }
  if (pos != buffer_size) {
    return Reject(file, absl::StrCat("8 + header length ", n, " + end of the last tensor ", pos,
                                     " = ", 8 + n + pos, " but the file is ", file_size, " bytes (",
                                     buffer_size - pos, " trailing bytes belong to no tensor)"));
  }
  return h;
}

absl::StatusOr<FileDigest> WriteSafetensorsWithDigest(
    const std::string& path, const std::vector<NamedTensor>& tensors,
    const std::map<std::string, std::string>& metadata,
    const std::function<void(size_t)>& after_tensor) {
  std::vector<const NamedTensor*> order;
  std::set<std::string_view> seen;
  for (const NamedTensor& t : tensors) {
    if (t.name == "__metadata__" || !seen.insert(t.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("writing ", path, ": tensor name \"", t.name,
                                                     "\" is duplicated or reserved"));
    }
    if (!t.tensor.defined()) {
      return absl::InvalidArgumentError(
          absl::StrCat("writing ", path, ": tensor \"", t.name, "\" is undefined"));
    }
    order.push_back(&t);
  }
  std::sort(order.begin(), order.end(), [](const NamedTensor* a, const NamedTensor* b) {
    int ra = ReferenceDTypeRank(a->tensor.dtype()), rb = ReferenceDTypeRank(b->tensor.dtype());
    return ra != rb ? ra > rb : a->name < b->name;
  });

  // ordered_json keeps insertion order: __metadata__ first, then tensors in buffer order,
  // each with dtype/shape/data_offsets, as the reference serializer emits them.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  std::map<std::string, std::string> meta = metadata;
  meta.emplace("format", "pt");
  header["__metadata__"] = meta;
  uint64_t offset = 0;
  for (const NamedTensor* t : order) {
    nlohmann::ordered_json e;
    e["dtype"] = DTypeName(t->tensor.dtype());
    e["shape"] = t->tensor.shape();
    e["data_offsets"] = {offset, offset + t->tensor.nbytes()};
    header[t->name] = std::move(e);
    offset += t->tensor.nbytes();
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::ordered_json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("writing ", path, ": a tensor name or metadata is not UTF-8: ", e.what()));
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  uint64_t n = text.size();

  ASSIGN_OR_RETURN(DurableFileWriter w, DurableFileWriter::Create(path));
  RETURN_IF_ERROR(w.Append(&n, 8));
  RETURN_IF_ERROR(w.Append(text.data(), text.size()));
  for (size_t i = 0; i < order.size(); ++i) {
    RETURN_IF_ERROR(w.Append(order[i]->tensor.raw(), order[i]->tensor.nbytes()));
    if (after_tensor) after_tensor(i + 1);
  }
  return w.Close();
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  return WriteSafetensorsWithDigest(path, tensors, metadata).status();
}

namespace {

absl::Status PreadFully(int fd, void* dst, uint64_t n, uint64_t offset, const std::string& path) {
  char* p = static_cast<char*>(dst);
  while (n > 0) {
    ssize_t r =
        ::pread(fd, p, std::min<uint64_t>(n, uint64_t{1} << 30), static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      return absl::InternalError(absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
    }
    if (r == 0) {
      return absl::DataLossError(absl::StrCat("safetensors file ", path,
                                              ": unexpected end of file at offset ", offset,
                                              " (was it truncated while open?)"));
    }
    p += r;
    n -= static_cast<uint64_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  // O_NONBLOCK: a FIFO planted in a model directory must not hang the open (fstat rejects it).
  int raw_fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (raw_fd < 0) {
    return absl::NotFoundError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  auto fd = std::shared_ptr<const int>(new int(raw_fd), [](const int* p) {
    ::close(*p);
    delete p;
  });
  struct stat st;
  if (::fstat(raw_fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  std::string head(std::min<uint64_t>(file_size, 8), '\0');
  RETURN_IF_ERROR(PreadFully(raw_fd, head.data(), head.size(), 0, path));
  if (file_size >= 8) {
    uint64_t n;
    std::memcpy(&n, head.data(), 8);
    // Only read as much as the checks below allow; the parser reports the bad length.
    if (n <= kSafetensorsMaxHeaderBytes && 8 + n <= file_size) {
      head.resize(8 + n);
      RETURN_IF_ERROR(PreadFully(raw_fd, head.data() + 8, n, 8, path));
    }
  }
  ASSIGN_OR_RETURN(SafetensorsHeader header, ParseSafetensorsHeader(head, file_size, path));
  return SafetensorsFile(path, std::move(fd), std::move(header));
}

absl::StatusOr<SafetensorsTensorInfo> SafetensorsFile::Info(const std::string& name) const {
  auto it = header_.tensors.find(name);
  if (it == header_.tensors.end()) {
    return absl::NotFoundError(
        absl::StrCat("safetensors file ", path_, ": no tensor \"", name, "\""));
  }
  return it->second;
}

absl::StatusOr<Tensor> SafetensorsFile::Read(const std::string& name) const {
  ASSIGN_OR_RETURN(SafetensorsTensorInfo info, Info(name));
  Tensor t(info.shape, info.dtype);
  RETURN_IF_ERROR(
      PreadFully(*fd_, t.raw(), info.end - info.begin, header_.data_start + info.begin, path_));
  return t;
}

absl::StatusOr<std::vector<NamedTensor>> SafetensorsFile::ReadAll() const {
  std::vector<NamedTensor> out;
  for (const std::string& name : header_.names) {
    ASSIGN_OR_RETURN(Tensor t, Read(name));
    out.push_back({name, std::move(t)});
  }
  return out;
}

}  // namespace mt

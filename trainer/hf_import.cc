// trainer/hf_import.cc: reading HF directories (incl. FP8 block-scaled) and writing them.
#include "trainer/hf_import.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/fp8.h"
#include "kernels/status.h"

namespace mt {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr char kIndexName[] = "model.safetensors.index.json";
constexpr char kSingleName[] = "model.safetensors";
constexpr char kScaleSuffix[] = "_scale_inv";
constexpr uint64_t kMaxJsonBytes = uint64_t{64} << 20;

float HalfToFloat(uint16_t h) {
  int e = (h >> 10) & 31, m = h & 1023;
  float r;
  if (e == 0) {
    r = std::ldexp(static_cast<float>(m), -24);
  } else if (e == 31) {
    r = m ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else {
    r = std::ldexp(static_cast<float>(1024 + m), e - 25);
  }
  return (h & 0x8000) ? -r : r;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

absl::StatusOr<nlohmann::json> ReadJsonObject(const std::string& path, uint64_t max_bytes) {
  ASSIGN_OR_RETURN(std::string text, ReadSmallFile(path, max_bytes));
  Json j;
  try {
    j = Json::parse(text);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not valid JSON: ", e.what()));
  }
  if (!j.is_object())
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a JSON object"));
  return j;
}

namespace {

// [block_rows, block_cols] from config.json's quantization_config, default 128x128.
absl::StatusOr<std::pair<int64_t, int64_t>> Fp8BlockSize(const Json& config,
                                                         const std::string& where) {
  auto q = config.find("quantization_config");
  if (q == config.end() || !q->is_object() || !q->contains("weight_block_size")) {
    return std::pair<int64_t, int64_t>{128, 128};
  }
  const Json& b = (*q)["weight_block_size"];
  if (!b.is_array() || b.size() != 2 || !b[0].is_number_unsigned() || !b[1].is_number_unsigned() ||
      b[0].get<uint64_t>() == 0 || b[1].get<uint64_t>() == 0 || b[0].get<uint64_t>() > INT32_MAX ||
      b[1].get<uint64_t>() > INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": quantization_config.weight_block_size must be two positive integers, got ",
        b.dump()));
  }
  return std::pair<int64_t, int64_t>{b[0].get<int64_t>(), b[1].get<int64_t>()};
}

}  // namespace

bool KeepsF32(const std::string& name) { return EndsWith(name, "e_score_correction_bias"); }

absl::StatusOr<Tensor> ConvertToF32(const Tensor& t) {
  if (t.dtype() == DType::kF32) return t;  // shares the buffer: callers pass fresh reads
  Tensor out(t.shape(), DType::kF32);
  float* y = out.data<float>();
  const int64_t n = t.numel();
  switch (t.dtype()) {
    case DType::kF64:
      for (int64_t i = 0; i < n; ++i)
        y[i] = static_cast<float>(static_cast<const double*>(t.raw())[i]);
      return out;
    case DType::kBF16:
      Bf16ToFloats(static_cast<const uint16_t*>(t.raw()), y, n);
      return out;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) y[i] = HalfToFloat(static_cast<const uint16_t*>(t.raw())[i]);
      return out;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("dtype ", DTypeName(t.dtype()), " cannot be read as fp32 weights"));
  }
}

absl::StatusOr<Tensor> DequantizeFp8Blocks(const Tensor& w, const Tensor& scale_inv,
                                           int64_t block_rows, int64_t block_cols) {
  if (w.dtype() != DType::kF8E4M3 || w.ndim() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("FP8 weight must be a 2-D F8_E4M3 tensor, got ",
                                                   DTypeName(w.dtype()), " ",
                                                   ShapeString(w.shape())));
  }
  const int64_t rows = w.dim(0), cols = w.dim(1);
  const std::vector<int64_t> want = {(rows + block_rows - 1) / block_rows,
                                     (cols + block_cols - 1) / block_cols};
  if (scale_inv.shape() != want) {
    return absl::InvalidArgumentError(
        absl::StrCat("scale_inv has shape ", ShapeString(scale_inv.shape()), ", expected ",
                     ShapeString(want), " for a weight of ", ShapeString(w.shape())));
  }
  ASSIGN_OR_RETURN(Tensor scale, ConvertToF32(scale_inv));
  float table[256];
  for (int v = 0; v < 256; ++v) table[v] = E4M3ToFloat(static_cast<uint8_t>(v));
  Tensor out(w.shape(), DType::kF32);
  const uint8_t* x = static_cast<const uint8_t*>(w.raw());
  const float* s = scale.data<float>();
  float* y = out.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* srow = s + (r / block_rows) * want[1];
    for (int64_t c = 0; c < cols; ++c)
      y[r * cols + c] = table[x[r * cols + c]] * srow[c / block_cols];
  }
  return out;
}

absl::StatusOr<std::string> ConfinedShardPath(const std::string& dir, const std::string& name) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard name \"", name, "\" in ", dir, ": ", why));
  };
  if (name.empty() || name.find('/') != std::string::npos || name.find('\\') != std::string::npos ||
      name.find('\0') != std::string::npos || name.find("..") != std::string::npos) {
    return bad("must be a plain file name (no '/', '\\', '..' or NUL)");
  }
  char* real_dir = ::realpath(dir.c_str(), nullptr);
  if (real_dir == nullptr)
    return absl::NotFoundError(absl::StrCat("cannot resolve directory ", dir));
  std::string root(real_dir);
  std::free(real_dir);
  char* real = ::realpath((fs::path(dir) / name).c_str(), nullptr);
  if (real == nullptr) return bad("file does not exist");
  std::string path(real);
  std::free(real);
  if (path.rfind(root + "/", 0) != 0)
    return bad(absl::StrCat("resolves to ", path, ", outside the directory"));
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return bad("is not a regular file");
  return path;
}

absl::StatusOr<HfModelDir> LoadHfModelDir(
    const std::string& dir, const std::function<bool(const std::string&)>& expected_name,
    const std::function<bool(const std::string&)>& wanted) {
  HfModelDir out;
  ASSIGN_OR_RETURN(out.config,
                   ReadJsonObject((fs::path(dir) / "config.json").string(), kMaxJsonBytes));
  ASSIGN_OR_RETURN(auto block, Fp8BlockSize(out.config, (fs::path(dir) / "config.json").string()));

  // shard file name -> the tensors the index assigns to it (empty set: take all, no index).
  std::map<std::string, std::set<std::string>> shards;
  const std::string index_path = (fs::path(dir) / kIndexName).string();
  if (fs::exists(index_path)) {
    ASSIGN_OR_RETURN(Json index, ReadJsonObject(index_path, kMaxJsonBytes));
    auto wm = index.find("weight_map");
    if (wm == index.end() || !wm->is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": missing object \"weight_map\""));
    }
    for (const auto& [tensor, file] : wm->items()) {
      if (!file.is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(index_path, ": weight_map[\"", tensor, "\"] is not a string"));
      }
      shards[file.get<std::string>()].insert(tensor);
    }
    if (shards.empty())
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": empty weight_map"));
  } else if (fs::exists(fs::path(dir) / kSingleName)) {
    shards[kSingleName];
  } else {
    return absl::NotFoundError(
        absl::StrCat(dir, " has neither ", kSingleName, " nor ", kIndexName));
  }

  // First pass: open and check every header, so a bad name fails before any data is read.
  std::vector<SafetensorsFile> files;
  std::map<std::string, size_t> owner;  // tensor -> index into files
  for (const auto& [shard, listed] : shards) {
    ASSIGN_OR_RETURN(std::string path, ConfinedShardPath(dir, shard));
    ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::Open(path));
    for (const std::string& name : f.names()) {
      if (!listed.empty() && !listed.count(name)) {
        return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\" in ", path,
                                                       " is not in ", kIndexName,
                                                       "'s weight_map for that file"));
      }
      if (!owner.emplace(name, files.size()).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor \"", name, "\" appears twice (", path, ")"));
      }
    }
    for (const std::string& name : listed) {
      if (!f.Contains(name)) {
        return absl::InvalidArgumentError(
            absl::StrCat(index_path, " maps \"", name, "\" to ", path, ", which lacks it"));
      }
    }
    files.push_back(std::move(f));
  }
  for (const auto& [name, fi] : owner) {
    const SafetensorsFile& f = files[fi];
    ASSIGN_OR_RETURN(SafetensorsTensorInfo info, f.Info(name));
    if (EndsWith(name, kScaleSuffix)) {
      auto base = owner.find(name.substr(0, name.size() - std::strlen(kScaleSuffix)));
      if (base == owner.end() || files[base->second].Info(base->first)->dtype != DType::kF8E4M3) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor \"", name, "\" in ", f.path(), " scales no F8_E4M3 tensor"));
      }
      continue;
    }
    if (!expected_name(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor \"", name, "\" in ", f.path(), " is not a tensor of this model"));
    }
    if (info.dtype == DType::kF8E4M3 && !owner.count(name + kScaleSuffix)) {
      return absl::InvalidArgumentError(absl::StrCat("F8_E4M3 tensor \"", name, "\" in ", f.path(),
                                                     " has no ", name, kScaleSuffix, " scale"));
    }
    if (info.dtype != DType::kF8E4M3 && info.dtype != DType::kF32 && info.dtype != DType::kBF16 &&
        info.dtype != DType::kF16) {
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\" in ", f.path(),
                                                     " has dtype ", DTypeName(info.dtype),
                                                     "; expected F32, BF16, F16 or F8_E4M3"));
    }
  }

  // Second pass: read and convert, one tensor at a time.
  for (const auto& [name, fi] : owner) {
    if (EndsWith(name, kScaleSuffix) || (wanted && !wanted(name))) continue;
    const SafetensorsFile& f = files[fi];
    ASSIGN_OR_RETURN(Tensor raw, f.Read(name));
    absl::StatusOr<Tensor> t;
    if (raw.dtype() == DType::kF8E4M3) {
      const std::string scale_name = name + kScaleSuffix;
      ASSIGN_OR_RETURN(Tensor scale, files[owner.at(scale_name)].Read(scale_name));
      t = DequantizeFp8Blocks(raw, scale, block.first, block.second);
    } else {
      t = ConvertToF32(raw);
    }
    if (!t.ok()) return Annotate(t.status(), absl::StrCat("tensor \"", name, "\" in ", f.path()));
    out.tensors.push_back({name, *std::move(t)});
  }
  return out;
}

absl::StatusOr<std::vector<WrittenFile>> WriteHfModelFiles(
    const std::string& dir, const std::vector<NamedTensor>& model, DType dtype,
    int64_t max_shard_bytes, const std::function<void(size_t)>& after_tensor) {
  if (dtype != DType::kF32 && dtype != DType::kBF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("model dtype must be F32 or BF16, got ", DTypeName(dtype)));
  }
  if (max_shard_bytes <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_shard_bytes must be positive, got ", max_shard_bytes));
  }
  // Greedy packing in the caller's order (HF keeps layers together the same way).
  std::vector<std::vector<size_t>> shards(1);
  std::set<std::string> names;
  int64_t in_shard = 0, total = 0;
  for (size_t i = 0; i < model.size(); ++i) {
    const NamedTensor& t = model[i];
    if (!t.tensor.defined() || t.tensor.dtype() != DType::kF32) {
      return absl::InvalidArgumentError(
          absl::StrCat("model tensor \"", t.name, "\" must be a defined F32 tensor"));
    }
    if (!names.insert(t.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("model tensor \"", t.name, "\" appears twice"));
    }
    const bool f32 = dtype == DType::kF32 || KeepsF32(t.name);
    const int64_t bytes = t.tensor.numel() * (f32 ? 4 : 2);
    if (in_shard > 0 && in_shard + bytes > max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(i);
    in_shard += bytes;
    total += bytes;
  }
  std::vector<WrittenFile> written;
  Json weight_map = Json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file = shards.size() == 1 ? std::string(kSingleName)
                                                : absl::StrFormat("model-%05d-of-%05d.safetensors",
                                                                  s + 1, shards.size());
    std::vector<NamedTensor> tensors;
    for (size_t i : shards[s]) {
      const NamedTensor& t = model[i];
      if (dtype == DType::kBF16 && !KeepsF32(t.name)) {
        Tensor bf16(t.tensor.shape(), DType::kBF16);
        FloatsToBf16(t.tensor.data<float>(), static_cast<uint16_t*>(bf16.raw()), t.tensor.numel());
        tensors.push_back({t.name, std::move(bf16)});
      } else {
        tensors.push_back({t.name, t.tensor});
      }
      weight_map[t.name] = file;
    }
    ASSIGN_OR_RETURN(FileDigest d,
                     WriteSafetensorsWithDigest((fs::path(dir) / file).string(), tensors,
                                                {{"format", "pt"}}, after_tensor));
    written.push_back({file, d});
  }
  Json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  ASSIGN_OR_RETURN(FileDigest d,
                   WriteFileDurably((fs::path(dir) / kIndexName).string(), index.dump(2) + "\n"));
  written.push_back({kIndexName, d});
  return written;
}

absl::Status ExportHfDir(const std::string& out_dir, const nlohmann::json& config_json,
                         const std::vector<NamedTensor>& model, DType dtype,
                         int64_t max_shard_bytes) {
  if (!config_json.is_object())
    return absl::InvalidArgumentError("export: config is not a JSON object");
  fs::path out = fs::path(out_dir).lexically_normal();
  if (out.has_filename() == false) out = out.parent_path();
  if (fs::exists(out) && (!fs::is_directory(out) || !fs::is_empty(out))) {
    return absl::AlreadyExistsError(
        absl::StrCat("export: ", out.string(), " exists and is not an empty directory"));
  }
  const fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(parent, ec);
  const fs::path tmp = parent / absl::StrCat(out.filename().string(), ".tmp-", ::getpid());
  fs::remove_all(tmp, ec);
  if (!fs::create_directory(tmp, ec)) {
    return absl::InternalError(
        absl::StrCat("export: cannot create ", tmp.string(), ": ", ec.message()));
  }
  auto write_all = [&]() -> absl::Status {
    Json config = config_json;
    config.erase("quantization_config");
    config["torch_dtype"] = dtype == DType::kBF16 ? "bfloat16" : "float32";
    RETURN_IF_ERROR(
        WriteFileDurably((tmp / "config.json").string(), config.dump(2) + "\n").status());
    RETURN_IF_ERROR(WriteHfModelFiles(tmp.string(), model, dtype, max_shard_bytes).status());
    RETURN_IF_ERROR(FsyncDir(tmp.string()));
    if (::rename(tmp.c_str(), out.c_str()) != 0) {
      return absl::InternalError(absl::StrCat("export: cannot rename ", tmp.string(), " to ",
                                              out.string(), ": ", std::strerror(errno)));
    }
    return FsyncDir(parent.string());
  };
  absl::Status s = write_all();
  if (!s.ok()) fs::remove_all(tmp, ec);
  return s;
}

}  // namespace mt

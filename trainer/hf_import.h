// trainer/hf_import.h: Hugging Face model directories in and out.
//
// In: `train --init-from DIR` reads any DeepseekV3-format directory: config.json plus either
// model.safetensors or model.safetensors.index.json and its shards, in F32/BF16/F16, or
// DeepSeek's FP8 release (F8_E4M3 weights with 128x128 block scales in `*_scale_inv`,
// ecosystem.md §1.3), and hands back fp32 tensors. An index is untrusted input: shard names
// must be plain file names that resolve (realpath) to regular files inside DIR.
// Out: `moetrain export` and the checkpoint writer produce the same layout (ecosystem.md
// §1.4): shards of at most max_shard_bytes, an index, "format": "pt" in every header.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/tensor.h"
#include "nlohmann/json.hpp"
#include "trainer/durable_file.h"
#include "trainer/safetensors.h"

namespace mt {

struct HfModelDir {
  nlohmann::json config;             // config.json as found
  std::vector<NamedTensor> tensors;  // fp32, sorted by name; no *_scale_inv entries
};

// Reads `dir`. `expected_name(name)` says whether the model has a tensor of that name; any
// other tensor is an error naming it and its file. Missing tensors are the caller's check.
// With `wanted`, only the expected tensors it accepts are read (one rank's part of a
// multi-rank checkpoint); every file's header is still checked.
absl::StatusOr<HfModelDir> LoadHfModelDir(
    const std::string& dir, const std::function<bool(const std::string&)>& expected_name,
    const std::function<bool(const std::string&)>& wanted = nullptr);

// Writes a plain Hugging Face directory (config.json, shards, index) atomically: into
// `<out_dir>.tmp-<pid>`, fsync'd, then renamed to out_dir, which must not exist or be empty.
// `dtype` is kF32 or kBF16; "quantization_config" is dropped from the config and
// "torch_dtype" set to match. `model` holds fp32 tensors under HF names.
absl::Status ExportHfDir(const std::string& out_dir, const nlohmann::json& config_json,
                         const std::vector<NamedTensor>& model, DType dtype,
                         int64_t max_shard_bytes);

// ---- Pieces shared with the checkpoint writer and exposed for tests ----------------------

struct WrittenFile {
  std::string name;  // file name inside the directory
  FileDigest digest;
};

// Writes `model` (fp32) into `dir` as model.safetensors, or model-XXXXX-of-YYYYY.safetensors
// when it exceeds max_shard_bytes, plus model.safetensors.index.json (always), each fsync'd.
// With dtype kBF16, tensors that KeepsF32() names stay F32. `after_tensor(k)` is called after
// the k-th tensor's bytes of a shard are written (crash injection). Returns what it wrote.
absl::StatusOr<std::vector<WrittenFile>> WriteHfModelFiles(
    const std::string& dir, const std::vector<NamedTensor>& model, DType dtype,
    int64_t max_shard_bytes, const std::function<void(size_t)>& after_tensor = nullptr);

// Tensors DeepSeek ships in F32 even in low-precision releases: the router's
// e_score_correction_bias moves in steps far below bf16's resolution.
bool KeepsF32(const std::string& name);

// F32/F64/BF16/F16 -> fp32 of the same shape (an F32 input is returned as is, sharing its
// buffer).
absl::StatusOr<Tensor> ConvertToF32(const Tensor& t);

// W[r, c] = e4m3(W[r, c]) * scale_inv[r / block_rows, c / block_cols].
// w: [R, C] F8_E4M3; scale_inv: [ceil(R / block_rows), ceil(C / block_cols)] F32.
absl::StatusOr<Tensor> DequantizeFp8Blocks(const Tensor& w, const Tensor& scale_inv,
                                           int64_t block_rows, int64_t block_cols);

// Reads a file of at most `max_bytes` that must hold one JSON object.
absl::StatusOr<nlohmann::json> ReadJsonObject(const std::string& path, uint64_t max_bytes);

// Checks that `name` from an index is a plain file inside `dir` and returns its real path.
absl::StatusOr<std::string> ConfinedShardPath(const std::string& dir, const std::string& name);

}  // namespace mt

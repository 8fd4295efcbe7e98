// data/hf_tokenizer_internal.h: the pipeline stages of a tokenizer.json, shared by the files
// that implement them (normalizers, pre-tokenizers, BPE model, decoders, post-processors).
//
// Each stage follows Hugging Face's Rust implementation (tokenizers crate); where its
// JavaScript port (@huggingface/tokenizers) differs, the Rust behaviour wins and the file
// says so. Builders take the JSON object and its path ("pre_tokenizer.pretokenizers[2]") so
// an unsupported component is reported as "<file>: <path>: ...".
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

namespace mt::data::hf {

using Json = nlohmann::json;

// Errors carry the JSON path; the loader prefixes the file name.
absl::Status JsonError(const std::string& path, const std::string& message);
// `obj[key]` as a string / bool / integer, or `fallback` when absent or null.
absl::StatusOr<std::string> GetString(const Json& obj, const std::string& path, const char* key,
                                      std::string_view fallback);
absl::StatusOr<bool> GetBool(const Json& obj, const std::string& path, const char* key,
                             bool fallback);
absl::StatusOr<int64_t> GetInt(const Json& obj, const std::string& path, const char* key,
                               int64_t fallback);
// The "type" field of a component.
absl::StatusOr<std::string> GetType(const Json& obj, const std::string& path);

class Regex;  // data/hf_tokenizer_regex.h
// {"String": "..."} (a literal) or {"Regex": "..."}, as Replace and Split spell patterns.
absl::StatusOr<std::unique_ptr<Regex>> BuildPattern(const Json& j, const std::string& path);

// ---- Normalizers: whole-string rewrites of one section of input ----
class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string Normalize(std::string text) const = 0;
};
absl::StatusOr<std::unique_ptr<Normalizer>> BuildNormalizer(const Json& j, const std::string& path);

// ---- Pre-tokenizers: cut a section into pieces ----
struct Span {
  uint32_t begin, end;  // bytes of PieceList::text
  bool at_origin;       // starts at offset 0 of the original input (Metaspace "first")
};
struct PieceList {
  std::string text;         // the section, then whatever rewriting stages appended
  std::vector<Span> spans;  // the current pieces, in order
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void PreTokenize(PieceList* pieces) const = 0;
  // True for a ByteLevel stage: the BPE model then sees raw bytes and maps them itself.
  virtual bool is_byte_level() const { return false; }
};
// `byte_level_last`: set when the pipeline ends with ByteLevel, whose byte-to-character
// mapping is then left to the model (a ByteLevel anywhere else maps in place).
absl::StatusOr<std::unique_ptr<PreTokenizer>> BuildPreTokenizer(const Json& j,
                                                                const std::string& path,
                                                                bool* byte_level_last);

// GPT-2's reversible byte -> printable character table (as UTF-8), and its inverse.
const std::string& ByteToUnicode(uint8_t byte);
// The byte a byte-level character stands for, or -1 when `cp` is not one of them.
int UnicodeToByte(char32_t cp);

// ---- Post-processors: special tokens around one encoded sequence ----
class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual void Process(std::vector<int32_t>* ids) const = 0;
};
absl::StatusOr<std::unique_ptr<PostProcessor>> BuildPostProcessor(const Json& j,
                                                                  const std::string& path);

// ---- Decoders: token strings back to text ----
class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void DecodeChain(std::vector<std::string>* tokens) const = 0;
};
absl::StatusOr<std::unique_ptr<Decoder>> BuildDecoder(const Json& j, const std::string& path);

}  // namespace mt::data::hf

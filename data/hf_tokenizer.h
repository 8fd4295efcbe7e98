// data/hf_tokenizer.h: Hugging Face tokenizer.json (BPE) behind the Tokenizer interface.
//
// Reads DeepSeek-V3's tokenizer.json and its neighbours (Llama, Mistral, Qwen, GPT-2 style):
// added/special tokens, normalizers, pre-tokenizers, a BPE model, post-processors and
// decoders, each as Hugging Face's Rust implementation defines them, and encodes to exactly
// the ids Hugging Face gives (tests/data/hf_tokenizer_parity_*_test.cc check this against
// its JavaScript implementation on the Brown corpus and a file of hard cases).
//
// Input that is not valid UTF-8 is read the way Hugging Face's readers see it: each maximal
// invalid subpart becomes U+FFFD (WHATWG decoding), so Decode(Encode(x)) gives x repaired.
// Encoding is thread-safe; pieces of text are cached across calls and threads.
//
// BOS/EOS come from tokenizer_config.json next to tokenizer.json ("bos_token",
// "eos_token", strings or {"content": ...} objects; special_tokens_map.json fills what it
// lacks, as in transformers); the EOS is required, since `prepare` ends every document
// with it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "data/tokenizer.h"

namespace mt::data {

namespace hf {
class Impl;
}  // namespace hf

class HfTokenizer : public Tokenizer {
 public:
  // `path`: a tokenizer.json file, or a directory holding tokenizer.json (and, beside it,
  // tokenizer_config.json). Errors name the file and the JSON path of what is unsupported.
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> Load(const std::string& path);
  // From JSON text; `config_json` may be empty (then there is no BOS, and EOS is required
  // only if `require_eos`). `name` stands for the file in error messages.
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> FromJson(std::string_view tokenizer_json,
                                                               std::string_view config_json,
                                                               const std::string& name,
                                                               bool require_eos = true);
  ~HfTokenizer() override;

  // Without the post-processor's special tokens (as `prepare` wants: documents end in EOS).
  std::vector<int32_t> Encode(std::string_view text) const override;
  // add_special_tokens: apply the post-processor (e.g. Llama's leading <s>), as
  // Hugging Face's encode(text, add_special_tokens=True) does.
  std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const;
  // Keeps special tokens, like Hugging Face's decode(ids) default.
  std::string Decode(const std::vector<int32_t>& ids) const override;
  std::string Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const;

  int64_t vocab_size() const override;              // highest id + 1, added tokens included
  int32_t bos_id() const override;                  // -1 when the model has none
  int32_t eos_id() const override;                  // -1 only from FromJson(require_eos = false)
  int32_t unk_id() const;                           // -1 when the model has none
  std::string name() const override;                // "huggingface:<path>"
  int32_t TokenToId(std::string_view token) const;  // added tokens first; -1 when absent
  std::string IdToToken(int32_t id) const;          // "" when the id is not defined

  // The files this tokenizer was read from: tokenizer.json, then tokenizer_config.json and
  // special_tokens_map.json when they exist (what `prepare` copies next to a dataset).
  const std::vector<std::string>& files() const { return files_; }

 private:
  HfTokenizer(std::unique_ptr<hf::Impl> impl, std::string name, std::vector<std::string> files);
  std::unique_ptr<hf::Impl> impl_;
  std::string name_;
  std::vector<std::string> files_;
};

}  // namespace mt::data

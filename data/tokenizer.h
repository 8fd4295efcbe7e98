// data/tokenizer.h: text <-> token ids behind one interface.
//
// `prepare` and the trainer's sampling talk to a Tokenizer and never to a library. Today
// the only implementation is SentencePiece (trained by `prepare` or supplied); Hugging Face
// tokenizer.json BPE for Hub models is meant to slot in behind the same interface.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mt::data {

namespace spm {
class Model;
}  // namespace spm

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Both are thread-safe: `prepare` encodes documents on several threads at once.
  virtual std::vector<int32_t> Encode(std::string_view text) const = 0;
  virtual std::string Decode(const std::vector<int32_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;
  // The end-of-document token `prepare` appends to every document (Megatron's EOD).
  virtual int32_t eos_id() const = 0;
  virtual std::string name() const = 0;
};

class SentencePieceTokenizer : public Tokenizer {
 public:
  // Loads a SentencePiece .model file; a clear error if it is missing or not a model.
  static absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> Load(const std::string& path);
  ~SentencePieceTokenizer() override;

  std::vector<int32_t> Encode(std::string_view text) const override;
  std::string Decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override;
  int32_t bos_id() const override;
  int32_t eos_id() const override;
  int32_t unk_id() const;
  std::string name() const override;
  std::string IdToPiece(int32_t id) const;

 private:
  SentencePieceTokenizer(std::string path, std::unique_ptr<spm::Model> model);
  std::string path_;
  std::unique_ptr<spm::Model> model_;
};

struct SentencePieceTrainOptions {
  int64_t vocab_size = 4096;
  int num_threads = 2;
  // SentencePiece samples this many sentences when given more. One million lines of prose
  // train a 4k-32k BPE in about a minute on two cores; Brown (57k lines) takes seconds.
  int64_t input_sentence_size = 1000000;
  uint32_t seed = 1234;
};

// Trains a BPE SentencePiece model on `sentences` (lines of text; longer than 4,192 bytes
// are ignored by SentencePiece, so callers split them) and writes it to model_path.
// Byte fallback is on (no token is ever unknown), unk=0, bos=1, eos=2, no pad.
absl::Status TrainSentencePiece(const std::vector<std::string>& sentences,
                                const SentencePieceTrainOptions& options,
                                const std::string& model_path);

}  // namespace mt::data

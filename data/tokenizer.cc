// data/tokenizer.cc: the SentencePiece tokenizer and its trainer.
#include "data/tokenizer.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "data/spm_bridge.h"
#include "kernels/status.h"

namespace mt::data {

SentencePieceTokenizer::SentencePieceTokenizer(std::string path, std::unique_ptr<spm::Model> model)
    : path_(std::move(path)), model_(std::move(model)) {}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> SentencePieceTokenizer::Load(
    const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open SentencePiece model"));
  }
  std::ostringstream bytes;
  bytes << in.rdbuf();
  std::string error;
  std::unique_ptr<spm::Model> model = spm::LoadFromBytes(bytes.str(), &error);
  if (model == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a valid SentencePiece .model file (", error, ")"));
  }
  if (model->eos_id() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": the SentencePiece model has no </s> (eos) piece, needed as end-of-document"));
  }
  return std::unique_ptr<SentencePieceTokenizer>(
      new SentencePieceTokenizer(path, std::move(model)));
}

std::vector<int32_t> SentencePieceTokenizer::Encode(std::string_view text) const {
  return model_->Encode(text);
}
std::string SentencePieceTokenizer::Decode(const std::vector<int32_t>& ids) const {
  return model_->Decode(ids);
}
int64_t SentencePieceTokenizer::vocab_size() const { return model_->piece_size(); }
int32_t SentencePieceTokenizer::bos_id() const { return model_->bos_id(); }
int32_t SentencePieceTokenizer::eos_id() const { return model_->eos_id(); }
int32_t SentencePieceTokenizer::unk_id() const { return model_->unk_id(); }
std::string SentencePieceTokenizer::name() const { return absl::StrCat("sentencepiece:", path_); }
std::string SentencePieceTokenizer::IdToPiece(int32_t id) const { return model_->IdToPiece(id); }

absl::Status TrainSentencePiece(const std::vector<std::string>& sentences,
                                const SentencePieceTrainOptions& options,
                                const std::string& model_path) {
  if (sentences.empty()) {
    return absl::InvalidArgumentError("tokenizer training: no text to train on");
  }
  const std::unordered_map<std::string, std::string> flags = {
      {"model_type", "bpe"},
      {"vocab_size", absl::StrCat(options.vocab_size)},
      {"byte_fallback", "true"},
      {"num_threads", absl::StrCat(options.num_threads)},
      {"input_sentence_size", absl::StrCat(options.input_sentence_size)},
      {"shuffle_input_sentence", "true"},
      {"character_coverage", "0.9995"},
      {"split_digits", "true"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
  };
  size_t next_index = 0;
  std::function<bool(std::string*)> next = [&](std::string* out) {
    if (next_index >= sentences.size()) return false;
    *out = sentences[next_index++];
    return true;
  };
  std::string model_bytes, error;
  if (!spm::Train(flags, options.seed, next, &model_bytes, &error)) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer training (SentencePiece BPE, vocab ",
                                                   options.vocab_size, "): ", error));
  }
  const std::string tmp = model_path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(model_bytes.data(), static_cast<std::streamsize>(model_bytes.size()));
    if (!out) return absl::InternalError(absl::StrCat(tmp, ": cannot write tokenizer model"));
  }
  if (std::rename(tmp.c_str(), model_path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat(model_path, ": cannot rename tokenizer model"));
  }
  return absl::OkStatus();
}

}  // namespace mt::data

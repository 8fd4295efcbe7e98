// data/tokenizer_factory.cc: choosing the tokenizer implementation by the path's form.
#include "data/tokenizer_factory.h"

#include <filesystem>

#include "data/hf_tokenizer.h"

namespace mt::data {

TokenizerKind TokenizerKindOf(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return TokenizerKind::kHuggingFace;
  if (std::filesystem::path(path).extension() == ".json") return TokenizerKind::kHuggingFace;
  return TokenizerKind::kSentencePiece;
}

const char* TokenizerKindName(TokenizerKind kind) {
  return kind == TokenizerKind::kHuggingFace ? "huggingface" : "sentencepiece";
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path) {
  if (TokenizerKindOf(path) == TokenizerKind::kHuggingFace) {
    absl::StatusOr<std::unique_ptr<HfTokenizer>> hf = HfTokenizer::Load(path);
    if (!hf.ok()) return hf.status();
    return std::unique_ptr<Tokenizer>(std::move(*hf));
  }
  absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> spm = SentencePieceTokenizer::Load(path);
  if (!spm.ok()) return spm.status();
  return std::unique_ptr<Tokenizer>(std::move(*spm));
}

int32_t TokenizerUnkId(const Tokenizer& tokenizer) {
  if (const auto* spm = dynamic_cast<const SentencePieceTokenizer*>(&tokenizer)) {
    return spm->unk_id();
  }
  if (const auto* hf = dynamic_cast<const HfTokenizer*>(&tokenizer)) return hf->unk_id();
  return -1;
}

}  // namespace mt::data

// data/tokenizer_factory.h: one entry point that loads any tokenizer moetrain understands.
//
//   a directory, or a file ending in .json   -> Hugging Face tokenizer.json (HfTokenizer),
//                                               with tokenizer_config.json beside it
//   anything else                            -> a SentencePiece .model
//
// `prepare`, `train` and `generate` call LoadTokenizer with what the user or the dataset
// sidecar names, so a Hub model directory and a SentencePiece model work alike.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/tokenizer.h"

namespace mt::data {

enum class TokenizerKind { kSentencePiece, kHuggingFace };

// Which kind `path` names, by its form alone (no file is read).
TokenizerKind TokenizerKindOf(const std::string& path);
const char* TokenizerKindName(TokenizerKind kind);  // "sentencepiece" / "huggingface"

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path);

// The unknown-token id of either kind, -1 when the tokenizer has none.
int32_t TokenizerUnkId(const Tokenizer& tokenizer);

}  // namespace mt::data

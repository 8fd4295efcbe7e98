// trainer/tokenizer_files.h: which files make up a tokenizer, so checkpoints and exports
// carry the one the run trained with, and a model directory's tokenizer can be found.
//
// A SentencePiece model is one file (tokenizer.model); a Hugging Face tokenizer is
// tokenizer.json plus, when present, tokenizer_config.json and special_tokens_map.json
// (BOS/EOS), under those names, as in every Hub model directory.
#pragma once

#include <map>
#include <optional>
#include <string>

namespace mt {

// Name inside a model directory -> source path, for the tokenizer at `path` (a .model file,
// a tokenizer.json file or a directory holding one).
std::map<std::string, std::string> TokenizerFiles(const std::string& path);

// The tokenizer a model directory carries (the directory itself for a Hugging Face
// tokenizer.json, else DIR/tokenizer.model), or nullopt when it has none.
std::optional<std::string> TokenizerInDirectory(const std::string& dir);

}  // namespace mt

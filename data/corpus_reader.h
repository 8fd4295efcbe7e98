// data/corpus_reader.h: turns the user's input files into a stream of documents.
//
// Inputs are paths or glob(3) patterns. A file is read as plain text (one document per file,
// or one per blank-line-separated block), JSON lines (one document per line, text under a
// key; chosen by the .jsonl extension unless a format is forced), or a tagged Brown corpus
// file (one document). Files are streamed in chunks and hashed as they are read, so the
// sidecar can record exactly which bytes a dataset came from.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mt::data {

enum class InputFormat { kAuto, kText, kJsonl, kBrown };

absl::StatusOr<InputFormat> ParseInputFormat(const std::string& name);
const char* InputFormatName(InputFormat format);

struct CorpusOptions {
  InputFormat format = InputFormat::kAuto;
  bool split_blank_lines = false;
  std::string json_key = "text";
};

struct SourceFile {
  std::string path;
  int64_t bytes = 0;
  std::string sha256;
};

// Expands paths and glob patterns in order (each pattern's matches sorted), dropping
// repeats. A pattern that matches nothing or names a non-file is an error.
absl::StatusOr<std::vector<std::string>> ExpandInputs(const std::vector<std::string>& patterns);

// Calls `fn` with every non-empty document of `files`, in order. Text documents are
// stripped of leading and trailing whitespace; a document that is only whitespace is
// skipped, as Megatron skips empty documents. If `sources` is not null it receives each
// file's size and SHA-256.
absl::Status ForEachDocument(const std::vector<std::string>& files, const CorpusOptions& options,
                             const std::function<absl::Status(std::string&&)>& fn,
                             std::vector<SourceFile>* sources);

}  // namespace mt::data

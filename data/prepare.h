// data/prepare.h: `moetrain prepare`, text or JSONL in, Megatron indexed datasets out.
//
//   moetrain prepare --input PATH... --output PREFIX [--tokenizer TOKENIZER | --vocab-size N]
//                    [--json-key K] [--val-fraction F] [--split-blank-lines]
//                    [--format text|jsonl|brown] [--seed S]
//
// writes PREFIX-train.bin/.idx, PREFIX-val.bin/.idx (whole documents, chosen from the seed),
// the tokenizer (PREFIX.model: SentencePiece, trained here or copied; or PREFIX-tokenizer/:
// a copy of a Hugging Face tokenizer.json and its tokenizer_config.json) and PREFIX.json
// (tokenizer, vocab, special ids, per-split counts, SHA-256 of the sources, validation
// unigram entropy).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/corpus_reader.h"

namespace mt::data {

struct PrepareOptions {
  std::vector<std::string> inputs;  // paths or glob patterns
  std::string output;               // PREFIX
  std::string tokenizer;            // a .model, tokenizer.json or its directory; empty: train
  int64_t vocab_size = 4096;        // when training
  double val_fraction = 0.01;
  uint64_t seed = 1234;
  CorpusOptions corpus;
  bool progress = true;  // the \r progress line on stderr
};

struct SplitStats {
  int64_t documents = 0;
  int64_t tokens = 0;
};

struct PrepareResult {
  int64_t documents = 0;   // non-empty input documents
  int64_t text_bytes = 0;  // their UTF-8 bytes
  SplitStats train, val;
  int64_t vocab_size = 0;
  double val_unigram_entropy_nats = 0;
  double tokenizer_seconds = 0;  // training or copying the tokenizer
  double encode_seconds = 0;     // the encoding pass alone
  double total_seconds = 0;
};

// `args` are the words after "prepare". Usage errors name the option.
absl::StatusOr<PrepareOptions> ParsePrepareArgs(const std::vector<std::string>& args);
std::string PrepareUsage();

// Runs the whole preparation and writes the five output files.
absl::StatusOr<PrepareResult> RunPrepare(const PrepareOptions& options);

// The documents (by input order) that go to the validation split: exactly
// round(fraction * n), at least 1 and at most n - 1 when fraction > 0 and n >= 2, sorted.
std::vector<int64_t> ChooseValidationDocuments(int64_t n, double fraction, uint64_t seed);

// The `moetrain prepare` entry point: argv[0] is the command's own name and is skipped.
// Prints progress and a summary; returns 0 on success, 1 on error, 2 on a usage error.
int RunPrepareCommand(int argc, char** argv);

}  // namespace mt::data

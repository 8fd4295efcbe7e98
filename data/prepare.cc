// data/prepare.cc: the two passes of `moetrain prepare`.
//
// Pass 1 streams the inputs once to count documents, hash the sources and (when training a
// tokenizer) reservoir-sample its training lines. Pass 2 streams them again, encodes batches
// of documents on all cores, and writes them in input order to the train or validation
// dataset. Nothing holds the whole corpus in memory.
#include "data/prepare.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "data/hf_tokenizer.h"
#include "data/indexed_dataset.h"
#include "data/sha256.h"
#include "data/tokenizer.h"
#include "data/tokenizer_factory.h"
#include "kernels/status.h"

namespace mt::data {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// A uniform integer in [0, bound) by rejection, the same on every platform (the standard
// distributions are implementation-defined).
uint64_t UniformBelow(std::mt19937_64& rng, uint64_t bound) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  uint64_t r;
  do {
    r = rng();
  } while (r >= limit);
  return r % bound;
}

std::string WithCommas(int64_t v) {
  std::string digits = absl::StrCat(v < 0 ? -v : v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return v < 0 ? "-" + out : out;
}

std::string HumanRate(double per_second) {
  if (per_second >= 1e6) return absl::StrFormat("%.2fM", per_second / 1e6);
  if (per_second >= 1e3) return absl::StrFormat("%.1fk", per_second / 1e3);
  return absl::StrFormat("%.0f", per_second);
}

// Lines for tokenizer training: SentencePiece ignores lines over 4,192 bytes, so long ones
// are cut at a space (or at a UTF-8 character boundary when there is none).
void SplitForTraining(std::string_view doc, const std::function<void(std::string_view)>& emit) {
  constexpr size_t kMax = 4000;
  size_t begin = 0;
  while (begin < doc.size()) {
    size_t end = doc.find('\n', begin);
    if (end == std::string_view::npos) end = doc.size();
    std::string_view line = doc.substr(begin, end - begin);
    while (line.size() > kMax) {
      size_t cut = line.rfind(' ', kMax);
      if (cut == std::string_view::npos || cut == 0) {
        cut = kMax;
        while (cut > 0 && (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80) --cut;
      }
      emit(line.substr(0, cut));
      line.remove_prefix(cut);
    }
    if (line.find_first_not_of(" \t\r") != std::string_view::npos) emit(line);
    begin = end + 1;
  }
}

// Progress on stderr: a \r-updated line on a terminal, a plain line every 10 s in a log.
class Progress {
 public:
  Progress(bool enabled, int64_t total_docs)
      : enabled_(enabled), tty_(::isatty(2) == 1), total_(total_docs) {}
  // An error may end the pass early: do not leave it to print over the progress line.
  ~Progress() {
    if (line_open_) std::fputc('\n', stderr);
  }
  void Update(int64_t docs, int64_t tokens, bool force = false) {
    if (!enabled_) return;
    const double now = SecondsSince(t0_);
    if (!force && now - last_ < (tty_ ? 0.25 : 10.0)) return;
    if (force && docs == last_docs_) return;  // already shown
    last_ = now;
    last_docs_ = docs;
    line_open_ = tty_;
    const double dt = std::max(now, 1e-9);
    std::fprintf(stderr,
                 "%sencoding: %s/%s documents (%.0f%%), %s tokens, %s docs/s, %s tokens/s%s",
                 tty_ ? "\r" : "", WithCommas(docs).c_str(), WithCommas(total_).c_str(),
                 total_ > 0 ? 100.0 * docs / total_ : 100.0, WithCommas(tokens).c_str(),
                 HumanRate(docs / dt).c_str(), HumanRate(tokens / dt).c_str(), tty_ ? "  " : "\n");
    std::fflush(stderr);
  }
  void Finish(int64_t docs, int64_t tokens) {
    if (!enabled_) return;
    Update(docs, tokens, /*force=*/true);
    if (line_open_) std::fputc('\n', stderr);
    line_open_ = false;
  }

 private:
  bool enabled_;
  bool tty_;
  int64_t total_;
  Clock::time_point t0_ = Clock::now();
  double last_ = -1e9;
  int64_t last_docs_ = -1;
  bool line_open_ = false;  // a \r line is on the terminal without its newline
};

absl::Status WriteFileAtomically(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) return absl::InternalError(absl::StrCat(tmp, ": cannot write"));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat(path, ": cannot rename into place"));
  }
  return absl::OkStatus();
}

// Where the dataset's own copy of its tokenizer lives: PREFIX.model (SentencePiece) or the
// directory PREFIX-tokenizer holding tokenizer.json and tokenizer_config.json.
std::string TokenizerCopyPath(const PrepareOptions& options) {
  return !options.tokenizer.empty() &&
                 TokenizerKindOf(options.tokenizer) == TokenizerKind::kHuggingFace
             ? options.output + "-tokenizer"
             : options.output + ".model";
}

// Copies a Hugging Face tokenizer's files into the directory `copy`.
absl::Status CopyHfTokenizer(const std::string& source, const std::string& copy) {
  ASSIGN_OR_RETURN(std::unique_ptr<HfTokenizer> tok, HfTokenizer::Load(source));
  std::error_code ec;
  std::filesystem::create_directories(copy, ec);
  if (ec) return absl::InternalError(absl::StrCat(copy, ": ", ec.message()));
  for (const std::string& file : tok->files()) {
    const std::string target = copy + "/" + std::filesystem::path(file).filename().string();
    if (std::filesystem::equivalent(file, target, ec)) continue;
    std::ifstream in(file, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) return absl::NotFoundError(absl::StrCat(file, ": cannot read"));
    RETURN_IF_ERROR(WriteFileAtomically(target, bytes));
  }
  return absl::OkStatus();
}

// Trains a tokenizer on the corpus, or copies the given one, to TokenizerCopyPath().
absl::Status MakeTokenizer(const PrepareOptions& options, const std::vector<std::string>& lines,
                           const std::string& model_path) {
  if (options.tokenizer.empty()) {
    SentencePieceTrainOptions train;
    train.vocab_size = options.vocab_size;
    train.num_threads = std::max(1, omp_get_max_threads());
    train.seed = static_cast<uint32_t>(options.seed);
    return TrainSentencePiece(lines, train, model_path);
  }
  if (TokenizerKindOf(options.tokenizer) == TokenizerKind::kHuggingFace) {
    return CopyHfTokenizer(options.tokenizer, model_path);
  }
  std::error_code ec;
  if (std::filesystem::equivalent(options.tokenizer, model_path, ec)) return absl::OkStatus();
  std::ifstream in(options.tokenizer, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) {
    return absl::NotFoundError(absl::StrCat(options.tokenizer, ": cannot read"));
  }
  return WriteFileAtomically(model_path, bytes);
}

double UnigramEntropyNats(const std::vector<int64_t>& counts) {
  double total = 0, sum_c_log_c = 0;
  for (int64_t c : counts) {
    if (c == 0) continue;
    total += c;
    sum_c_log_c += c * std::log(static_cast<double>(c));
  }
  return total > 0 ? std::log(total) - sum_c_log_c / total : 0.0;
}

}  // namespace

std::vector<int64_t> ChooseValidationDocuments(int64_t n, double fraction, uint64_t seed) {
  if (fraction <= 0 || n < 2) return {};
  const int64_t k = std::clamp<int64_t>(std::llround(fraction * n), 1, n - 1);
  // Floyd's sampling: k distinct indices with O(k) memory.
  std::mt19937_64 rng(seed ^ 0x76616c6964617465ULL);
  std::unordered_set<int64_t> chosen;
  for (int64_t j = n - k; j < n; ++j) {
    const int64_t t = static_cast<int64_t>(UniformBelow(rng, static_cast<uint64_t>(j) + 1));
    if (!chosen.insert(t).second) chosen.insert(j);
  }
  std::vector<int64_t> out(chosen.begin(), chosen.end());
  std::sort(out.begin(), out.end());
  return out;
}

absl::StatusOr<PrepareResult> RunPrepare(const PrepareOptions& options) {
  const Clock::time_point t_start = Clock::now();
  PrepareResult result;
  ASSIGN_OR_RETURN(const std::vector<std::string> files, ExpandInputs(options.inputs));
  const std::filesystem::path parent = std::filesystem::path(options.output).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    if (ec) return absl::InternalError(absl::StrCat(parent.string(), ": ", ec.message()));
  }
  const std::string model_path = TokenizerCopyPath(options);
  if (!options.tokenizer.empty()) {
    // Fail on a bad model before reading a terabyte of input.
    RETURN_IF_ERROR(LoadTokenizer(options.tokenizer).status());
  }

  // Pass 1: count, hash, sample tokenizer training lines.
  const bool train_tokenizer = options.tokenizer.empty();
  const int64_t line_cap = SentencePieceTrainOptions().input_sentence_size;
  std::vector<std::string> lines;
  int64_t lines_seen = 0;
  std::mt19937_64 reservoir_rng(options.seed ^ 0x746f6b656e697a65ULL);
  std::vector<SourceFile> sources;
  RETURN_IF_ERROR(ForEachDocument(
      files, options.corpus,
      [&](std::string&& doc) {
        ++result.documents;
        result.text_bytes += static_cast<int64_t>(doc.size());
        if (train_tokenizer) {
          SplitForTraining(doc, [&](std::string_view line) {
            if (lines_seen < line_cap) {
              lines.emplace_back(line);
            } else {
              const uint64_t j = UniformBelow(reservoir_rng, lines_seen + 1);
              if (j < static_cast<uint64_t>(line_cap)) lines[j] = std::string(line);
            }
            ++lines_seen;
          });
        }
        return absl::OkStatus();
      },
      &sources));
  if (result.documents == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--input: the ", files.size(), " input file(s) hold no non-empty document"));
  }

  const Clock::time_point t_tok = Clock::now();
  if (options.progress) {
    std::fprintf(stderr, "read %s documents (%s bytes) from %zu file(s)\n",
                 WithCommas(result.documents).c_str(), WithCommas(result.text_bytes).c_str(),
                 files.size());
    if (train_tokenizer) {
      std::fprintf(stderr, "training a SentencePiece BPE tokenizer, vocab %s, on %s lines...\n",
                   WithCommas(options.vocab_size).c_str(), WithCommas(lines.size()).c_str());
    }
  }
  RETURN_IF_ERROR(MakeTokenizer(options, lines, model_path));
  lines = {};
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, LoadTokenizer(model_path));
  result.tokenizer_seconds = SecondsSince(t_tok);
  result.vocab_size = tokenizer->vocab_size();
  const int32_t eod = tokenizer->eos_id();

  // Pass 2: encode in batches on all threads, write in input order.
  const std::vector<int64_t> val_docs =
      ChooseValidationDocuments(result.documents, options.val_fraction, options.seed);
  const TokenDType dtype = OptimalTokenDType(result.vocab_size);
  ASSIGN_OR_RETURN(auto train_writer,
                   IndexedDatasetWriter::Create(options.output + "-train", dtype));
  ASSIGN_OR_RETURN(auto val_writer, IndexedDatasetWriter::Create(options.output + "-val", dtype));
  std::vector<int64_t> val_counts(result.vocab_size, 0);
  Progress progress(options.progress, result.documents);
  const Clock::time_point t_encode = Clock::now();
  int64_t ordinal = 0, tokens_written = 0;
  size_t next_val = 0;
  std::vector<std::string> batch;
  std::vector<std::vector<int32_t>> encoded;
  int64_t batch_bytes = 0;
  auto flush = [&]() -> absl::Status {
    encoded.resize(batch.size());
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t i = 0; i < batch.size(); ++i) {
      encoded[i] = tokenizer->Encode(batch[i]);
      // Megatron's --append-eod: every non-empty document ends with the EOD token.
      if (!encoded[i].empty()) encoded[i].push_back(eod);
    }
    for (size_t i = 0; i < batch.size(); ++i, ++ordinal) {
      const bool is_val = next_val < val_docs.size() && val_docs[next_val] == ordinal;
      if (is_val) ++next_val;
      if (encoded[i].empty()) continue;  // normalised to nothing: skipped, as Megatron does
      SplitStats& stats = is_val ? result.val : result.train;
      RETURN_IF_ERROR((is_val ? val_writer : train_writer)->AddDocument(encoded[i]));
      ++stats.documents;
      stats.tokens += static_cast<int64_t>(encoded[i].size());
      tokens_written += static_cast<int64_t>(encoded[i].size());
      if (is_val) {
        for (int32_t id : encoded[i]) ++val_counts[id];
      }
    }
    batch.clear();
    batch_bytes = 0;
    progress.Update(ordinal, tokens_written);
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(ForEachDocument(
      files, options.corpus,
      [&](std::string&& doc) -> absl::Status {
        batch_bytes += static_cast<int64_t>(doc.size());
        batch.push_back(std::move(doc));
        // Small batches keep the progress line moving; a parallel region costs microseconds.
        if (batch.size() >= 1024 || batch_bytes >= (1 << 20)) return flush();
        return absl::OkStatus();
      },
      nullptr));
  RETURN_IF_ERROR(flush());
  progress.Finish(ordinal, tokens_written);
  if (ordinal != result.documents) {
    return absl::DataLossError(
        absl::StrCat("the inputs changed while being read: ", result.documents,
                     " documents on the first pass, ", ordinal, " on the second"));
  }
  RETURN_IF_ERROR(train_writer->Finalize());
  RETURN_IF_ERROR(val_writer->Finalize());
  result.encode_seconds = SecondsSince(t_encode);
  result.val_unigram_entropy_nats = UnigramEntropyNats(val_counts);
  // Read back what we wrote: the reader's validation is the format's contract.
  RETURN_IF_ERROR(IndexedDataset::Open(options.output + "-train").status());
  RETURN_IF_ERROR(IndexedDataset::Open(options.output + "-val").status());

  nlohmann::json source_list = nlohmann::json::array();
  Sha256 all_sources;
  for (const SourceFile& s : sources) {
    source_list.push_back({{"path", s.path}, {"bytes", s.bytes}, {"sha256", s.sha256}});
    all_sources.Update(absl::StrCat(s.sha256, "\n"));
  }
  const std::string base = std::filesystem::path(options.output).filename().string();
  nlohmann::json tokenizer_entry;
  if (const auto* hf = dynamic_cast<const HfTokenizer*>(tokenizer.get())) {
    nlohmann::json files = nlohmann::json::array();
    for (const std::string& f : hf->files()) {
      ASSIGN_OR_RETURN(const std::string sha, Sha256File(f));
      files.push_back({{"name", std::filesystem::path(f).filename().string()}, {"sha256", sha}});
    }
    tokenizer_entry = {{"type", "huggingface"},
                       {"path", base + "-tokenizer"},
                       {"files", files},
                       {"source", options.tokenizer}};
  } else {
    ASSIGN_OR_RETURN(const std::string model_sha, Sha256File(model_path));
    tokenizer_entry = {
        {"type", "sentencepiece"}, {"model", base + ".model"}, {"sha256", model_sha}};
  }
  const nlohmann::json sidecar = {
      {"format", "megatron-indexed-dataset"},
      {"dtype", TokenDTypeName(dtype)},
      {"tokenizer", tokenizer_entry},
      {"vocab_size", result.vocab_size},
      {"unk_id", TokenizerUnkId(*tokenizer)},
      {"bos_id", tokenizer->bos_id()},
      {"eos_id", eod},
      {"eod_id", eod},
      {"splits",
       {{"train",
         {{"prefix", base + "-train"},
          {"documents", result.train.documents},
          {"tokens", result.train.tokens}}},
        {"val",
         {{"prefix", base + "-val"},
          {"documents", result.val.documents},
          {"tokens", result.val.tokens}}}}},
      {"documents", result.documents},
      {"text_bytes", result.text_bytes},
      {"val_fraction", options.val_fraction},
      {"seed", options.seed},
      {"input_format", InputFormatName(options.corpus.format)},
      {"json_key", options.corpus.json_key},
      {"split_blank_lines", options.corpus.split_blank_lines},
      // SHA-256 of the sources' hex digests, one per line in input order: content only, so
      // the same files moved elsewhere hash the same.
      {"sources_sha256", all_sources.HexDigest()},
      {"sources", source_list},
      {"val_unigram_entropy_nats", result.val_unigram_entropy_nats},
      {"val_unigram_entropy_bits", result.val_unigram_entropy_nats / std::log(2.0)},
  };
  RETURN_IF_ERROR(WriteFileAtomically(options.output + ".json", sidecar.dump(2) + "\n"));
  result.total_seconds = SecondsSince(t_start);
  return result;
}

int RunPrepareCommand(int argc, char** argv) {
  std::vector<std::string> args(argv + std::min(argc, 1), argv + argc);
  for (const std::string& a : args) {
    if (a == "--help" || a == "-h") {
      std::fputs(PrepareUsage().c_str(), stdout);
      return 0;
    }
  }
  absl::StatusOr<PrepareOptions> options = ParsePrepareArgs(args);
  if (!options.ok()) {
    std::fprintf(stderr, "moetrain prepare: %s (--help for usage)\n",
                 std::string(options.status().message()).c_str());
    return 2;
  }
  absl::StatusOr<PrepareResult> r = RunPrepare(*options);
  if (!r.ok()) {
    std::fprintf(stderr, "moetrain prepare: error: %s\n",
                 std::string(r.status().message()).c_str());
    return 1;
  }
  const std::string& out = options->output;
  std::printf("prepare: %s documents, %.2f MB of text; tokenizer %s in %.1f s (vocab %s)\n",
              WithCommas(r->documents).c_str(), r->text_bytes / 1e6,
              options->tokenizer.empty() ? "trained (SentencePiece BPE)" : "loaded",
              r->tokenizer_seconds, WithCommas(r->vocab_size).c_str());
  std::printf("  train: %s documents, %s tokens -> %s-train.{bin,idx}\n",
              WithCommas(r->train.documents).c_str(), WithCommas(r->train.tokens).c_str(),
              out.c_str());
  std::printf("  val:   %s documents, %s tokens -> %s-val.{bin,idx}\n",
              WithCommas(r->val.documents).c_str(), WithCommas(r->val.tokens).c_str(), out.c_str());
  const int64_t tokens = r->train.tokens + r->val.tokens;
  std::printf("  encoded %s tokens in %.2f s: %s tokens/s (threads: %d); total %.1f s\n",
              WithCommas(tokens).c_str(), r->encode_seconds,
              HumanRate(tokens / std::max(r->encode_seconds, 1e-9)).c_str(), omp_get_max_threads(),
              r->total_seconds);
  std::printf("  tokenizer %s, sidecar %s.json\n", TokenizerCopyPath(*options).c_str(),
              out.c_str());
  std::printf("validation unigram entropy: %.4f nats/token (%.4f bits)\n",
              r->val_unigram_entropy_nats, r->val_unigram_entropy_nats / std::log(2.0));
  return 0;
}

}  // namespace mt::data

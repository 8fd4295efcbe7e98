// tests/data/prepare_test.cc: `moetrain prepare` end to end on a small generated corpus.
#include "data/prepare.h"

#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_replace.h"
#include "data/indexed_dataset.h"
#include "data/sha256.h"
#include "data/tokenizer.h"
#include "tests/data/test_util.h"

namespace mt::data {
namespace {

using testing::ReadBytes;
using testing::TempDir;
using testing::WriteBytes;

std::string RandomText(std::mt19937& rng, int words) {
  static const char* kWords[] = {
      "the",   "cat",   "sat",  "on",    "a",      "mat",   "and",   "dog",   "ran",   "far",
      "away",  "from",  "home", "while", "birds",  "sang",  "in",    "trees", "quiet", "river",
      "flows", "under", "old",  "stone", "bridge", "zebra", "jumps", "over",  "lazy",  "fox"};
  std::string s;
  for (int i = 0; i < words; ++i) {
    if (i > 0) s += ' ';
    s += kWords[rng() % (sizeof(kWords) / sizeof(kWords[0]))];
  }
  return s;
}

// Writes the corpus and returns its documents in the order prepare reads them:
// blocks.txt (3 blocks), doc_00..19.txt, then docs.jsonl (one blank text skipped).
std::vector<std::string> WriteCorpus(const TempDir& dir) {
  std::mt19937 rng(7);
  std::vector<std::string> docs;
  std::string blocks;
  for (int b = 0; b < 3; ++b) {
    const std::string text = RandomText(rng, 30 + b);
    blocks += (b ? "\n\n  \n" : "") + text;
    docs.push_back(text);
  }
  std::filesystem::create_directories(dir / "corpus");
  WriteBytes(dir / "corpus/blocks.txt", blocks + "\n");
  for (int i = 0; i < 20; ++i) {
    const std::string text = RandomText(rng, 20 + 7 * i);
    char name[32];
    std::snprintf(name, sizeof(name), "corpus/doc_%02d.txt", i);
    WriteBytes(dir / name, "\n" + text + "\n\n");
    docs.push_back(text);
  }
  std::string jsonl;
  for (int i = 0; i < 30; ++i) {
    const std::string text = i == 4 ? "   " : RandomText(rng, 10 + i);
    jsonl += nlohmann::json{{"id", i}, {"body", text}}.dump() + "\n";
    if (i == 9) jsonl += "\n";  // blank lines are ignored
    if (i != 4) docs.push_back(text);
  }
  WriteBytes(dir / "corpus/docs.jsonl", jsonl);
  return docs;
}

PrepareOptions Options(const TempDir& dir, const std::string& out, uint64_t seed) {
  PrepareOptions o;
  o.inputs = {dir / "corpus/*.txt", dir / "corpus/docs.jsonl"};
  o.output = dir / out;
  o.vocab_size = 300;
  o.val_fraction = 0.1;
  o.seed = seed;
  o.corpus.split_blank_lines = true;
  o.corpus.json_key = "body";
  o.progress = false;
  return o;
}

// Every sequence of a dataset as token lists.
std::vector<std::vector<int32_t>> Sequences(const IndexedDataset& ds) {
  std::vector<std::vector<int32_t>> out;
  for (int64_t i = 0; i < ds.num_sequences(); ++i) {
    out.emplace_back(ds.sequence_length(i));
    ds.ReadTokens(ds.sequence_offset(i), ds.sequence_length(i), out.back().data());
  }
  return out;
}

class Prepare : public ::testing::Test {
 protected:
  void SetUp() override {
    docs_ = WriteCorpus(dir_);
    auto r = RunPrepare(Options(dir_, "out/a", 11));
    ASSERT_TRUE(r.ok()) << r.status();
    result_ = *r;
  }
  TempDir dir_;
  std::vector<std::string> docs_;
  PrepareResult result_;
};

TEST_F(Prepare, WritesDocumentsWithEodIntoTheRightSplit) {
  const int64_t n = static_cast<int64_t>(docs_.size());
  EXPECT_EQ(result_.documents, n);
  const std::vector<int64_t> val = ChooseValidationDocuments(n, 0.1, 11);
  ASSERT_EQ(val.size(), 5u);  // round(0.1 * 52)
  auto tok = SentencePieceTokenizer::Load(dir_ / "out/a.model");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 300);
  EXPECT_EQ((*tok)->eos_id(), 2);
  auto train = IndexedDataset::Open(dir_ / "out/a-train");
  auto valid = IndexedDataset::Open(dir_ / "out/a-val");
  ASSERT_TRUE(train.ok() && valid.ok());
  EXPECT_EQ((*train)->dtype(), TokenDType::kUInt16);
  EXPECT_EQ((*train)->num_documents(), n - 5);
  EXPECT_EQ((*valid)->num_documents(), 5);
  EXPECT_EQ((*train)->num_tokens(), result_.train.tokens);
  EXPECT_EQ((*valid)->num_tokens(), result_.val.tokens);

  const auto train_seqs = Sequences(**train), val_seqs = Sequences(**valid);
  size_t ti = 0, vi = 0;
  for (int64_t d = 0; d < n; ++d) {
    const bool is_val = std::binary_search(val.begin(), val.end(), d);
    std::vector<int32_t> seq = is_val ? val_seqs.at(vi++) : train_seqs.at(ti++);
    ASSERT_FALSE(seq.empty());
    EXPECT_EQ(seq.back(), 2) << "document " << d << " lacks EOD";
    seq.pop_back();
    EXPECT_EQ(std::count(seq.begin(), seq.end(), 2), 0);
    EXPECT_EQ((*tok)->Decode(seq), absl::StrReplaceAll(docs_[d], {{"\n", " "}})) << "doc " << d;
  }
  EXPECT_EQ(ti, train_seqs.size());
  EXPECT_EQ(vi, val_seqs.size());
}

TEST_F(Prepare, FilesAreByteIdenticalToTheReferenceWriter) {
  for (const char* split : {"out/a-train", "out/a-val"}) {
    auto ds = IndexedDataset::Open(dir_ / split);
    ASSERT_TRUE(ds.ok());
    std::vector<std::vector<int64_t>> docs;
    for (const auto& seq : Sequences(**ds)) docs.emplace_back(seq.begin(), seq.end());
    const testing::Reference ref = testing::ReferenceWrite(docs, /*uint16*/ 8, 2);
    EXPECT_EQ(ReadBytes(dir_ / (std::string(split) + ".idx")), ref.idx) << split;
    EXPECT_EQ(ReadBytes(dir_ / (std::string(split) + ".bin")), ref.bin) << split;
  }
}

TEST_F(Prepare, SidecarRecordsCountsIdsHashesAndEntropy) {
  const nlohmann::json j = nlohmann::json::parse(ReadBytes(dir_ / "out/a.json"));
  EXPECT_EQ(j["vocab_size"], 300);
  EXPECT_EQ(j["unk_id"], 0);
  EXPECT_EQ(j["bos_id"], 1);
  EXPECT_EQ(j["eos_id"], 2);
  EXPECT_EQ(j["dtype"], "uint16");
  EXPECT_EQ(j["splits"]["train"]["documents"], result_.train.documents);
  EXPECT_EQ(j["splits"]["train"]["tokens"], result_.train.tokens);
  EXPECT_EQ(j["splits"]["val"]["documents"], 5);
  EXPECT_EQ(j["splits"]["val"]["tokens"], result_.val.tokens);
  ASSERT_EQ(j["sources"].size(), 22u);
  EXPECT_EQ(j["sources"][21]["sha256"], *Sha256File(dir_ / "corpus/docs.jsonl"));
  EXPECT_EQ(j["tokenizer"]["sha256"], *Sha256File(dir_ / "out/a.model"));
  std::string digests;
  for (const auto& src : j["sources"]) digests += src["sha256"].get<std::string>() + "\n";
  EXPECT_EQ(j["sources_sha256"], Sha256Hex(digests));
  EXPECT_EQ(Sha256Hex("abc"),  // FIPS 180-2 test vector
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

  // The entropy of the val split's token frequencies, recomputed here.
  auto valid = IndexedDataset::Open(dir_ / "out/a-val");
  ASSERT_TRUE(valid.ok());
  std::vector<int32_t> toks((*valid)->num_tokens());
  (*valid)->ReadTokens(0, toks.size(), toks.data());
  std::map<int32_t, double> counts;
  for (int32_t t : toks) counts[t] += 1;
  double h = 0;
  for (const auto& [id, c] : counts) h -= c / toks.size() * std::log(c / toks.size());
  EXPECT_NEAR(j["val_unigram_entropy_nats"].get<double>(), h, 1e-9);
  EXPECT_NEAR(j["val_unigram_entropy_bits"].get<double>(), h / std::log(2.0), 1e-9);
  EXPECT_GT(h, 1.0);
}

TEST_F(Prepare, IsDeterministicAndTheSeedChoosesTheSplit) {
  auto again = RunPrepare(Options(dir_, "out/b", 11));
  ASSERT_TRUE(again.ok()) << again.status();
  for (const char* suffix : {"-train.bin", "-train.idx", "-val.bin", "-val.idx", ".model"}) {
    EXPECT_EQ(ReadBytes(dir_ / ("out/a" + std::string(suffix))),
              ReadBytes(dir_ / ("out/b" + std::string(suffix))))
        << suffix;
  }
  auto other_seed = RunPrepare(Options(dir_, "out/c", 12));
  ASSERT_TRUE(other_seed.ok()) << other_seed.status();
  EXPECT_NE(ChooseValidationDocuments(52, 0.1, 11), ChooseValidationDocuments(52, 0.1, 12));
  EXPECT_NE(ReadBytes(dir_ / "out/a-val.bin"), ReadBytes(dir_ / "out/c-val.bin"));
}

TEST_F(Prepare, GivenTokenizerIsCopiedAndUsed) {
  PrepareOptions o = Options(dir_, "out/d", 11);
  o.tokenizer = dir_ / "out/a.model";
  auto r = RunPrepare(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(ReadBytes(dir_ / "out/d.model"), ReadBytes(dir_ / "out/a.model"));
  EXPECT_EQ(ReadBytes(dir_ / "out/d-train.bin"), ReadBytes(dir_ / "out/a-train.bin"));
  EXPECT_EQ(ReadBytes(dir_ / "out/d-val.idx"), ReadBytes(dir_ / "out/a-val.idx"));
}

TEST_F(Prepare, BadInputsAreClearErrors) {
  PrepareOptions o = Options(dir_, "out/e", 11);
  o.corpus.json_key = "text";
  auto r = RunPrepare(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find(dir_ / "corpus/docs.jsonl:1: no key \"text\""),
            std::string::npos)
      << r.status();

  WriteBytes(dir_ / "broken.jsonl", "{\"body\": \"fine\"}\n{\"body\": oops}\n");
  o = Options(dir_, "out/e", 11);
  o.inputs = {dir_ / "broken.jsonl"};
  r = RunPrepare(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("broken.jsonl:2: not a JSON object"),
            std::string::npos)
      << r.status();

  o.inputs = {dir_ / "nothing/*.txt"};
  r = RunPrepare(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("nothing/*.txt"), std::string::npos);

  o = Options(dir_, "out/e", 11);
  o.tokenizer = dir_ / "corpus/doc_00.txt";  // not a model
  r = RunPrepare(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("doc_00.txt"), std::string::npos);
}

TEST(PrepareArgs, ParsesTheCommandLine) {
  auto o = ParsePrepareArgs({"--input", "a.txt", "b/*.jsonl", "--output=out/x", "--vocab-size",
                             "8000", "--val-fraction", "0.05", "--split-blank-lines", "--format",
                             "text", "--seed", "9", "--json-key", "content"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->inputs, (std::vector<std::string>{"a.txt", "b/*.jsonl"}));
  EXPECT_EQ(o->output, "out/x");
  EXPECT_EQ(o->vocab_size, 8000);
  EXPECT_DOUBLE_EQ(o->val_fraction, 0.05);
  EXPECT_TRUE(o->corpus.split_blank_lines);
  EXPECT_EQ(o->corpus.format, InputFormat::kText);
  EXPECT_EQ(o->seed, 9u);
  EXPECT_EQ(o->corpus.json_key, "content");

  EXPECT_FALSE(ParsePrepareArgs({"--output", "x"}).ok());
  EXPECT_FALSE(ParsePrepareArgs({"--input", "a", "--output", "x", "--val-fraction", "1.5"}).ok());
  EXPECT_FALSE(ParsePrepareArgs({"--input", "a", "--output", "x", "--format", "csv"}).ok());
  EXPECT_FALSE(ParsePrepareArgs({"--input", "a", "--output", "x", "--tokenizer", "m.model",
                                 "--vocab-size", "500"})
                   .ok());
  EXPECT_FALSE(ParsePrepareArgs({"--input", "a", "--output", "x", "--bogus"}).ok());

  char prog[] = "prepare", help[] = "--help", out[] = "--output", x[] = "x";
  char* help_argv[] = {prog, help};
  EXPECT_EQ(RunPrepareCommand(2, help_argv), 0);
  char* usage_argv[] = {prog, out, x};
  EXPECT_EQ(RunPrepareCommand(3, usage_argv), 2);
}

TEST(ValidationSplit, ExactSizeAndEdgeCases) {
  EXPECT_TRUE(ChooseValidationDocuments(100, 0.0, 1).empty());
  EXPECT_TRUE(ChooseValidationDocuments(1, 0.5, 1).empty());
  EXPECT_EQ(ChooseValidationDocuments(10, 0.001, 1).size(), 1u);  // at least one
  EXPECT_EQ(ChooseValidationDocuments(10, 0.99, 1).size(), 9u);   // at most n - 1
  const auto v = ChooseValidationDocuments(100000, 0.02, 3);
  EXPECT_EQ(v.size(), 2000u);
  EXPECT_TRUE(std::is_sorted(v.begin(), v.end()));
  EXPECT_EQ(std::adjacent_find(v.begin(), v.end()), v.end());
  EXPECT_GE(v.front(), 0);
  EXPECT_LT(v.back(), 100000);
  EXPECT_EQ(v, ChooseValidationDocuments(100000, 0.02, 3));
}

}  // namespace
}  // namespace mt::data

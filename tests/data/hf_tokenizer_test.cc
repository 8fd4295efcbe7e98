// tests/data/hf_tokenizer_test.cc: whole tokenizer.json files built in the test — the BPE
// model's options, added tokens, post-processors, load errors, thread safety, LoadTokenizer
// and `prepare` with a Hugging Face tokenizer.
#include "data/hf_tokenizer.h"

#include <gtest/gtest.h>

#include <thread>

#include <nlohmann/json.hpp>

#include "data/hf_tokenizer_internal.h"
#include "data/indexed_dataset.h"
#include "data/prepare.h"
#include "data/tokenizer_factory.h"
#include "tests/data/test_util.h"

namespace mt::data {
namespace {

using nlohmann::json;
using testing::TempDir;
using testing::WriteBytes;
using Ids = std::vector<int32_t>;

json Bpe(json vocab, json merges) {
  return {{"type", "BPE"},
          {"dropout", nullptr},
          {"unk_token", nullptr},
          {"vocab", vocab},
          {"merges", merges}};
}

json TokJson(json model) {
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", json::array()},
          {"normalizer", nullptr},
          {"pre_tokenizer", nullptr},
          {"post_processor", nullptr},
          {"decoder", nullptr},
          {"model", model}};
}

std::unique_ptr<HfTokenizer> Make(const json& tokenizer, const json& config = nullptr) {
  auto t = HfTokenizer::FromJson(tokenizer.dump(), config.is_null() ? "" : config.dump(),
                                 "test/tokenizer.json", /*require_eos=*/!config.is_null());
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

std::string LoadError(const json& tokenizer, const json& config = nullptr) {
  auto t = HfTokenizer::FromJson(tokenizer.dump(), config.is_null() ? "" : config.dump(),
                                 "dir/tokenizer.json", !config.is_null());
  EXPECT_FALSE(t.ok());
  return t.ok() ? "" : std::string(t.status().message());
}

// A GPT-2-style byte-level BPE: the 256 byte characters, a few merges, <|endoftext|>.
json ByteLevelTokenizer() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[hf::ByteToUnicode(static_cast<uint8_t>(b))] = b;
  const char* merged[] = {"\u0120t", "he", "\u0120the", "in", "\u0120in"};
  for (int i = 0; i < 5; ++i) vocab[merged[i]] = 256 + i;
  json t = TokJson(Bpe(vocab, {"\u0120 t", "h e", "\u0120t he", "i n", "\u0120 in"}));
  t["added_tokens"] = {{{"id", 261},
                        {"content", "<|endoftext|>"},
                        {"special", true},
                        {"normalized", false},
                        {"lstrip", false},
                        {"rstrip", false},
                        {"single_word", false}}};
  t["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  t["decoder"] = {{"type", "ByteLevel"}};
  return t;
}
const json kByteLevelConfig = {{"eos_token", "<|endoftext|>"}, {"bos_token", nullptr}};

TEST(HfTokenizer, MergesInBothSpellingsAndRankOrder) {
  const json vocab = {{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"bc", 4}, {"abc", 5}, {"aa", 6}};
  auto text_form = Make(TokJson(Bpe(vocab, {"a b", "ab c", "a a"})));
  // (explicit arrays: a braced list of string pairs would make a JSON object)
  auto pair_form =
      Make(TokJson(Bpe(vocab, json::array({json::array({"a", "b"}), json::array({"ab", "c"}),
                                           json::array({"a", "a"})}))));
  ASSERT_TRUE(text_form && pair_form);
  EXPECT_EQ(text_form->Encode("abc"), (Ids{5}));
  EXPECT_EQ(pair_form->Encode("abc"), (Ids{5}));
  // The lowest rank merges first: "b c" before "a b", or the other way round.
  auto bc_first = Make(TokJson(Bpe(vocab, {"b c", "a b"})));
  auto ab_first = Make(TokJson(Bpe(vocab, {"a b", "b c"})));
  ASSERT_TRUE(bc_first && ab_first);
  EXPECT_EQ(bc_first->Encode("abc"), (Ids{0, 4}));
  EXPECT_EQ(ab_first->Encode("abc"), (Ids{3, 2}));
  // Equal ranks: leftmost first.
  EXPECT_EQ(text_form->Encode("aaa"), (Ids{6, 0}));
}

TEST(HfTokenizer, IgnoreMergesTakesWholeVocabularyWords) {
  json model = Bpe({{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"abc", 4}}, {"a b"});
  auto merging = Make(TokJson(model));
  model["ignore_merges"] = true;
  auto ignoring = Make(TokJson(model));
  ASSERT_TRUE(merging && ignoring);
  EXPECT_EQ(merging->Encode("abc"), (Ids{3, 2}));
  EXPECT_EQ(ignoring->Encode("abc"), (Ids{4}));
  EXPECT_EQ(ignoring->Encode("abcc"), (Ids{3, 2, 2}));
}

TEST(HfTokenizer, SubwordPrefixAndWordSuffix) {
  json model = Bpe({{"a", 0}, {"##b", 1}, {"##c", 2}, {"ab", 3}, {"abc", 4}}, {"a ##b", "ab ##c"});
  model["continuing_subword_prefix"] = "##";
  auto prefixed = Make(TokJson(model));
  ASSERT_TRUE(prefixed);
  EXPECT_EQ(prefixed->Encode("abc"), (Ids{4}));
  EXPECT_EQ(prefixed->Encode("acb"), (Ids{0, 2, 1}));
  json suffix = Bpe({{"a", 0}, {"b</w>", 1}, {"b", 2}, {"ab</w>", 3}}, {"a b</w>"});
  suffix["end_of_word_suffix"] = "</w>";
  auto suffixed = Make(TokJson(suffix));
  ASSERT_TRUE(suffixed);
  EXPECT_EQ(suffixed->Encode("ab"), (Ids{3}));
  EXPECT_EQ(suffixed->Encode("bab"), (Ids{2, 3}));
}

TEST(HfTokenizer, UnknownCharactersUnkFuseAndByteFallback) {
  json model = Bpe({{"<unk>", 0}, {"a", 1}, {"<0x78>", 2}}, json::array());
  auto dropping = Make(TokJson(model));  // no unk_token: unknown characters vanish
  ASSERT_TRUE(dropping);
  EXPECT_EQ(dropping->Encode("axyza"), (Ids{1, 1}));
  model["unk_token"] = "<unk>";
  auto unk = Make(TokJson(model));
  model["fuse_unk"] = true;
  auto fused = Make(TokJson(model));
  model["byte_fallback"] = true;
  auto fallback = Make(TokJson(model));
  ASSERT_TRUE(unk && fused && fallback);
  EXPECT_EQ(unk->Encode("axya"), (Ids{1, 0, 0, 1}));
  EXPECT_EQ(fused->Encode("axya"), (Ids{1, 0, 1}));
  // x has a byte token; y does not and falls back to unk.
  EXPECT_EQ(fallback->Encode("axya"), (Ids{1, 2, 0, 1}));
  EXPECT_EQ(unk->unk_id(), 0);
}

TEST(HfTokenizer, ByteLevelRoundTripAndSpecialTokens) {
  auto tok = Make(ByteLevelTokenizer(), kByteLevelConfig);
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->eos_id(), 261);
  EXPECT_EQ(tok->bos_id(), -1);
  EXPECT_EQ(tok->vocab_size(), 262);
  const Ids ids = tok->Encode("the thin<|endoftext|>");
  // "the" has no leading space: t, he; " thin": Ġt, h, in; then the special token.
  EXPECT_EQ(ids, (Ids{'t', 257, 256, 'h', 259, 261}));  // byte characters have their byte's id
  EXPECT_EQ(tok->Decode(ids), "the thin<|endoftext|>");
  EXPECT_EQ(tok->Decode(ids, /*skip_special_tokens=*/true), "the thin");
  const std::string odd = "tab\there \xF0\x9F\x98\x80 \xFF";
  EXPECT_EQ(tok->Decode(tok->Encode(odd)), "tab\there \xF0\x9F\x98\x80 \xEF\xBF\xBD");
  EXPECT_EQ(tok->Decode({-1, 5000, tok->TokenToId("h")}), "h");  // unknown ids are skipped
}

TEST(HfTokenizer, AddedTokenOptions) {
  // Word-level through ignore_merges: most pieces of a space split are vocabulary entries.
  json model = Bpe({{"i", 0},
                    {" ", 1},
                    {"love", 2},
                    {"you", 3},
                    {"ab", 4},
                    {"c", 5},
                    {"say", 6},
                    {"hello", 7},
                    {"a", 8},
                    {"b", 9}},
                   {"a b"});
  model["ignore_merges"] = true;
  json t = TokJson(model);
  t["pre_tokenizer"] = {{"type", "Split"},
                        {"pattern", {{"String", " "}}},
                        {"behavior", "Isolated"},
                        {"invert", false}};
  auto added = [](int id, const char* content, json opts) {
    json a = {{"id", id},        {"content", content}, {"special", false},    {"normalized", false},
              {"lstrip", false}, {"rstrip", false},    {"single_word", false}};
    a.update(opts);
    return a;
  };
  t["added_tokens"] = {
      added(10, "<mask>", {{"lstrip", true}}), added(11, "<r>", {{"rstrip", true}}),
      added(12, "ab", {{"single_word", true}}), added(13, "HELLO", {{"normalized", true}})};
  t["normalizer"] = {{"type", "Lowercase"}};
  auto tok = Make(t);
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->Encode("I love <mask> you"), (Ids{0, 1, 2, 10, 1, 3}));
  EXPECT_EQ(tok->Encode("I<r>  love"), (Ids{0, 11, 2}));
  // single_word: "ab" inside "abc" is not the token.
  EXPECT_EQ(tok->Encode("ab abc"), (Ids{12, 1, 4, 5}));
  // normalized: matched after lowercasing, so "Hello" finds the token "HELLO" ("hello").
  EXPECT_EQ(tok->Encode("say Hello"), (Ids{6, 1, 13}));
}

TEST(HfTokenizer, PostProcessors) {
  json t = ByteLevelTokenizer();
  t["added_tokens"].push_back({{"id", 262}, {"content", "<s>"}, {"special", true}});
  t["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single",
       {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
        {{"SpecialToken", {{"id", "<|endoftext|>"}, {"type_id", 0}}}}}},
      {"pair", json::array()},
      {"special_tokens",
       {{"<s>", {{"id", "<s>"}, {"ids", {262}}, {"tokens", {"<s>"}}}},
        {"<|endoftext|>", {{"id", "<|endoftext|>"}, {"ids", {261}}, {"tokens", {"x"}}}}}}};
  auto tok = Make(t, {{"bos_token", {{"content", "<s>"}, {"__type", "AddedToken"}}},
                      {"eos_token", "<|endoftext|>"}});
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->bos_id(), 262);
  const Ids plain = tok->Encode("he");
  EXPECT_EQ(plain, (Ids{257}));
  EXPECT_EQ(tok->Encode("he", /*add_special_tokens=*/true), (Ids{262, 257, 261}));
  t["post_processor"] = {{"type", "RobertaProcessing"}, {"cls", {"<s>", 262}}, {"sep", {"x", 261}}};
  auto roberta = Make(t, kByteLevelConfig);
  ASSERT_TRUE(roberta);
  EXPECT_EQ(roberta->Encode("he", true), (Ids{262, 257, 261}));
}

TEST(HfTokenizer, LoadErrorsNameFileAndPath) {
  EXPECT_NE(LoadError(json::parse("[1]")).find("dir/tokenizer.json"), std::string::npos);
  auto bad = HfTokenizer::FromJson("{not json", "", "dir/tokenizer.json", false);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("dir/tokenizer.json: not valid JSON"),
            std::string::npos);
  json unigram = TokJson({{"type", "Unigram"}, {"vocab", json::array()}});
  EXPECT_NE(
      LoadError(unigram).find("dir/tokenizer.json: model.type: unsupported model \"Unigram\""),
      std::string::npos);
  json dropout = TokJson(Bpe({{"a", 0}}, json::array()));
  dropout["model"]["dropout"] = 0.1;
  EXPECT_NE(LoadError(dropout).find("model.dropout"), std::string::npos);
  json oov = TokJson(Bpe({{"a", 0}, {"b", 1}}, {"a b"}));
  EXPECT_NE(LoadError(oov).find("model.merges[0]: merge \"a\" + \"b\": \"ab\" is not in the vocab"),
            std::string::npos)
      << LoadError(oov);
  json pre = ByteLevelTokenizer();
  pre["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {{{"type", "UnicodeScripts"}}}}};
  EXPECT_NE(LoadError(pre).find("dir/tokenizer.json: pre_tokenizer.pretokenizers[0].type: "
                                "unsupported pre-tokenizer \"UnicodeScripts\""),
            std::string::npos)
      << LoadError(pre);
  // The configuration's tokens must exist, and an EOS is required.
  EXPECT_NE(LoadError(ByteLevelTokenizer(), {{"eos_token", "</s>"}})
                .find("dir/tokenizer_config.json: token \"</s>\" is not in the vocabulary"),
            std::string::npos);
  EXPECT_NE(
      LoadError(ByteLevelTokenizer(), {{"bos_token", "<|endoftext|>"}}).find("no \"eos_token\""),
      std::string::npos);
}

TEST(HfTokenizer, LoadsFileOrDirectoryWithConfig) {
  TempDir dir;
  WriteBytes(dir / "tokenizer.json", ByteLevelTokenizer().dump());
  WriteBytes(dir / "tokenizer_config.json", kByteLevelConfig.dump());
  for (const std::string& path : {dir.path(), dir / "tokenizer.json"}) {
    auto tok = HfTokenizer::Load(path);
    ASSERT_TRUE(tok.ok()) << tok.status();
    EXPECT_EQ((*tok)->eos_id(), 261);
    ASSERT_EQ((*tok)->files().size(), 2u);
    EXPECT_EQ((*tok)->files()[1], dir / "tokenizer_config.json");
  }
  // special_tokens_map.json supplies what tokenizer_config.json lacks.
  TempDir map_dir;
  WriteBytes(map_dir / "tokenizer.json", ByteLevelTokenizer().dump());
  WriteBytes(map_dir / "tokenizer_config.json", json({{"bos_token", nullptr}}).dump());
  WriteBytes(map_dir / "special_tokens_map.json",
             json({{"eos_token", {{"content", "<|endoftext|>"}}}}).dump());
  auto mapped = HfTokenizer::Load(map_dir.path());
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  EXPECT_EQ((*mapped)->eos_id(), 261);
  EXPECT_EQ((*mapped)->files().size(), 3u);
  auto missing = HfTokenizer::Load(dir / "nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(std::string(missing.status().message()).find(dir / "nope"), std::string::npos);
  EXPECT_EQ(TokenizerKindOf(dir.path()), TokenizerKind::kHuggingFace);
  EXPECT_EQ(TokenizerKindOf(dir / "tokenizer.json"), TokenizerKind::kHuggingFace);
  EXPECT_EQ(TokenizerKindOf(dir / "m.model"), TokenizerKind::kSentencePiece);
  auto via_factory = LoadTokenizer(dir.path());
  ASSERT_TRUE(via_factory.ok()) << via_factory.status();
  EXPECT_EQ((*via_factory)->eos_id(), 261);
  EXPECT_EQ(TokenizerUnkId(**via_factory), -1);
  EXPECT_NE((*via_factory)->name().find("huggingface:"), std::string::npos);
}

TEST(HfTokenizer, ConcurrentEncodingMatchesSequential) {
  auto tok = Make(ByteLevelTokenizer(), kByteLevelConfig);
  ASSERT_TRUE(tok);
  std::vector<std::string> texts;
  for (int i = 0; i < 400; ++i) {
    texts.push_back("the thing " + std::to_string(i * 7919) + " in the inn\n" +
                    std::string(i % 13, ' ') + "then<|endoftext|>");
  }
  std::vector<Ids> expected;
  for (const std::string& t : texts) expected.push_back(tok->Encode(t));
  auto fresh = Make(ByteLevelTokenizer(), kByteLevelConfig);  // cold cache, filled concurrently
  ASSERT_TRUE(fresh);
  std::vector<Ids> got(texts.size());
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      for (size_t i = w; i < texts.size(); i += 4) got[i] = fresh->Encode(texts[i]);
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(got, expected);
}

TEST(HfTokenizer, PrepareWritesAHuggingFaceDataset) {
  TempDir dir;
  std::filesystem::create_directories(dir / "tok");
  WriteBytes(dir / "tok/tokenizer.json", ByteLevelTokenizer().dump());
  WriteBytes(dir / "tok/tokenizer_config.json", kByteLevelConfig.dump());
  std::filesystem::create_directories(dir / "corpus");
  for (int i = 0; i < 6; ++i) {
    WriteBytes(dir / ("corpus/d" + std::to_string(i) + ".txt"),
               "the thin inn " + std::to_string(i) + " then the end");
  }
  PrepareOptions o;
  o.inputs = {dir / "corpus/*.txt"};
  o.output = dir / "out/ds";
  o.tokenizer = dir / "tok";
  o.val_fraction = 0.2;
  o.progress = false;
  auto r = RunPrepare(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->vocab_size, 262);
  const json side = json::parse(testing::ReadBytes(dir / "out/ds.json"));
  EXPECT_EQ(side["tokenizer"]["type"], "huggingface");
  EXPECT_EQ(side["tokenizer"]["path"], "ds-tokenizer");
  EXPECT_EQ(side["tokenizer"]["files"].size(), 2u);
  EXPECT_EQ(side["eod_id"], 261);
  EXPECT_EQ(side["unk_id"], -1);
  EXPECT_EQ(testing::ReadBytes(dir / "out/ds-tokenizer/tokenizer.json"),
            testing::ReadBytes(dir / "tok/tokenizer.json"));
  auto copy = LoadTokenizer(dir / "out/ds-tokenizer");
  ASSERT_TRUE(copy.ok()) << copy.status();
  auto train = IndexedDataset::Open(dir / "out/ds-train");
  ASSERT_TRUE(train.ok()) << train.status();
  const Ids first = (*copy)->Encode("the thin inn 0 then the end");
  EXPECT_EQ(r->train.tokens + r->val.tokens,
            6 * static_cast<int64_t>(first.size() + 1));  // each document + EOD
}

}  // namespace
}  // namespace mt::data

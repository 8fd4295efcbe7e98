// tests/data/hf_tokenizer_parity_llama2_test.cc: a Metaspace / byte-fallback BPE (Llama 2's
// tokenizer.json) encodes the Brown corpus and the hard cases to exactly the ids Hugging
// Face's implementation gives, and decodes as it does; likewise the same vocabulary spelled
// with a Metaspace pre-tokenizer, and behind an NFKC normalizer (fetch_tokenizers.sh derives
// those files).
//
// Llama 2 has no pre-tokenizer: a whole document is one BPE word, which Hugging Face's JS
// merges slowly (minutes for Brown's 10 kB documents). So Brown goes in paragraph by
// paragraph, each keeping its newline: together they are still every byte of the corpus.
#include <gtest/gtest.h>

#include "data/hf_tokenizer.h"
#include "tests/data/hf_tokenizer_parity_util.h"

namespace mt::data {
namespace {

using testing::ExpectParity;
using testing::FirstDifference;
using testing::LoadFixture;

std::vector<std::string> BrownParagraphs(size_t every) {
  std::vector<std::string> out;
  const std::vector<std::string> docs = testing::BrownDocuments();
  for (size_t d = 0; d < docs.size(); d += every) {
    size_t begin = 0;
    while (begin < docs[d].size()) {
      size_t end = docs[d].find('\n', begin);
      end = end == std::string::npos ? docs[d].size() : end + 1;
      out.push_back(docs[d].substr(begin, end - begin));
      begin = end;
    }
  }
  return out;
}

TEST(Llama2Parity, SpecialIds) {
  MT_REQUIRE_NPM_FIXTURES();
  auto tok = LoadFixture("llama2");
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->unk_id(), 0);
  EXPECT_EQ(tok->vocab_size(), 32000);
  // TemplateProcessing puts <s> first, the normalizer a "\u2581"; the llama emoji is not in
  // the vocabulary, so byte fallback spells it in its four UTF-8 bytes.
  const std::vector<int32_t> ids = tok->Encode("\U0001F999", /*add_special_tokens=*/true);
  ASSERT_EQ(ids.size(), 6u) << FirstDifference(ids, {});
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(tok->IdToToken(ids[1]), "\u2581");
  EXPECT_EQ(tok->IdToToken(ids[2]), "<0xF0>");
  EXPECT_EQ(tok->IdToToken(ids[5]), "<0x99>");
  EXPECT_EQ(tok->Decode(ids, /*skip_special_tokens=*/true), "\U0001F999");
}

TEST(Llama2Parity, HardCases) {
  MT_REQUIRE_NPM_FIXTURES();
  auto tok = LoadFixture("llama2");
  ASSERT_NE(tok, nullptr);
  ExpectParity(*tok, testing::NpmCache() + "/llama2", testing::HardCases(), true, "hard case");
}

TEST(Llama2Parity, WholeBrownCorpusByParagraph) {
  MT_REQUIRE_NPM_FIXTURES();
  auto tok = LoadFixture("llama2");
  ASSERT_NE(tok, nullptr);
  const std::vector<std::string> paragraphs = BrownParagraphs(1);
  ASSERT_GT(paragraphs.size(), 10000u);
  ExpectParity(*tok, testing::NpmCache() + "/llama2", paragraphs, false, "Brown paragraph");
}

TEST(Llama2MetaspaceParity, HardCasesAndBrownSample) {
  MT_REQUIRE_NPM_FIXTURES();
  auto tok = LoadFixture("llama2_metaspace");
  ASSERT_NE(tok, nullptr);
  const std::string dir = testing::NpmCache() + "/llama2_metaspace";
  ExpectParity(*tok, dir, testing::HardCases(), true, "hard case");
  ExpectParity(*tok, dir, BrownParagraphs(10), false, "Brown paragraph");
}

TEST(Llama2NfkcParity, HardCasesAndBrownSample) {
  MT_REQUIRE_NPM_FIXTURES();
  auto tok = LoadFixture("llama2_nfkc");
  ASSERT_NE(tok, nullptr);
  const std::string dir = testing::NpmCache() + "/llama2_nfkc";
  ExpectParity(*tok, dir, testing::HardCases(), true, "hard case");
  ExpectParity(*tok, dir, BrownParagraphs(10), false, "Brown paragraph");
}

}  // namespace
}  // namespace mt::data

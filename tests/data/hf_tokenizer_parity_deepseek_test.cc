// tests/data/hf_tokenizer_parity_deepseek_test.cc: DeepSeek-V3's real tokenizer.json encodes
// the whole Brown corpus and the hard cases to exactly the ids Hugging Face's implementation
// gives, and decodes them back to the text; so do GPT-2 and GPT-4 style pre-tokenizers in
// front of the same vocabulary.
#include <gtest/gtest.h>

#include "data/hf_tokenizer.h"
#include "tests/data/hf_tokenizer_parity_util.h"

namespace mt::data {
namespace {

using testing::FirstDifference;
using testing::HfReference;
using testing::Repaired;

class DeepSeekParity : public ::testing::Test {
 protected:
  static std::string Dir() { return testing::NpmCache() + "/deepseek_v3"; }
  static const HfTokenizer& Tok() {
    static const std::unique_ptr<HfTokenizer> tok = [] {
      auto t = HfTokenizer::Load(Dir());
      EXPECT_TRUE(t.ok()) << t.status();
      return t.ok() ? std::move(*t) : nullptr;
    }();
    return *tok;
  }
};

TEST_F(DeepSeekParity, SpecialIdsAndVocab) {
  MT_REQUIRE_NPM_FIXTURES();
  const HfTokenizer& tok = Tok();
  EXPECT_EQ(tok.bos_id(), 0);  // <｜begin▁of▁sentence｜>
  EXPECT_EQ(tok.eos_id(), 1);  // <｜end▁of▁sentence｜>
  EXPECT_EQ(tok.unk_id(), -1);
  EXPECT_EQ(tok.vocab_size(), 128815);  // the embedding (129280) is padded beyond this
  EXPECT_EQ(tok.IdToToken(1), "<\uff5cend\u2581of\u2581sentence\uff5c>");
  EXPECT_EQ(tok.TokenToId("<\uff5cUser\uff5c>"), 128803);
}

TEST_F(DeepSeekParity, WholeBrownCorpus) {
  MT_REQUIRE_NPM_FIXTURES();
  const std::vector<std::string> docs = testing::BrownDocuments();
  ASSERT_EQ(docs.size(), 500u);
  const HfReference ref = testing::ReferenceFor(Dir(), docs, /*with_special=*/false);
  ASSERT_EQ(ref.ids.size(), docs.size());
  int64_t tokens = 0;
  for (size_t d = 0; d < docs.size(); ++d) {
    const std::vector<int32_t> ids = Tok().Encode(docs[d]);
    ASSERT_EQ(ids, ref.ids[d]) << "Brown document " << d << ": "
                               << FirstDifference(ids, ref.ids[d]);
    ASSERT_EQ(Tok().Decode(ids), docs[d]) << "Brown document " << d;
    tokens += static_cast<int64_t>(ids.size());
  }
  EXPECT_GT(tokens, 1000000);
}

TEST_F(DeepSeekParity, HardCases) {
  MT_REQUIRE_NPM_FIXTURES();
  const std::vector<std::string> cases = testing::HardCases();
  const HfReference ref = testing::ReferenceFor(Dir(), cases, /*with_special=*/true);
  ASSERT_EQ(ref.ids.size(), cases.size());
  for (size_t c = 0; c < cases.size(); ++c) {
    const std::vector<int32_t> ids = Tok().Encode(cases[c]);
    EXPECT_EQ(ids, ref.ids[c]) << "hard case " << c << " \"" << cases[c]
                               << "\": " << FirstDifference(ids, ref.ids[c]);
    // The post-processor (ByteLevel) adds nothing: DeepSeek's BOS comes from chat templates.
    EXPECT_EQ(Tok().Encode(cases[c], /*add_special_tokens=*/true), ref.ids_special[c]);
    EXPECT_EQ(Tok().Decode(ref.ids[c]), ref.decoded[c]) << "hard case " << c;
    EXPECT_EQ(Tok().Decode(ids), Repaired(cases[c])) << "hard case " << c;
  }
}

// The same vocabulary behind GPT-2's pre-tokenizer (ByteLevel's own regex) and behind the
// GPT-4 / Llama 3 split regex with ignore_merges: (?i:...), \p{N}{1,3}, \s+(?!\S).
TEST_F(DeepSeekParity, GptStylePreTokenizers) {
  MT_REQUIRE_NPM_FIXTURES();
  std::vector<std::string> sample;
  const std::vector<std::string> brown = testing::BrownDocuments();
  for (size_t d = 0; d < brown.size(); d += 10) sample.push_back(brown[d]);
  for (const char* name : {"deepseek_gpt2", "deepseek_gpt4"}) {
    SCOPED_TRACE(name);
    auto tok = testing::LoadFixture(name);
    ASSERT_NE(tok, nullptr);
    const std::string dir = testing::NpmCache() + "/" + name;
    testing::ExpectParity(*tok, dir, testing::HardCases(), true, "hard case");
    testing::ExpectParity(*tok, dir, sample, false, "Brown document");
  }
}

TEST_F(DeepSeekParity, SpecialTokensInTextAreSingleIds) {
  MT_REQUIRE_NPM_FIXTURES();
  const std::vector<int32_t> ids =
      Tok().Encode("<\uff5cbegin\u2581of\u2581sentence\uff5c>Hi<\uff5cUser\uff5c>");
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids.front(), 0);
  EXPECT_EQ(ids.back(), 128803);
  EXPECT_EQ(Tok().Decode(ids, /*skip_special_tokens=*/true), "Hi<\uff5cUser\uff5c>");
}

}  // namespace
}  // namespace mt::data

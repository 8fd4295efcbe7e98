// tests/data/tokenizer_test.cc: SentencePiece training, loading and round trips.
#include "data/tokenizer.h"

#include <gtest/gtest.h>

#include "tests/data/test_util.h"

namespace mt::data {
namespace {

using testing::TempDir;
using testing::WriteBytes;

std::vector<std::string> Sentences() {
  std::vector<std::string> s;
  for (int i = 0; i < 200; ++i) {
    s.push_back("the quick brown fox jumps over the lazy dog number " + std::to_string(i));
    s.push_back("a stitch in time saves nine, said the tailor to the fox");
  }
  return s;
}

TEST(Tokenizer, TrainsLoadsAndRoundTrips) {
  TempDir dir;
  SentencePieceTrainOptions opts;
  opts.vocab_size = 320;
  ASSERT_TRUE(TrainSentencePiece(Sentences(), opts, dir / "t.model").ok());
  auto tok = SentencePieceTokenizer::Load(dir / "t.model");
  ASSERT_TRUE(tok.ok()) << tok.status();
  const Tokenizer& t = **tok;
  EXPECT_EQ(t.vocab_size(), 320);
  EXPECT_EQ((*tok)->unk_id(), 0);
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_NE(t.name().find("t.model"), std::string::npos);
  const std::string text = "the lazy fox saves time 1234";
  const std::vector<int32_t> ids = t.Encode(text);
  ASSERT_FALSE(ids.empty());
  for (int32_t id : ids) {
    EXPECT_GE(id, 3);  // never unk (byte fallback), bos or eos
    EXPECT_LT(id, 320);
  }
  EXPECT_EQ(t.Decode(ids), text);
  // Characters never seen in training come back through byte fallback.
  const std::string unseen = "Zürich €5";
  EXPECT_EQ(t.Decode(t.Encode(unseen)), unseen);
  // Digits are split one per piece.
  EXPECT_LT(t.Encode("the").size(), t.Encode("1234").size() + 1);
}

TEST(Tokenizer, TrainingIsDeterministic) {
  TempDir dir;
  SentencePieceTrainOptions opts;
  opts.vocab_size = 300;
  ASSERT_TRUE(TrainSentencePiece(Sentences(), opts, dir / "a.model").ok());
  ASSERT_TRUE(TrainSentencePiece(Sentences(), opts, dir / "b.model").ok());
  EXPECT_EQ(testing::ReadBytes(dir / "a.model"), testing::ReadBytes(dir / "b.model"));
}

TEST(Tokenizer, LoadErrorsNameTheFile) {
  TempDir dir;
  auto missing = SentencePieceTokenizer::Load(dir / "none.model");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(std::string(missing.status().message()).find(dir / "none.model"), std::string::npos);
  WriteBytes(dir / "junk.model", "this is not a protobuf at all \xff\xfe");
  auto junk = SentencePieceTokenizer::Load(dir / "junk.model");
  ASSERT_FALSE(junk.ok());
  EXPECT_NE(std::string(junk.status().message()).find(dir / "junk.model"), std::string::npos)
      << junk.status();
}

TEST(Tokenizer, TrainingErrorsAreStatuses) {
  TempDir dir;
  SentencePieceTrainOptions opts;
  EXPECT_FALSE(TrainSentencePiece({}, opts, dir / "x.model").ok());
  opts.vocab_size = 100;  // below byte fallback's 256 pieces
  const absl::Status s = TrainSentencePiece(Sentences(), opts, dir / "y.model");
  EXPECT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("vocab 100"), std::string::npos) << s;
}

}  // namespace
}  // namespace mt::data

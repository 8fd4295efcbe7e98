// tests/data/brown_test.cc: Brown corpus tagged text back to running text.
#include "data/brown.h"

#include <gtest/gtest.h>

namespace mt::data {
namespace {

// The opening of ca01, then constructed lines for the rarer punctuation.
constexpr char kSample[] =
    "\n\n\tThe/at Fulton/np-tl County/nn-tl Grand/jj-tl Jury/nn-tl said/vbd Friday/nr an/at "
    "investigation/nn of/in Atlanta's/np$ recent/jj primary/nn election/nn produced/vbd ``/`` "
    "no/at evidence/nn ''/'' that/cs any/dti irregularities/nns took/vbd place/nn ./.\n"
    "\n\n\t``/`` Only/rb a/at relative/jj handful/nn of/in such/jj reports/nns was/bedz "
    "received/vbn ''/'' ,/, the/at jury/nn said/vbd ;/. it/pps was/bedz (/( mostly/rb )/) "
    "fair/jj --/-- or/cc so/rb !/.\n"
    "Was/bedz it/pps ?/.\n"
    "\n\n\tWe're/ppss+ber with/in the/at '/' Met/np '/' again/rb ,/, and/cc John/np 's/pos "
    "dog/nn does/doz n't/* bark/vb :/: 4-1/2%/nn and/or //in 'em/ppo ./.\n";

TEST(Brown, StripsTagsAndRestoresSpacing) {
  auto text = BrownToText(kSample, "ca01");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text,
            "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent "
            "primary election produced \"no evidence\" that any irregularities took place.\n"
            "\"Only a relative handful of such reports was received\", the jury said; it was "
            "(mostly) fair--or so! Was it?\n"
            "We're with the 'Met' again, and John's dog doesn't bark: 4-1/2% and / 'em.");
}

TEST(Brown, RejectsUntaggedText) {
  auto text = BrownToText("\tThe/at plain words here/rb\n", "cz99");
  ASSERT_FALSE(text.ok());
  EXPECT_NE(std::string(text.status().message()).find("cz99:1: token \"plain\""), std::string::npos)
      << text.status();
}

TEST(Brown, EmptyInputIsEmptyText) {
  auto text = BrownToText("\n\n\n", "empty");
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "");
}

}  // namespace
}  // namespace mt::data

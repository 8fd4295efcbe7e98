// tests/data/hf_tokenizer_components_test.cc: the stages of a tokenizer.json one at a time —
// regex translation, UTF-8 repair, normalizers, pre-tokenizers and decoders — against the
// behaviour Hugging Face's Rust crate documents (most expectations are its own test cases).
#include <gtest/gtest.h>

#include "data/hf_tokenizer_internal.h"
#include "data/hf_tokenizer_regex.h"
#include "data/unicode_text.h"

namespace mt::data::hf {
namespace {

using Strings = std::vector<std::string>;

Strings Pre(const std::string& json, const std::string& text) {
  bool byte_level_last = false;
  auto pre = BuildPreTokenizer(Json::parse(json), "pre_tokenizer", &byte_level_last);
  EXPECT_TRUE(pre.ok()) << pre.status();
  if (!pre.ok()) return {};
  PieceList pieces;
  pieces.text = text;
  pieces.spans = {{0, static_cast<uint32_t>(text.size()), true}};
  (*pre)->PreTokenize(&pieces);
  Strings out;
  for (const Span& s : pieces.spans) out.push_back(pieces.text.substr(s.begin, s.end - s.begin));
  return out;
}

std::string Norm(const std::string& json, const std::string& text) {
  auto n = BuildNormalizer(Json::parse(json), "normalizer");
  EXPECT_TRUE(n.ok()) << n.status();
  return n.ok() ? (*n)->Normalize(text) : "";
}

std::string Dec(const std::string& json, Strings tokens) {
  auto d = BuildDecoder(Json::parse(json), "decoder");
  EXPECT_TRUE(d.ok()) << d.status();
  if (!d.ok()) return "";
  (*d)->DecodeChain(&tokens);
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

std::vector<std::pair<uint32_t, uint32_t>> Find(const std::string& pattern,
                                                const std::string& text) {
  auto re = Regex::Compile(pattern);
  EXPECT_TRUE(re.ok()) << re.status();
  std::vector<std::pair<uint32_t, uint32_t>> m;
  if (re.ok()) (*re)->FindAll(text, &m);
  return m;
}

TEST(HfRegex, TranslatesOnigurumaToPcre2) {
  EXPECT_EQ(*TranslateOnigRegex("\\s+(?!\\S)"), "\\p{White_Space}+(?!\\P{White_Space})");
  EXPECT_EQ(*TranslateOnigRegex("\\p{N}{1,3}+"), "(?:\\p{N}{1,3})+");
  EXPECT_EQ(*TranslateOnigRegex("(ab){2}?"), "(?:(ab){2})?");
  EXPECT_EQ(*TranslateOnigRegex("a{,2}"), "a{0,2}");
  EXPECT_EQ(*TranslateOnigRegex("[^\\s\\p{L}]"), "[^\\p{White_Space}\\p{L}]");
  EXPECT_EQ(*TranslateOnigRegex("\\u4e00\\x{263a}"), "\\x{4e00}\\x{263a}");
  EXPECT_EQ(*TranslateOnigRegex("(?m:.)"), "(?s:.)");
  EXPECT_EQ(*TranslateOnigRegex("x{y}"), "x\\{y}");  // not an interval: literal
  for (const char* bad : {"[a&&b]", "[a[bc]]", "[\\W]", "a\\", "[abc"}) {
    const absl::StatusOr<std::string> t = TranslateOnigRegex(bad);
    EXPECT_FALSE(t.ok()) << bad;
  }
}

TEST(HfRegex, UnicodeClassesMatchOniguruma) {
  // \s is White_Space: NEL (U+0085) and NBSP are in, U+200B (zero width space) is not.
  EXPECT_EQ(Find("\\s+", "a\u0085\u00a0b\u200bc").size(), 1u);
  EXPECT_EQ(Find("\\s+", "a\u0085\u00a0b\u200bc")[0], std::make_pair(1u, 5u));
  // \h is a hex digit in Oniguruma (PCRE2's \h would be horizontal space).
  EXPECT_EQ(Find("\\h+", "x0fA g"), (std::vector<std::pair<uint32_t, uint32_t>>{{1, 4}}));
  // \w covers marks and other scripts; \d only decimal digits.
  EXPECT_EQ(Find("\\w+", "e\u0301t\u00e9 \u4e2d"),
            (std::vector<std::pair<uint32_t, uint32_t>>{{0, 6}, {7, 10}}));
  EXPECT_EQ(Find("\\d+", "\u0663\u00b2").size(), 1u);  // Arabic-Indic 3, not superscript 2
  // (?i:) and the GPT-4 style contractions.
  EXPECT_EQ(Find("(?i:'s|'t)", "IT'S it's").size(), 2u);
}

TEST(HfRegex, LookAheadAndEmptyMatches) {
  // GPT-2: a run of spaces gives its last space to the next word.
  EXPECT_EQ(Find("\\s+(?!\\S)|\\s+", "a   b"),
            (std::vector<std::pair<uint32_t, uint32_t>>{{1, 3}, {3, 4}}));
  // Oniguruma's find_iter: no empty match right after a match.
  EXPECT_EQ(Find("a*", "ab"), (std::vector<std::pair<uint32_t, uint32_t>>{{0, 1}, {2, 2}}));
  auto bad = Regex::Compile("(unclosed");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("(unclosed"), std::string::npos);
}

TEST(HfUnicode, RepairsInvalidUtf8TheWhatwgWay) {
  const std::string r = "\xEF\xBF\xBD";
  std::string storage;
  auto fix = [&](const std::string& s) { return std::string(unicode::SanitizeUtf8(s, &storage)); };
  EXPECT_EQ(fix("ok \xC3\xA9"), "ok \xC3\xA9");
  EXPECT_EQ(fix("a\xFF"
                "b"),
            "a" + r + "b");
  EXPECT_EQ(fix("\xE4\xB8"), r);                      // truncated: one maximal subpart
  EXPECT_EQ(fix("\xC0\xAF"), r + r);                  // overlong lead, then a lone continuation
  EXPECT_EQ(fix("\xED\xA0\x80"), r + r + r);          // surrogate
  EXPECT_EQ(fix("\xF4\x90\x80\x80"), r + r + r + r);  // above U+10FFFF
  EXPECT_EQ(fix("\xF0\x9F\x98 x"), r + " x");
  EXPECT_TRUE(unicode::IsValidUtf8("\xF0\x9F\x98\x80"));
}

TEST(HfNormalizers, UnicodeCaseAndRewrites) {
  EXPECT_EQ(Norm(R"({"type": "NFC"})", "e\u0301"), "\u00e9");
  EXPECT_EQ(Norm(R"({"type": "NFD"})", "\u00e9"), "e\u0301");
  EXPECT_EQ(Norm(R"({"type": "NFKC"})", "\uff21\u2460\ufb01"), "A1fi");
  EXPECT_EQ(Norm(R"({"type": "NFKD"})", "\u00bd"), "1\u20442");
  // Per character, like Rust: the final capital sigma does not become a final sigma.
  EXPECT_EQ(Norm(R"({"type": "Lowercase"})", "\u00c0B \u03a3\u0391\u03a3 \u0130"),
            "\u00e0b \u03c3\u03b1\u03c3 i\u0307");
  EXPECT_EQ(
      Norm(R"({"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"})", "a b  c"),
      "a\u2581b\u2581\u2581c");
  EXPECT_EQ(
      Norm(R"({"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "})", "a    b  c"),
      "a b c");
  EXPECT_EQ(Norm(R"({"type": "Prepend", "prepend": "\u2581"})", "x"), "\u2581x");
  EXPECT_EQ(Norm(R"({"type": "Prepend", "prepend": "\u2581"})", ""), "");
  EXPECT_EQ(Norm(R"({"type": "Strip", "strip_left": true, "strip_right": true})", " \tx y\u3000 "),
            "x y");
  EXPECT_EQ(Norm(R"({"type": "Strip", "strip_left": false, "strip_right": true})", "  x  "), "  x");
  EXPECT_EQ(Norm(R"({"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "StripAccents"},
                  {"type": "Lowercase"}]})",
                 "Caf\u00e9"),
            "cafe");
}

TEST(HfPreTokenizers, SplitBehaviours) {
  auto split = [](const char* behavior) {
    return Pre(
        std::string(
            R"({"type": "Split", "pattern": {"String": "-"}, "invert": false, "behavior": ")") +
            behavior + "\"}",
        "the-final--countdown");
  };
  EXPECT_EQ(split("Removed"), (Strings{"the", "final", "countdown"}));
  EXPECT_EQ(split("Isolated"), (Strings{"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(split("MergedWithPrevious"), (Strings{"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(split("MergedWithNext"), (Strings{"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(split("Contiguous"), (Strings{"the", "-", "final", "--", "countdown"}));
  // invert: the pattern describes the pieces to keep.
  EXPECT_EQ(
      Pre(R"({"type": "Split", "pattern": {"Regex": "\\w+"}, "behavior": "Removed", "invert": true})",
          "How are you?"),
      (Strings{"How", "are", "you"}));
  EXPECT_EQ(
      Pre(R"({"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "MergedWithPrevious", "invert": false})",
          "How are  you"),
      (Strings{"How ", "are  ", "you"}));
}

TEST(HfPreTokenizers, WordSplitters) {
  EXPECT_EQ(Pre(R"({"type": "Whitespace"})", "Hey man!"), (Strings{"Hey", "man", "!"}));
  EXPECT_EQ(Pre(R"({"type": "Whitespace"})", "How are you doing?"),
            (Strings{"How", "are", "you", "doing", "?"}));
  EXPECT_EQ(Pre(R"({"type": "WhitespaceSplit"})", "Hey, man,\u0085Good?"),
            (Strings{"Hey,", "man,", "Good?"}));
  EXPECT_EQ(Pre(R"({"type": "Digits", "individual_digits": true})", "Hey 123 friend!"),
            (Strings{"Hey ", "1", "2", "3", " friend!"}));
  EXPECT_EQ(Pre(R"({"type": "Digits", "individual_digits": false})", "Hey 123 friend!"),
            (Strings{"Hey ", "123", " friend!"}));
  EXPECT_EQ(Pre(R"({"type": "Punctuation"})", "Hey friend!     How are you?!?"),
            (Strings{"Hey friend", "!", "     How are you", "?", "!", "?"}));
  EXPECT_EQ(Pre(R"({"type": "Punctuation", "behavior": "Contiguous"})", "Hi?!? ok"),
            (Strings{"Hi", "?!?", " ok"}));
  EXPECT_EQ(Pre(R"({"type": "BertPreTokenizer"})", "Hey friend!  How?"),
            (Strings{"Hey", "friend", "!", "How", "?"}));
  EXPECT_EQ(Pre(R"({"type": "CharDelimiterSplit", "delimiter": "x"})", "axbxxc"),
            (Strings{"a", "b", "c"}));
}

TEST(HfPreTokenizers, Metaspace) {
  EXPECT_EQ(Pre(R"({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always"})",
                "Hey friend!"),
            (Strings{"\u2581Hey", "\u2581friend!"}));
  EXPECT_EQ(Pre(R"({"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": true})",
                "Hey   friend!"),
            (Strings{"\u2581Hey", "\u2581", "\u2581", "\u2581friend!"}));
  EXPECT_EQ(Pre(R"({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "never"})",
                "Hey friend"),
            (Strings{"Hey", "\u2581friend"}));
  // "first": only the piece at the start of the input gets the prefix.
  bool bl = false;
  auto pre = BuildPreTokenizer(
      Json::parse(
          R"({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": false})"),
      "p", &bl);
  ASSERT_TRUE(pre.ok());
  PieceList pieces;
  pieces.text = "Hey my friend how\u2581are you";
  pieces.spans = {{0, 14, true}, {14, static_cast<uint32_t>(pieces.text.size()), false}};
  (*pre)->PreTokenize(&pieces);
  ASSERT_EQ(pieces.spans.size(), 2u);
  const auto piece = [&](int i) {
    return pieces.text.substr(pieces.spans[i].begin, pieces.spans[i].end - pieces.spans[i].begin);
  };
  EXPECT_EQ(piece(0), "\u2581Hey\u2581my\u2581friend\u2581");
  EXPECT_EQ(piece(1), "how\u2581are\u2581you");
}

TEST(HfPreTokenizers, ByteLevel) {
  // Last stage: the pieces stay raw bytes (the BPE model maps them).
  bool byte_level_last = false;
  auto last = BuildPreTokenizer(Json::parse(R"({"type": "ByteLevel", "add_prefix_space": true})"),
                                "p", &byte_level_last);
  ASSERT_TRUE(last.ok());
  EXPECT_TRUE(byte_level_last);
  EXPECT_EQ(Pre(R"({"type": "ByteLevel", "add_prefix_space": true, "use_regex": true})",
                "Hello my friend, I'm  fine\n\n"),
            (Strings{" Hello", " my", " friend", ",", " I", "'m", " ", " fine", "\n\n"}));
  // Not last: later stages see GPT-2's byte characters (space is \u0120).
  EXPECT_EQ(Pre(R"({"type": "Sequence", "pretokenizers": [
                  {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
                  {"type": "Digits", "individual_digits": false}]})",
                "Hello 12\u00e9"),
            (Strings{"Hello", "\u0120", "12", "\u00c3\u00a9"}));
}

TEST(HfDecoders, EachDecoder) {
  EXPECT_EQ(Dec(R"({"type": "ByteLevel"})", {"Hello", "\u0120w\u00c3\u00a9rld"}),
            "Hello w\u00e9rld");
  EXPECT_EQ(Dec(R"({"type": "ByteLevel"})", {"\u00c3", "<\uff5cx\uff5c>"}),
            "\xEF\xBF\xBD<\uff5cx\uff5c>");  // a lone lead byte, then a token taken as text
  EXPECT_EQ(Dec(R"({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always"})",
                {"\u2581Hey", "\u2581friend!"}),
            "Hey friend!");
  EXPECT_EQ(Dec(R"({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "never"})",
                {"\u2581Hey", "\u2581friend!"}),
            " Hey friend!");
  EXPECT_EQ(Dec(R"({"type": "ByteFallback"})", {"<0x61>", "<0xE2>", "<0x98>", "<0x83>", "b"}),
            "a\u2603b");
  EXPECT_EQ(Dec(R"({"type": "ByteFallback"})", {"<0xE2>", "<0x98>", "x", "<0x7G>"}),
            "\xEF\xBF\xBD\xEF\xBF\xBDx<0x7G>");  // one U+FFFD per byte of an invalid run
  EXPECT_EQ(Dec(R"({"type": "Sequence", "decoders": [
                  {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                  {"type": "ByteFallback"}, {"type": "Fuse"},
                  {"type": "Strip", "content": " ", "start": 1, "stop": 0}]})",
                {"\u2581\u2581Hi", "<0x21>", "\u2581there"}),
            " Hi! there");
  EXPECT_EQ(Dec(R"({"type": "BPEDecoder", "suffix": "</w>"})", {"hel", "lo</w>", "you</w>"}),
            "hello you");
  EXPECT_EQ(Dec(R"({"type": "WordPiece", "prefix": "##", "cleanup": true})",
                {"un", "##aff", "##able", "day", "."}),
            "unaffable day.");
}

TEST(HfComponents, UnsupportedTypesNameTheirPath) {
  bool bl = false;
  auto pre = BuildPreTokenizer(Json::parse(R"({"type": "Sequence", "pretokenizers": [
                                  {"type": "Digits"}, {"type": "UnicodeScripts"}]})"),
                               "pre_tokenizer", &bl);
  ASSERT_FALSE(pre.ok());
  EXPECT_NE(std::string(pre.status().message()).find("pre_tokenizer.pretokenizers[1].type"),
            std::string::npos)
      << pre.status();
  auto norm = BuildNormalizer(Json::parse(R"({"type": "Precompiled"})"), "normalizer");
  ASSERT_FALSE(norm.ok());
  EXPECT_NE(std::string(norm.status().message()).find("normalizer.type"), std::string::npos);
  auto split = BuildPreTokenizer(
      Json::parse(R"({"type": "Split", "pattern": {"Regex": "[a&&b]"}, "behavior": "Isolated"})"),
      "pre_tokenizer", &bl);
  ASSERT_FALSE(split.ok());
  EXPECT_NE(std::string(split.status().message()).find("pre_tokenizer.pattern.Regex"),
            std::string::npos)
      << split.status();
  auto dec = BuildDecoder(Json::parse(R"({"type": "CTC"})"), "decoder");
  ASSERT_FALSE(dec.ok());
  EXPECT_NE(std::string(dec.status().message()).find("decoder.type"), std::string::npos);
}

}  // namespace
}  // namespace mt::data::hf

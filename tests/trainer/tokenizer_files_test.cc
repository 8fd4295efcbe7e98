// Which files a tokenizer is made of, and finding the one a model directory carries.
#include <filesystem>
#include <unistd.h>

#include <fstream>

#include "gtest/gtest.h"
#include "trainer/tokenizer_files.h"

namespace mt {
namespace {

namespace fs = std::filesystem;

class TokenizerFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mt_tokfiles_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "hub");
    fs::create_directories(dir_ / "spm");
    fs::create_directories(dir_ / "none");
    for (const char* f : {"hub/tokenizer.json", "hub/tokenizer_config.json", "spm/tokenizer.model"})
      std::ofstream(dir_ / f) << "x";
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(TokenizerFilesTest, SentencePieceIsOneFile) {
  auto files = TokenizerFiles((dir_ / "spm/tokenizer.model").string());
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(files.at("tokenizer.model"), (dir_ / "spm/tokenizer.model").string());
}

TEST_F(TokenizerFilesTest, HuggingFaceCarriesItsConfigFromFileOrDirectory) {
  for (const fs::path& p : {dir_ / "hub", dir_ / "hub/tokenizer.json"}) {
    auto files = TokenizerFiles(p.string());
    ASSERT_EQ(files.size(), 2u) << p;
    EXPECT_EQ(files.at("tokenizer.json"), (dir_ / "hub/tokenizer.json").string());
    EXPECT_EQ(files.at("tokenizer_config.json"), (dir_ / "hub/tokenizer_config.json").string());
  }
}

TEST_F(TokenizerFilesTest, FindsTheTokenizerOfAModelDirectory) {
  EXPECT_EQ(TokenizerInDirectory((dir_ / "hub").string()), (dir_ / "hub").string());
  EXPECT_EQ(TokenizerInDirectory((dir_ / "spm").string()), (dir_ / "spm/tokenizer.model").string());
  EXPECT_FALSE(TokenizerInDirectory((dir_ / "none").string()).has_value());
}

}  // namespace
}  // namespace mt

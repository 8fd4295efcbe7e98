#include "trainer/tokenizer_files.h"

#include <filesystem>

namespace mt {
namespace {

bool IsFile(const std::filesystem::path& p) {
  std::error_code ec;
  return std::filesystem::is_regular_file(p, ec);
}

}  // namespace

std::map<std::string, std::string> TokenizerFiles(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path p(path);
  if (!fs::is_directory(p, ec) && p.extension() != ".json") return {{"tokenizer.model", path}};
  const fs::path dir = fs::is_directory(p, ec) ? p : p.parent_path();
  std::map<std::string, std::string> files;
  files["tokenizer.json"] = fs::is_directory(p, ec) ? (dir / "tokenizer.json").string() : path;
  for (const char* side : {"tokenizer_config.json", "special_tokens_map.json"})
    if (IsFile(dir / side)) files[side] = (dir / side).string();
  return files;
}

std::optional<std::string> TokenizerInDirectory(const std::string& dir) {
  namespace fs = std::filesystem;
  if (IsFile(fs::path(dir) / "tokenizer.json")) return dir;
  if (IsFile(fs::path(dir) / "tokenizer.model")) return (fs::path(dir) / "tokenizer.model").string();
  return std::nullopt;
}

}  // namespace mt

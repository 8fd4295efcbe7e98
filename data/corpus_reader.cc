// data/corpus_reader.cc: globbing, chunked line reading, and the three input formats.
#include "data/corpus_reader.h"

#include <glob.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <set>
#include <string_view>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "data/brown.h"
#include "data/sha256.h"
#include "kernels/status.h"

namespace mt::data {
namespace {

// Reads a file in 1 MiB chunks, hashing every byte, and hands out its lines without the
// '\n' (a last line without one included).
absl::Status ForEachLine(const std::string& path, SourceFile* source,
                         const std::function<absl::Status(std::string_view, int64_t)>& fn) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  Sha256 hash;
  std::vector<char> chunk(1 << 20);
  std::string carry;
  int64_t line_number = 0, bytes = 0;
  absl::Status status;
  size_t n;
  while (status.ok() && (n = std::fread(chunk.data(), 1, chunk.size(), f)) > 0) {
    bytes += n;
    hash.Update(std::string_view(chunk.data(), n));
    size_t begin = 0;
    for (size_t i = 0; i < n && status.ok(); ++i) {
      if (chunk[i] != '\n') continue;
      std::string_view piece(chunk.data() + begin, i - begin);
      if (!carry.empty()) {
        carry.append(piece);
        status = fn(carry, ++line_number);
        carry.clear();
      } else {
        status = fn(piece, ++line_number);
      }
      begin = i + 1;
    }
    carry.append(chunk.data() + begin, n - begin);
  }
  const bool read_error = std::ferror(f) != 0;
  std::fclose(f);
  RETURN_IF_ERROR(status);
  if (read_error) return absl::DataLossError(absl::StrCat(path, ": read error"));
  if (!carry.empty()) RETURN_IF_ERROR(fn(carry, ++line_number));
  source->path = path;
  source->bytes = bytes;
  source->sha256 = hash.HexDigest();
  return absl::OkStatus();
}

constexpr char kSpace[] = " \t\r\n\f\v";

bool IsBlank(std::string_view line) {
  return line.find_first_not_of(kSpace) == std::string_view::npos;
}

// Emits `text` stripped, unless it is blank.
absl::Status EmitText(std::string text, const std::function<absl::Status(std::string&&)>& fn) {
  const size_t begin = text.find_first_not_of(kSpace);
  if (begin == std::string::npos) return absl::OkStatus();
  text.erase(text.find_last_not_of(kSpace) + 1);
  text.erase(0, begin);
  return fn(std::move(text));
}

}  // namespace

absl::StatusOr<InputFormat> ParseInputFormat(const std::string& name) {
  if (name == "auto") return InputFormat::kAuto;
  if (name == "text") return InputFormat::kText;
  if (name == "jsonl") return InputFormat::kJsonl;
  if (name == "brown") return InputFormat::kBrown;
  return absl::InvalidArgumentError(
      absl::StrCat("--format ", name, ": expected text, jsonl or brown"));
}

const char* InputFormatName(InputFormat format) {
  switch (format) {
    case InputFormat::kAuto:
      return "auto";
    case InputFormat::kText:
      return "text";
    case InputFormat::kJsonl:
      return "jsonl";
    case InputFormat::kBrown:
      return "brown";
  }
  return "?";
}

absl::StatusOr<std::vector<std::string>> ExpandInputs(const std::vector<std::string>& patterns) {
  std::vector<std::string> files;
  std::set<std::string> seen;
  for (const std::string& pattern : patterns) {
    glob_t g;
    const int rc = ::glob(pattern.c_str(), GLOB_TILDE | GLOB_BRACE, nullptr, &g);
    if (rc == GLOB_NOMATCH) {
      return absl::NotFoundError(absl::StrCat(
          "--input ", pattern, ": no such file",
          pattern.find_first_of("*?[") != std::string::npos ? " matches this pattern" : ""));
    }
    if (rc != 0) return absl::InternalError(absl::StrCat("--input ", pattern, ": glob failed"));
    std::vector<std::string> matches(g.gl_pathv, g.gl_pathv + g.gl_pathc);
    ::globfree(&g);
    for (const std::string& path : matches) {
      struct stat st;
      if (::stat(path.c_str(), &st) != 0) {
        return absl::NotFoundError(absl::StrCat("--input ", path, ": no such file"));
      }
      if (!S_ISREG(st.st_mode)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--input ", path, ": not a regular file (give files, or a glob such as DIR/*.txt)"));
      }
      if (seen.insert(path).second) files.push_back(path);
    }
  }
  return files;
}

absl::Status ForEachDocument(const std::vector<std::string>& files, const CorpusOptions& options,
                             const std::function<absl::Status(std::string&&)>& fn,
                             std::vector<SourceFile>* sources) {
  for (const std::string& path : files) {
    InputFormat format = options.format;
    if (format == InputFormat::kAuto) {
      format = absl::EndsWith(path, ".jsonl") ? InputFormat::kJsonl : InputFormat::kText;
    }
    SourceFile source;
    std::string doc;  // the document being gathered (text and brown)
    absl::Status status;
    if (format == InputFormat::kJsonl) {
      status = ForEachLine(path, &source, [&](std::string_view line, int64_t line_number) {
        if (IsBlank(line)) return absl::OkStatus();
        const nlohmann::json obj = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
        if (obj.is_discarded() || !obj.is_object()) {
          return absl::InvalidArgumentError(
              absl::StrCat(path, ":", line_number, ": not a JSON object"));
        }
        const auto it = obj.find(options.json_key);
        if (it == obj.end()) {
          return absl::InvalidArgumentError(absl::StrCat(path, ":", line_number, ": no key \"",
                                                         options.json_key, "\" (--json-key)"));
        }
        if (!it->is_string()) {
          return absl::InvalidArgumentError(absl::StrCat(path, ":", line_number, ": \"",
                                                         options.json_key, "\" is a ",
                                                         it->type_name(), ", expected a string"));
        }
        std::string text = it->get<std::string>();
        if (IsBlank(text)) return absl::OkStatus();
        return fn(std::move(text));
      });
    } else if (format == InputFormat::kText && options.split_blank_lines) {
      status = ForEachLine(path, &source, [&](std::string_view line, int64_t) {
        if (IsBlank(line)) return EmitText(std::exchange(doc, std::string()), fn);
        if (!doc.empty()) doc.push_back('\n');
        doc.append(line);
        return absl::OkStatus();
      });
      if (status.ok()) status = EmitText(std::move(doc), fn);
    } else {
      status = ForEachLine(path, &source, [&](std::string_view line, int64_t line_number) {
        if (line_number > 1) doc.push_back('\n');
        doc.append(line);
        return absl::OkStatus();
      });
      if (status.ok() && format == InputFormat::kBrown) {
        absl::StatusOr<std::string> text = BrownToText(doc, path);
        status = text.ok() ? EmitText(*std::move(text), fn) : text.status();
      } else if (status.ok()) {
        status = EmitText(std::move(doc), fn);
      }
    }
    RETURN_IF_ERROR(status);
    if (sources != nullptr) sources->push_back(std::move(source));
  }
  return absl::OkStatus();
}

}  // namespace mt::data

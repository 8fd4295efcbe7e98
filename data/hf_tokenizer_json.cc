// data/hf_tokenizer_json.cc: typed access to tokenizer.json fields, and GPT-2's byte map.
#include <array>

#include "absl/strings/str_cat.h"
#include "data/hf_tokenizer_internal.h"
#include "data/unicode_text.h"

namespace mt::data::hf {

absl::Status JsonError(const std::string& path, const std::string& message) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", message));
}

absl::StatusOr<std::string> GetString(const Json& obj, const std::string& path, const char* key,
                                      std::string_view fallback) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::string(fallback);
  if (!it->is_string()) return JsonError(absl::StrCat(path, ".", key), "expected a string");
  return it->get<std::string>();
}

absl::StatusOr<bool> GetBool(const Json& obj, const std::string& path, const char* key,
                             bool fallback) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) return JsonError(absl::StrCat(path, ".", key), "expected true or false");
  return it->get<bool>();
}

absl::StatusOr<int64_t> GetInt(const Json& obj, const std::string& path, const char* key,
                               int64_t fallback) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_number_integer()) {
    return JsonError(absl::StrCat(path, ".", key), "expected an integer");
  }
  return it->get<int64_t>();
}

absl::StatusOr<std::string> GetType(const Json& obj, const std::string& path) {
  if (!obj.is_object()) return JsonError(path, "expected an object");
  auto it = obj.find("type");
  if (it == obj.end() || !it->is_string()) {
    return JsonError(absl::StrCat(path, ".type"), "expected the component's type name");
  }
  return it->get<std::string>();
}

namespace {

// GPT-2's bytes_to_unicode(): printable Latin-1 bytes stand for themselves, the other 68
// bytes take the code points 256, 257, ... in byte order.
struct ByteMap {
  std::array<std::string, 256> utf8;
  std::array<int, 324> from_cp;  // code point -> byte, -1 elsewhere
  ByteMap() {
    from_cp.fill(-1);
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const char32_t cp = printable ? b : next++;
      unicode::AppendUtf8(cp, &utf8[b]);
      from_cp[cp] = b;
    }
  }
};
const ByteMap& Map() {
  static const ByteMap map;
  return map;
}

}  // namespace

const std::string& ByteToUnicode(uint8_t byte) { return Map().utf8[byte]; }

int UnicodeToByte(char32_t cp) { return cp < 324 ? Map().from_cp[cp] : -1; }

}  // namespace mt::data::hf

// data/unicode_text.h: the UTF-8 and Unicode primitives the Hugging Face tokenizer needs.
//
// Invalid UTF-8 is repaired the WHATWG way (every maximal invalid subpart becomes one U+FFFD),
// which is what Node's TextDecoder, Python's errors="replace" and Rust's from_utf8_lossy do,
// so text read from a broken file tokenizes as Hugging Face's own readers would see it.
// Normalization forms and case mapping go through ICU; character classes (White_Space, \w,
// numbers, punctuation) follow the definitions Hugging Face's Rust implementation uses.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace mt::data::unicode {

// `text` itself when it is valid UTF-8; otherwise the repaired copy, kept in `*storage`.
std::string_view SanitizeUtf8(std::string_view text, std::string* storage);
bool IsValidUtf8(std::string_view text);

// The code point starting at text[pos] of valid UTF-8, and its length in bytes.
char32_t DecodeAt(std::string_view text, size_t pos, int* length);
inline int Utf8Length(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}
void AppendUtf8(char32_t cp, std::string* out);

enum class NormalForm { kNFC, kNFD, kNFKC, kNFKD };
// Normalizes valid UTF-8 (ICU).
std::string Normalize(std::string_view text, NormalForm form);
// Full Unicode lowercase mapping of each character on its own (no final-sigma context),
// locale-independent: what Rust's tokenizers Lowercase normalizer does.
std::string ToLower(std::string_view text);
// Removes combining marks (general category M), as StripAccents does after NFD.
std::string RemoveMarks(std::string_view text);

// Unicode White_Space (what Rust's char::is_whitespace and Oniguruma's \s match).
bool IsWhiteSpace(char32_t cp);
// UTS #18 word character: Alphabetic, Mark, Decimal_Number, Connector_Punctuation,
// Join_Control (Rust regex's \w).
bool IsWordChar(char32_t cp);
// General category N (Nd, Nl, No): Rust's char::is_numeric.
bool IsNumeric(char32_t cp);
// ASCII punctuation or general category P: the Punctuation pre-tokenizer's test.
bool IsPunctuation(char32_t cp);

}  // namespace mt::data::unicode

// data/unicode_text.cc: UTF-8 repair and the ICU-backed Unicode operations.
#include "data/unicode_text.h"

#include <unicode/bytestream.h>
#include <unicode/casemap.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>

#include <cstring>

#include "kernels/status.h"

namespace mt::data::unicode {
namespace {

constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD

// Length of the ASCII prefix, eight bytes at a time.
size_t AsciiPrefix(std::string_view text) {
  size_t i = 0;
  for (; i + 8 <= text.size(); i += 8) {
    uint64_t word;
    std::memcpy(&word, text.data() + i, 8);
    if (word & 0x8080808080808080ULL) break;
  }
  while (i < text.size() && static_cast<unsigned char>(text[i]) < 0x80) ++i;
  return i;
}

// The WHATWG UTF-8 decoder over `text` from `pos`, calling emit(begin, end) for each valid
// sequence and emit_bad() for each maximal invalid subpart. Returns true when all was valid.
template <typename Valid, typename Bad>
bool Scan(std::string_view text, Valid emit, Bad emit_bad) {
  bool all_valid = true;
  size_t i = 0;
  const size_t n = text.size();
  while (i < n) {
    const unsigned char b = static_cast<unsigned char>(text[i]);
    if (b < 0x80) {
      const size_t run = i + AsciiPrefix(text.substr(i));
      emit(i, run);
      i = run;
      continue;
    }
    int needed;
    unsigned char lower = 0x80, upper = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
      needed = 1;
    } else if (b >= 0xE0 && b <= 0xEF) {
      needed = 2;
      if (b == 0xE0) lower = 0xA0;
      if (b == 0xED) upper = 0x9F;  // no surrogates
    } else if (b >= 0xF0 && b <= 0xF4) {
      needed = 3;
      if (b == 0xF0) lower = 0x90;
      if (b == 0xF4) upper = 0x8F;  // nothing above U+10FFFF
    } else {
      all_valid = false;
      emit_bad();
      ++i;
      continue;
    }
    size_t j = i + 1;
    int seen = 0;
    while (seen < needed && j < n) {
      const unsigned char c = static_cast<unsigned char>(text[j]);
      if (c < lower || c > upper) break;
      lower = 0x80;
      upper = 0xBF;
      ++seen;
      ++j;
    }
    if (seen == needed) {
      emit(i, j);
    } else {
      // The maximal subpart [i, j) is one U+FFFD; the byte that broke it starts afresh.
      all_valid = false;
      emit_bad();
    }
    i = j;
  }
  return all_valid;
}

const icu::Normalizer2* NormalizerFor(NormalForm form) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = nullptr;
  switch (form) {
    case NormalForm::kNFC:
      n = icu::Normalizer2::getNFCInstance(status);
      break;
    case NormalForm::kNFD:
      n = icu::Normalizer2::getNFDInstance(status);
      break;
    case NormalForm::kNFKC:
      n = icu::Normalizer2::getNFKCInstance(status);
      break;
    case NormalForm::kNFKD:
      n = icu::Normalizer2::getNFKDInstance(status);
      break;
  }
  MT_CHECK(U_SUCCESS(status) && n != nullptr,
           "ICU normalizer data unavailable: ", u_errorName(status));
  return n;
}

}  // namespace

bool IsValidUtf8(std::string_view text) {
  return Scan(
      text, [](size_t, size_t) {}, [] {});
}

std::string_view SanitizeUtf8(std::string_view text, std::string* storage) {
  const size_t ascii = AsciiPrefix(text);
  if (ascii == text.size() || IsValidUtf8(text.substr(ascii))) return text;
  storage->clear();
  storage->reserve(text.size() + 16);
  Scan(
      text, [&](size_t b, size_t e) { storage->append(text.data() + b, e - b); },
      [&] { storage->append(kReplacement, 3); });
  return *storage;
}

char32_t DecodeAt(std::string_view text, size_t pos, int* length) {
  const unsigned char b = static_cast<unsigned char>(text[pos]);
  const int len = Utf8Length(b);
  *length = len;
  if (len == 1) return b;
  char32_t cp = b & (0xFF >> (len + 1));
  for (int k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(text[pos + k]) & 0x3F);
  return cp;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string Normalize(std::string_view text, NormalForm form) {
  const icu::Normalizer2* n = NormalizerFor(form);
  const icu::StringPiece piece(text.data(), static_cast<int32_t>(text.size()));
  UErrorCode status = U_ZERO_ERROR;
  if (n->isNormalizedUTF8(piece, status) && U_SUCCESS(status)) return std::string(text);
  status = U_ZERO_ERROR;
  std::string out;
  icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(text.size()));
  n->normalizeUTF8(0, piece, sink, nullptr, status);
  MT_CHECK(U_SUCCESS(status), "ICU normalization failed: ", u_errorName(status));
  return out;
}

std::string ToLower(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      out.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : static_cast<char>(c));
      ++i;
      continue;
    }
    // One character at a time, as Rust's NormalizedString::lowercase does: the full mapping
    // (U+0130 becomes two characters) but no context (a final capital sigma gives σ).
    const int len = Utf8Length(c);
    icu::StringByteSink<std::string> sink(&out);
    UErrorCode status = U_ZERO_ERROR;
    icu::CaseMap::utf8ToLower("", 0, icu::StringPiece(text.data() + i, len), sink, nullptr, status);
    MT_CHECK(U_SUCCESS(status), "ICU lowercasing failed: ", u_errorName(status));
    i += len;
  }
  return out;
}

std::string RemoveMarks(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    int len;
    const char32_t cp = DecodeAt(text, i, &len);
    if ((U_GET_GC_MASK(static_cast<UChar32>(cp)) & U_GC_M_MASK) == 0) out.append(text, i, len);
    i += len;
  }
  return out;
}

bool IsWhiteSpace(char32_t cp) {
  switch (cp) {
    case 0x09:
    case 0x0A:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x20:
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

bool IsWordChar(char32_t cp) {
  if (cp < 0x80) {
    return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || (cp >= '0' && cp <= '9') ||
           cp == '_';
  }
  const UChar32 c = static_cast<UChar32>(cp);
  return u_hasBinaryProperty(c, UCHAR_ALPHABETIC) ||
         (U_GET_GC_MASK(c) & (U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK)) != 0 || cp == 0x200C ||
         cp == 0x200D;
}

bool IsNumeric(char32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return (U_GET_GC_MASK(static_cast<UChar32>(cp)) & U_GC_N_MASK) != 0;
}

bool IsPunctuation(char32_t cp) {
  if (cp < 0x80) {
    return (cp >= 0x21 && cp <= 0x2F) || (cp >= 0x3A && cp <= 0x40) || (cp >= 0x5B && cp <= 0x60) ||
           (cp >= 0x7B && cp <= 0x7E);
  }
  return (U_GET_GC_MASK(static_cast<UChar32>(cp)) & U_GC_P_MASK) != 0;
}

}  // namespace mt::data::unicode

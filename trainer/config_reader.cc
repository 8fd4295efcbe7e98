// trainer/config_reader.cc: typed, strict reading of YAML values for the config (scalars,
// token counts, schedules, maps of known keys), with one-line errors that say where.
//
// yaml-cpp keeps scalars as text, so the typing is ours: a plain `10` is an integer, a quoted
// "10" is a string, `1.5` is not an integer, `yes` is not a boolean. That strictness is the
// point: a typo'd value fails here, with its line, rather than as a strange run later.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "trainer/config_internal.h"

namespace mt {
namespace config_internal {
namespace {

constexpr absl::string_view kScheduleExpected =
    "a number or a list of segments like {until: 25B, linear: [0, 2.2e-4]} "
    "(shapes: constant: v, linear: [a, b], cosine: [a, b])";
constexpr absl::string_view kTokensExpected =
    "a token count: a number with an optional K/M/B/T suffix (e.g. 500000, 1e6, 25B, 14.3T)";

// Quoted scalars carry the non-specific tag "!"; plain ones "?".
bool IsQuoted(const YAML::Node& node) { return node.Tag() == "!"; }

// YAML numbers may carry a leading '+', std::from_chars does not take one.
absl::string_view StripPlus(absl::string_view s) {
  return (s.size() > 1 && s[0] == '+') ? s.substr(1) : s;
}

bool ParseFiniteDouble(absl::string_view s, double* out) {
  s = StripPlus(s);
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && end == s.data() + s.size() && std::isfinite(*out);
}

// True when `a` is `b` or lies under it ("a.b.c" under "a.b", "a.b[0]" under "a.b").
bool PathUnder(const std::string& a, const std::string& b) {
  if (a.size() < b.size() || a.compare(0, b.size(), b) != 0) return false;
  return a.size() == b.size() || a[b.size()] == '.' || a[b.size()] == '[';
}

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1] ? 1 : 0)});
      diag = up;
    }
  }
  return row[b.size()];
}

}  // namespace

std::string JoinPath(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : absl::StrCat(prefix, ".", key);
}

std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
      return "null";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Scalar: {
      std::string s = node.Scalar();
      if (s.size() > 60) s = s.substr(0, 57) + "...";
      return IsQuoted(node) ? absl::StrCat("the string \"", s, "\"") : s;
    }
    default:
      return "nothing";
  }
}

bool IsPlainNumber(const YAML::Node& node) {
  double v;
  return node.IsScalar() && !IsQuoted(node) && ParseFiniteDouble(node.Scalar(), &v);
}

Reader::Reader(std::string source, bool has_lines, std::vector<std::string> overrides,
               KeyLocations* locations, std::string record_prefix)
    : source_(std::move(source)),
      has_lines_(has_lines),
      overrides_(std::move(overrides)),
      locations_(locations),
      record_prefix_(std::move(record_prefix)) {}

bool Reader::FromOverride(const std::string& path) const {
  return std::any_of(overrides_.begin(), overrides_.end(),
                     [&](const std::string& o) { return PathUnder(path, o); });
}

std::string Reader::Where(const YAML::Node& node, const std::string& path) const {
  for (const std::string& o : overrides_) {
    if (PathUnder(path, o)) return absl::StrCat("--set ", o);
  }
  const int line = node.IsDefined() ? node.Mark().line : -1;
  if (line < 0) {
    // Maps that --set created on the way to its key have no position of their own.
    for (const std::string& o : overrides_) {
      if (PathUnder(o, path)) return absl::StrCat("--set ", o);
    }
  }
  if (has_lines_ && line >= 0) return absl::StrCat(source_, ":", line + 1);
  return source_;
}

absl::Status Reader::Error(const YAML::Node& node, const std::string& path, absl::string_view what,
                           absl::string_view expected) const {
  return absl::InvalidArgumentError(
      absl::StrCat(Where(node, path), ": ", path, ": ", what, "; expected ", expected));
}

absl::StatusOr<int64_t> Reader::Int(const YAML::Node& node, const std::string& path) const {
  if (node.IsScalar() && !IsQuoted(node)) {
    absl::string_view s = StripPlus(node.Scalar());
    int64_t v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (!s.empty() && end == s.data() + s.size()) {
      if (ec == std::errc()) return v;
      if (ec == std::errc::result_out_of_range) {
        return Error(node, path, absl::StrCat("got ", s, ", which is out of range"),
                     "a 64-bit integer");
      }
    }
  }
  return Error(node, path, absl::StrCat("got ", Describe(node)), "an integer");
}

absl::StatusOr<uint64_t> Reader::UInt(const YAML::Node& node, const std::string& path) const {
  if (node.IsScalar() && !IsQuoted(node)) {
    absl::string_view s = StripPlus(node.Scalar());
    uint64_t v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (!s.empty() && end == s.data() + s.size() && ec == std::errc()) return v;
  }
  return Error(node, path, absl::StrCat("got ", Describe(node)),
               "an integer in [0, 18446744073709551615]");
}

absl::StatusOr<double> Reader::Double(const YAML::Node& node, const std::string& path) const {
  double v = 0;
  if (node.IsScalar() && !IsQuoted(node) && ParseFiniteDouble(node.Scalar(), &v)) return v;
  return Error(node, path, absl::StrCat("got ", Describe(node)), "a finite number");
}

absl::StatusOr<bool> Reader::Bool(const YAML::Node& node, const std::string& path) const {
  if (node.IsScalar() && !IsQuoted(node)) {
    const std::string& s = node.Scalar();
    if (s == "true" || s == "True" || s == "TRUE") return true;
    if (s == "false" || s == "False" || s == "FALSE") return false;
  }
  return Error(node, path, absl::StrCat("got ", Describe(node)), "true or false");
}

absl::StatusOr<std::string> Reader::String(const YAML::Node& node, const std::string& path) const {
  if (node.IsNull()) return std::string();
  if (node.IsScalar()) return node.Scalar();
  return Error(node, path, absl::StrCat("got ", Describe(node)), "a string");
}

absl::StatusOr<double> Reader::Tokens(const YAML::Node& node, const std::string& path) const {
  if (node.IsScalar()) {
    absl::StatusOr<double> v = ParseTokenCount(node.Scalar());
    if (v.ok()) return *v;
  }
  return Error(node, path, absl::StrCat("got ", Describe(node)), kTokensExpected);
}

absl::StatusOr<Schedule> Reader::ReadSchedule(const YAML::Node& node,
                                              const std::string& path) const {
  if (IsPlainNumber(node)) {
    ASSIGN_OR_RETURN(double v, Double(node, path));
    return Schedule::Constant(v);
  }
  if (!node.IsSequence() || node.size() == 0) {
    return Error(node, path, absl::StrCat("got ", Describe(node)), kScheduleExpected);
  }
  Schedule schedule;
  for (size_t i = 0; i < node.size(); ++i) {
    const YAML::Node item = node[i];
    const std::string item_path = absl::StrCat(path, "[", i, "]");
    if (!item.IsMap()) {
      return Error(item, item_path, absl::StrCat("got ", Describe(item)),
                   "a segment like {until: 25B, linear: [0, 2.2e-4]}");
    }
    Schedule::Segment seg;
    YAML::Node until;
    int shapes = 0;
    // Segments are not part of the config struct; read them through a throwaway reader so
    // their keys do not land in the key locations.
    Reader local(source_, has_lines_, overrides_, nullptr);
    RETURN_IF_ERROR(local.ReadMapEntries(
        item, item_path, {"until", "constant", "linear", "cosine"},
        {"until", "constant", "linear", "cosine"},
        [&](size_t k, const YAML::Node& v, const std::string& kpath) -> absl::Status {
          if (k == 0) {
            until.reset(v);
            ASSIGN_OR_RETURN(seg.end_tokens, Tokens(v, kpath));
            return absl::OkStatus();
          }
          ++shapes;
          if (k == 1) {
            seg.shape = Schedule::Shape::kConstant;
            ASSIGN_OR_RETURN(seg.start_value, Double(v, kpath));
            seg.end_value = seg.start_value;
            return absl::OkStatus();
          }
          seg.shape = k == 2 ? Schedule::Shape::kLinear : Schedule::Shape::kCosine;
          if (!v.IsSequence() || v.size() != 2) {
            return Error(v, kpath, absl::StrCat("got ", Describe(v)), "[start_value, end_value]");
          }
          ASSIGN_OR_RETURN(seg.start_value, Double(v[0], kpath + "[0]"));
          ASSIGN_OR_RETURN(seg.end_value, Double(v[1], kpath + "[1]"));
          return absl::OkStatus();
        }));
    if (!until.IsDefined() || until.IsNull()) {
      return Error(item, item_path, "the segment has no until",
                   "until: <tokens at which the segment ends>");
    }
    if (shapes != 1) {
      return Error(item, item_path,
                   shapes == 0 ? "the segment has no shape" : "the segment has several shapes",
                   "exactly one of constant: v, linear: [a, b], cosine: [a, b]");
    }
    const double prev_end = schedule.segments.empty() ? 0 : schedule.segments.back().end_tokens;
    if (seg.end_tokens <= prev_end) {
      return Error(until, item_path + ".until",
                   absl::StrCat("got ", seg.end_tokens, " tokens, not after the previous end (",
                                prev_end, ")"),
                   "until values strictly increasing and > 0");
    }
    schedule.segments.push_back(seg);
  }
  return schedule;
}

absl::Status Reader::ReadMapEntries(
    const YAML::Node& node, const std::string& prefix, const std::vector<std::string>& names,
    const std::vector<std::string>& listed,
    const std::function<absl::Status(size_t, const YAML::Node&, const std::string&)>& read) {
  if (node.IsNull()) return absl::OkStatus();
  const std::string where_keys = prefix.empty() ? "at the top level" : "in " + prefix;
  if (!node.IsMap()) {
    return Error(node, prefix.empty() ? "(top level)" : prefix,
                 absl::StrCat("got ", Describe(node)),
                 absl::StrCat("a map of the keys ", where_keys, ": ", absl::StrJoin(listed, ", ")));
  }
  std::set<std::string> seen;
  for (auto it = node.begin(); it != node.end(); ++it) {
    const YAML::Node key_node = it->first;
    const YAML::Node value = it->second;
    if (!key_node.IsScalar()) {
      return Error(key_node, prefix, absl::StrCat("got ", Describe(key_node), " as a key"),
                   "a key name");
    }
    const std::string& key = key_node.Scalar();
    const std::string path = JoinPath(prefix, key);
    if (!seen.insert(key).second) {
      return Error(key_node, path, "the key appears twice", "each key once");
    }
    auto found = std::find(names.begin(), names.end(), key);
    if (found == names.end()) {
      std::string what = absl::StrCat("unknown key ", path);
      size_t best = key.size() / 3 + 1;
      std::string suggestion;
      for (const std::string& n : listed) {
        const size_t d = EditDistance(key, n);
        if (d <= best) best = d, suggestion = n;
      }
      if (!suggestion.empty()) absl::StrAppend(&what, " (did you mean ", suggestion, "?)");
      return Error(
          key_node, path, what,
          absl::StrCat("one of the known keys ", where_keys, ": ", absl::StrJoin(listed, ", ")));
    }
    if (locations_ != nullptr) (*locations_)[record_prefix_ + path] = Where(value, path);
    RETURN_IF_ERROR(read(found - names.begin(), value, path));
  }
  return absl::OkStatus();
}

}  // namespace config_internal

absl::StatusOr<double> ParseTokenCount(const std::string& text) {
  absl::string_view s = text;
  s = absl::StripAsciiWhitespace(s);
  // K/M/B/T: powers of 1000, as token budgets are usually written (25B, 14.8T).
  double scale = 1;
  const size_t suffix = s.empty() ? absl::string_view::npos
                                  : absl::string_view("KMBT").find(absl::ascii_toupper(s.back()));
  if (suffix != absl::string_view::npos) {
    scale = std::pow(1000.0, static_cast<double>(suffix + 1));
    s.remove_suffix(1);
  }
  double v = 0;
  if (!config_internal::ParseFiniteDouble(s, &v) || v < 0) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not a token count; expected ",
                                                   config_internal::kTokensExpected));
  }
  // Token counts are whole numbers; rounding keeps 14.3T at exactly 1.43e13.
  return std::round(v * scale);
}

double Schedule::Value(double tokens) const {
  MT_CHECK(!segments.empty(), "Schedule::Value on an empty schedule");
  double start = 0;
  for (const Segment& seg : segments) {
    if (tokens < seg.end_tokens) {
      const double frac = std::clamp((tokens - start) / (seg.end_tokens - start), 0.0, 1.0);
      switch (seg.shape) {
        case Shape::kConstant:
          return seg.start_value;
        case Shape::kLinear:
          return seg.start_value + (seg.end_value - seg.start_value) * frac;
        case Shape::kCosine:
          return seg.end_value +
                 (seg.start_value - seg.end_value) * (1 + std::cos(M_PI * frac)) / 2;
      }
    }
    start = seg.end_tokens;
  }
  return segments.back().end_value;
}

}  // namespace mt

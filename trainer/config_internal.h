// trainer/config_internal.h: pieces shared by the config readers (YAML, HF config.json) and
// the validator. Not for use outside trainer/config*.cc.
//
// Reading is table-driven: each section is a list of Key<S> (name + reader into a field of S),
// so the set of accepted keys, the "known keys" in error messages and the struct fields stay
// in one place. Every error comes out of Reader::Error as one line:
//   <file>:<line>: <key.path>: <what was wrong>; expected <what>
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/status.h"
#include "nlohmann/json.hpp"
#include "trainer/config.h"
#include "yaml-cpp/yaml.h"

namespace mt::config_internal {

// Where each key was set ("run.yaml:12", "--set training.steps", "hf/config.json"), by full
// key path, so that validation can point at the line even for rules that span several keys.
using KeyLocations = std::map<std::string, std::string>;

class Reader;

// One accepted key of a section: its name and how to store its value into a field of S.
// `listed` = false for keys we accept and ignore (HF keys with no meaning here), which are
// left out of the "known keys" list in messages.
template <class S>
struct Key {
  std::string name;
  std::function<absl::Status(Reader&, const YAML::Node&, const std::string& path, S*)> read;
  bool listed = true;
};

class Reader {
 public:
  // `has_lines`: whether node marks are real line numbers in `source` (false for JSON).
  // `overrides`: key paths set by --set; errors at or under them name the --set instead.
  // Every key read is recorded in `locations` under `record_prefix` + its path.
  Reader(std::string source, bool has_lines, std::vector<std::string> overrides,
         KeyLocations* locations, std::string record_prefix = "");

  const std::string& source() const { return source_; }
  // "file:line", "--set a.b" or just "file" (JSON, nodes without a position).
  std::string Where(const YAML::Node& node, const std::string& path) const;
  // True when `path` (or a map above it) was set by --set.
  bool FromOverride(const std::string& path) const;
  absl::Status Error(const YAML::Node& node, const std::string& path, absl::string_view what,
                     absl::string_view expected) const;

  absl::StatusOr<int64_t> Int(const YAML::Node& node, const std::string& path) const;
  absl::StatusOr<uint64_t> UInt(const YAML::Node& node, const std::string& path) const;
  absl::StatusOr<double> Double(const YAML::Node& node, const std::string& path) const;
  absl::StatusOr<bool> Bool(const YAML::Node& node, const std::string& path) const;
  // Any scalar; null reads as "".
  absl::StatusOr<std::string> String(const YAML::Node& node, const std::string& path) const;
  // A token count: 500000, 1e6, "25B", "14.3T".
  absl::StatusOr<double> Tokens(const YAML::Node& node, const std::string& path) const;
  // A number (constant) or a list of {until, constant|linear|cosine} segments.
  absl::StatusOr<Schedule> ReadSchedule(const YAML::Node& node, const std::string& path) const;

  // Reads every entry of the map `node` (path `prefix`) through `keys`; an unknown key is an
  // error listing the known ones. A null node (empty section) reads nothing.
  template <class S>
  absl::Status ReadMap(const YAML::Node& node, const std::string& prefix,
                       const std::vector<Key<S>>& keys, S* out);

 private:
  absl::Status ReadMapEntries(
      const YAML::Node& node, const std::string& prefix, const std::vector<std::string>& names,
      const std::vector<std::string>& listed,
      const std::function<absl::Status(size_t, const YAML::Node&, const std::string&)>& read);

  std::string source_;
  bool has_lines_;
  std::vector<std::string> overrides_;
  KeyLocations* locations_;
  std::string record_prefix_;
};

// "a" + "b" -> "a.b"; "" + "b" -> "b".
std::string JoinPath(const std::string& prefix, const std::string& key);
// True for a plain (unquoted) scalar that reads as a finite number.
bool IsPlainNumber(const YAML::Node& node);
// What a node holds, for "got ..." in messages: `null`, `a list`, `12.5`, `the string "x"`.
std::string Describe(const YAML::Node& node);

template <class S>
absl::Status Reader::ReadMap(const YAML::Node& node, const std::string& prefix,
                             const std::vector<Key<S>>& keys, S* out) {
  std::vector<std::string> names, listed;
  for (const Key<S>& k : keys) {
    names.push_back(k.name);
    if (k.listed) listed.push_back(k.name);
  }
  return ReadMapEntries(node, prefix, names, listed,
                        [&](size_t i, const YAML::Node& value, const std::string& path) {
                          return keys[i].read(*this, value, path, out);
                        });
}

// A key stored straight into field `field` of S, read according to the field's type.
template <class S, class T>
Key<S> Field(const char* name, T S::*field) {
  return {name,
          [field](Reader& r, const YAML::Node& n, const std::string& path, S* s) -> absl::Status {
            if constexpr (std::is_same_v<T, int64_t>) {
              ASSIGN_OR_RETURN(s->*field, r.Int(n, path));
            } else if constexpr (std::is_same_v<T, uint64_t>) {
              ASSIGN_OR_RETURN(s->*field, r.UInt(n, path));
            } else if constexpr (std::is_same_v<T, double>) {
              ASSIGN_OR_RETURN(s->*field, r.Double(n, path));
            } else if constexpr (std::is_same_v<T, bool>) {
              ASSIGN_OR_RETURN(s->*field, r.Bool(n, path));
            } else if constexpr (std::is_same_v<T, std::string>) {
              ASSIGN_OR_RETURN(s->*field, r.String(n, path));
            } else if constexpr (std::is_same_v<T, Schedule>) {
              ASSIGN_OR_RETURN(s->*field, r.ReadSchedule(n, path));
            } else {
              static_assert(sizeof(T) == 0, "no reader for this field type");
            }
            return absl::OkStatus();
          }};
}

// Applies the model keys in map `node` onto `model` (HF DeepseekV3 names). `allow_hf_config`
// accepts the YAML-only key hf_config (which the caller has already handled).
absl::Status ApplyModelKeys(Reader& reader, const YAML::Node& node, const std::string& prefix,
                            bool allow_hf_config, ModelConfig* model);
// Reads a config.json object into `model` (keys absent keep their current values), recording
// each key as "model.<key>" in `locations`.
absl::Status ApplyHfJson(const nlohmann::json& j, const std::string& source,
                         KeyLocations* locations, ModelConfig* model);
// ValidateConfig with the positions of the keys, for messages that point at a line.
absl::Status ValidateConfigAt(const Config& config, const KeyLocations& locations);

}  // namespace mt::config_internal

// launch/planner_cluster.cc: reading and checking cluster descriptions (planner_cluster.h).
#include "launch/planner_cluster.h"

#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/status.h"
#include "yaml-cpp/yaml.h"

namespace mt::plan {

double ClusterSpec::IntraNodeBytesPerSecond() const {
  if (nvlink_gbps > 0) return nvlink_gbps * nvlink_efficiency * 1e9;
  return pcie_gbps * pcie_efficiency * 1e9;
}

double ClusterSpec::InterNodeBytesPerSecond() const {
  return internode_gbps * internode_efficiency * 1e9;
}

double ClusterSpec::UsableMemoryBytes() const {
  return memory_gib * 1073741824.0 * usable_memory_fraction;
}

namespace {

absl::Status KeyError(const std::string& source, const YAML::Node& node, const std::string& key,
                      const std::string& what, const std::string& expected) {
  const int line = node.Mark().line;
  const std::string where = line >= 0 ? absl::StrCat(source, ":", line + 1) : source;
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": ", key, ": ", what, "; expected ", expected));
}

}  // namespace

absl::StatusOr<ClusterSpec> ParseClusterSpec(const std::string& yaml_text,
                                             const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ":", e.mark.line + 1, ": not valid YAML: ", e.msg));
  }
  if (!root.IsMap()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": expected a map of cluster keys (name, gpu, num_gpus, ...)"));
  }
  ClusterSpec c;
  // Each key: whether it is required, and how to store it.
  struct Field {
    bool required;
    std::function<absl::Status(const YAML::Node&, const std::string&)> read;
  };
  auto number = [&](double* out, double lo, double hi) {
    return [&, out, lo, hi](const YAML::Node& n, const std::string& key) -> absl::Status {
      double v = 0;
      if (!n.IsScalar() || !YAML::convert<double>::decode(n, v) || !std::isfinite(v) || v < lo ||
          v > hi) {
        return KeyError(source, n, key,
                        absl::StrCat("got ", n.IsScalar() ? n.Scalar() : "a non-scalar"),
                        absl::StrCat("a number in [", lo, ", ", hi, "]"));
      }
      *out = v;
      return absl::OkStatus();
    };
  };
  auto integer = [&](int64_t* out) {
    return [&, out](const YAML::Node& n, const std::string& key) -> absl::Status {
      int64_t v = 0;
      if (!n.IsScalar() || !YAML::convert<int64_t>::decode(n, v) || v < 1) {
        return KeyError(source, n, key,
                        absl::StrCat("got ", n.IsScalar() ? n.Scalar() : "a non-scalar"),
                        "a positive integer");
      }
      *out = v;
      return absl::OkStatus();
    };
  };
  auto text = [&](std::string* out) {
    return [&, out](const YAML::Node& n, const std::string& key) -> absl::Status {
      if (!n.IsScalar()) return KeyError(source, n, key, "got a non-scalar", "a string");
      *out = n.Scalar();
      return absl::OkStatus();
    };
  };
  const std::map<std::string, Field> fields = {
      {"name", {true, text(&c.name)}},
      {"gpu", {true, text(&c.gpu)}},
      {"num_gpus", {true, integer(&c.num_gpus)}},
      {"gpus_per_node", {true, integer(&c.gpus_per_node)}},
      {"bf16_tflops", {true, number(&c.bf16_tflops, 1e-3, 1e6)}},
      {"fp8_tflops", {true, number(&c.fp8_tflops, 1e-3, 1e6)}},
      {"memory_gib", {true, number(&c.memory_gib, 1e-3, 1e5)}},
      {"memory_bandwidth_gbps", {true, number(&c.memory_bandwidth_gbps, 1e-3, 1e6)}},
      {"nvlink_gbps", {true, number(&c.nvlink_gbps, 0, 1e5)}},
      {"nvlink_efficiency", {true, number(&c.nvlink_efficiency, 0, 1)}},
      {"pcie_gbps", {false, number(&c.pcie_gbps, 0, 1e5)}},
      {"pcie_efficiency", {false, number(&c.pcie_efficiency, 0, 1)}},
      {"internode_gbps", {true, number(&c.internode_gbps, 1e-6, 1e5)}},
      {"internode_efficiency", {true, number(&c.internode_efficiency, 1e-3, 1)}},
      {"price_per_gpu_hour", {true, number(&c.price_per_gpu_hour, 0, 1e6)}},
      {"usable_memory_fraction", {false, number(&c.usable_memory_fraction, 0.1, 1)}},
  };
  std::vector<std::string> known;
  for (const auto& [k, f] : fields) known.push_back(k);
  for (const auto& kv : root) {
    const std::string key = kv.first.Scalar();
    auto it = fields.find(key);
    if (it == fields.end()) {
      return KeyError(source, kv.first, key, "unknown key",
                      absl::StrCat("one of ", absl::StrJoin(known, ", ")));
    }
    RETURN_IF_ERROR(it->second.read(kv.second, key));
  }
  for (const auto& [k, f] : fields) {
    if (f.required && !root[k]) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": missing key ", k));
    }
  }
  if (c.nvlink_gbps > 0 && c.nvlink_efficiency <= 0) {
    return KeyError(source, root["nvlink_efficiency"], "nvlink_efficiency", "got 0",
                    "a fraction > 0 when nvlink_gbps > 0");
  }
  if (c.nvlink_gbps == 0 && (c.pcie_gbps <= 0 || c.pcie_efficiency <= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(source,
                     ": nvlink_gbps is 0, so pcie_gbps and pcie_efficiency (both > 0) are needed "
                     "for traffic inside a node"));
  }
  if (c.num_gpus % c.gpus_per_node != 0 && c.num_gpus > c.gpus_per_node) {
    return KeyError(source, root["num_gpus"], "num_gpus",
                    absl::StrCat("got ", c.num_gpus, " with ", c.gpus_per_node, " GPUs per node"),
                    "whole nodes");
  }
  return c;
}

absl::StatusOr<ClusterSpec> LoadClusterSpec(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open the cluster file"));
  std::stringstream text;
  text << in.rdbuf();
  return ParseClusterSpec(text.str(), path);
}

}  // namespace mt::plan

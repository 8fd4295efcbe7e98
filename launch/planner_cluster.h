// launch/planner_cluster.h: a cluster description for the planner (configs/clusters/*.yaml):
// the GPU's dense peaks, memory and links, how many GPUs, and what an hour of one costs.
//
// YAML keys (all required unless marked optional; units in the key names):
//   name, gpu                       strings
//   num_gpus, gpus_per_node         integers
//   bf16_tflops, fp8_tflops         dense (no 2:4 sparsity) tensor-core peaks, FP32 accumulate
//   memory_gib                      HBM/GDDR capacity per GPU as marketed ("80 GB" parts are
//                                   80 GiB of DRAM)
//   memory_bandwidth_gbps           GB/s per GPU
//   nvlink_gbps, nvlink_efficiency  scale-up bandwidth per GPU per direction (0 = no NVLink)
//                                   and the fraction all-to-all achieves
//   pcie_gbps, pcie_efficiency      used for traffic inside a node when there is no NVLink
//                                   (optional when nvlink_gbps > 0)
//   internode_gbps, internode_efficiency   scale-out bandwidth per GPU per direction
//   price_per_gpu_hour              US dollars
//   usable_memory_fraction          optional, default 0.95 (CUDA context, NCCL, fragmentation)
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace mt::plan {

struct ClusterSpec {
  std::string name;
  std::string gpu;
  int64_t num_gpus = 0;
  int64_t gpus_per_node = 0;
  double bf16_tflops = 0;
  double fp8_tflops = 0;
  double memory_gib = 0;
  double memory_bandwidth_gbps = 0;
  double nvlink_gbps = 0;
  double nvlink_efficiency = 0;
  double pcie_gbps = 0;
  double pcie_efficiency = 0;
  double internode_gbps = 0;
  double internode_efficiency = 0;
  double price_per_gpu_hour = 0;
  double usable_memory_fraction = 0.95;

  // Achieved bytes/s inside a node (NVLink, or PCIe without it) and between nodes.
  double IntraNodeBytesPerSecond() const;
  double InterNodeBytesPerSecond() const;
  double UsableMemoryBytes() const;
};

absl::StatusOr<ClusterSpec> ParseClusterSpec(const std::string& yaml_text,
                                             const std::string& source);
absl::StatusOr<ClusterSpec> LoadClusterSpec(const std::string& path);

}  // namespace mt::plan

// trainer/tensor_gather.h: collecting named tensors from every rank on world rank 0, which
// is how a multi-rank checkpoint reaches the one step directory rank 0 commits.
//
// Each rank sends one message of metadata (file, name, dtype, shape per tensor, as JSON)
// and one of the tensors' bytes. Rank 0 holds everything at once: fine for the CPU and
// few-GPU runs this serves; a 671B run needs per-rank shard files instead (not yet).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"
#include "trainer/safetensors.h"

namespace mt {

// Named tensors grouped by the checkpoint file they go to.
using TensorFiles = std::map<std::string, std::vector<NamedTensor>>;

// Collective over `world`. Rank 0 gets the union of every rank's files (its own first, then
// rank 1's, ...); the other ranks get an empty map.
absl::StatusOr<TensorFiles> GatherTensorFiles(Communicator& world, TensorFiles mine);

}  // namespace mt

// trainer/rank_strings.h: short strings between ranks, for the coordination of a
// multi-writer checkpoint (the temporary directory rank 0 creates, each writer's record of
// what it wrote). Bulk data never goes through here.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"

namespace mt {

// Collective: every rank gets `root`'s string.
absl::StatusOr<std::string> BroadcastString(Communicator& comm, std::string s, int root);
// Collective: rank 0 gets every rank's string, in rank order; the others an empty list.
absl::StatusOr<std::vector<std::string>> GatherStrings(Communicator& comm, const std::string& s);

}  // namespace mt

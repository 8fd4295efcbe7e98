// tests/parallel/mpi_test_util.h: what multi-rank GoogleTest binaries share. Their main
// (mpi_test_main.cc) starts MPI when mpirun launched them; each test then builds the process
// groups of the layout it needs over the running world.
#pragma once

#include "absl/status/statusor.h"
#include "parallel/communicator_groups.h"
#include "parallel/launch_env.h"
#include "parallel/topology.h"

namespace mt::mpi_test {

// The launcher environment main() detected.
const LaunchEnv& Env();

// The topology of `spec` for this rank of the running world.
absl::StatusOr<Topology> MakeTopology(const LayoutSpec& spec);

// Process groups of `spec`, with a 60 s watchdog so that a test whose ranks diverge ends
// with a message instead of hanging until the CTest timeout.
absl::StatusOr<ProcessGroups> MakeGroups(const LayoutSpec& spec);

}  // namespace mt::mpi_test

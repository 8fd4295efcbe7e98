// parallel/launch_env.h: who started this process, and where it sits in the job.
//
// A process reads its rank, the world size and its place on the node from the variables its
// launcher exports, in the order of ecosystem.md §4.1 (mpirun inside a Slurm allocation sets
// both OMPI_* and SLURM_*, so the more specific launcher wins):
//   1. Open MPI's mpirun        OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE}
//   2. MPICH / Intel MPI hydra  PMI_RANK, PMI_SIZE, MPI_LOCALRANKID, MPI_LOCALNRANKS
//   3. Slurm srun               SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NODEID,
//                               SLURM_TASKS_PER_NODE ("4(x2),3": tasks on each node)
//   4. torchrun                 RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK
//   5. none of them: one process.
// Nothing here talks to MPI: the result decides whether MPI_Init runs at all
// (`launched_by_mpi`), so a single process needs no launcher and no MPI runtime.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace mt {

enum class Launcher { kNone, kOpenMpi, kPmi, kSlurm, kTorchrun };
const char* LauncherName(Launcher launcher);  // "none", "Open MPI", "PMI", "Slurm", "torchrun"

struct LaunchEnv {
  Launcher launcher = Launcher::kNone;
  int rank = 0;        // in [0, world_size)
  int world_size = 1;  // processes in the job
  int local_rank = 0;  // in [0, local_size): index among this node's processes
  int local_size = 1;  // processes on this node (what "ranks_per_node" defaults to)
  int node_rank = 0;   // this node's index in the job
  // True when the launcher is an MPI process manager (mpirun, hydra, srun with PMI/PMIx)
  // and MPI_Init must run; false for no launcher and for torchrun, whose processes can
  // only form a job through a rendezvous store, not through MPI.
  bool launched_by_mpi = false;

  // "rank 3 of 8 (local 1 of 4 on node 1), launched by Open MPI"
  std::string Describe() const;
};

// Returns the value of an environment variable, or nullopt when it is unset. Tests pass a
// map-backed getter; production code uses the process environment.
using EnvGetter = std::function<std::optional<std::string>(const std::string& name)>;

// Detects the launcher from `getenv`. Errors, each naming the variables involved, for a
// value that is not an integer, a launcher's variable present without its partner
// (OMPI_COMM_WORLD_RANK without OMPI_COMM_WORLD_SIZE, ...), rank >= world size, local rank
// >= local size, a local size above the world size, or negative values.
absl::StatusOr<LaunchEnv> DetectLaunchEnv(const EnvGetter& getenv);
// The same over the real process environment.
absl::StatusOr<LaunchEnv> DetectLaunchEnv();

}  // namespace mt

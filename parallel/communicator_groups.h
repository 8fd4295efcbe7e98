// parallel/communicator_groups.h: MPI start-up and the process groups of a Topology, built
// once and passed explicitly (design.md: "there are no global groups").
//
// Typical start of a program (trainer/main.cc):
//   ASSIGN_OR_RETURN(LaunchEnv env, DetectLaunchEnv());
//   ASSIGN_OR_RETURN(auto mpi, MpiRuntime::Start(env, &argc, &argv));  // no-op without MPI
//   ASSIGN_OR_RETURN(Topology topo, Topology::Create(spec, env.world_size, env.rank,
//                                                     env.local_size));
//   ASSIGN_OR_RETURN(ProcessGroups groups, CreateProcessGroups(topo, {.timeout_s = 600}));
//   ... Train(..., groups) ...
// Destroy `groups` before `mpi` (declare them in this order): MPI_Finalize comes last.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"
#include "parallel/launch_env.h"
#include "parallel/topology.h"

namespace mt {

class CommWatchdog;

// Initialises MPI (MPI_Init_thread with MPI_THREAD_FUNNELED: only the main thread calls
// MPI) when the process was started by an MPI launcher, and finalises it on destruction.
// For a process without one it does nothing, so a single process needs no MPI runtime.
class MpiRuntime {
 public:
  // Errors when MPI_Init fails, when MPI cannot give FUNNELED, or when MPI's world
  // disagrees with the launcher variables (a binary built against another MPI than the
  // mpirun that started it sees a world of one).
  static absl::StatusOr<std::unique_ptr<MpiRuntime>> Start(const LaunchEnv& env, int* argc,
                                                           char*** argv);
  ~MpiRuntime();  // MPI_Finalize, when Start initialised MPI and nothing aborted
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  bool active() const { return active_; }
  // Ends the whole job after a failure on this rank: prints `status` prefixed with the
  // world rank and calls MPI_Abort (collective MPI_Finalize would wait for peers that may
  // be blocked in a collective this rank never reaches). Without MPI it exits(1).
  [[noreturn]] static void AbortJob(const absl::Status& status, int exit_code = 1);

 private:
  MpiRuntime() = default;
  bool active_ = false;
};

struct CommOptions {
  // Deadline, in seconds, of every blocking call; past it the process ends with a message
  // (communicator_watchdog.h). 0 disables it. Megatron's default is 10 minutes.
  double timeout_s = 600;
  // Wrap every group in a StatsCommunicator (communicator_stats.h), which counts calls,
  // bytes sent and time per kind of operation; results are unchanged.
  bool collect_stats = false;
};

// One communicator per kind of group of topology.h, for this rank. Each is its own
// MPI communicator, so traffic on one never matches a call on another.
struct ProcessGroups {
  std::unique_ptr<Communicator> world;      // every rank
  std::unique_ptr<Communicator> pp;         // this rank's pipeline (one rank per stage)
  std::unique_ptr<Communicator> dp;         // this stage's data-parallel ranks
  std::unique_ptr<Communicator> ep;         // this rank's expert-parallel group
  std::unique_ptr<Communicator> expert_dp;  // the ranks holding the same experts
  std::shared_ptr<CommWatchdog> watchdog;   // shared by the MPI communicators; may be null
};

// Builds the groups of `topo` (collective over the world when MPI is active: MPI_Comm_dup,
// then MPI_Comm_split per kind of group). Without MPI and with a world of one, every group
// is a LocalCommunicator. Errors when the world has several ranks but MPI is not
// initialised (a torchrun launch, or no MpiRuntime), or when MPI's world size or rank
// differs from the topology's.
absl::StatusOr<ProcessGroups> CreateProcessGroups(const Topology& topo,
                                                  const CommOptions& options = {});

// Checks that consecutive blocks of topo.ranks_per_node() world ranks share a host, which
// the rank order assumes so that EP groups stay inside nodes (collective over `world`;
// hostnames are exchanged with AllGather). The error names the first misplaced rank. A
// misplaced rank costs speed, not correctness, so callers may only warn.
absl::Status CheckRankPlacement(Communicator& world, const Topology& topo);

}  // namespace mt

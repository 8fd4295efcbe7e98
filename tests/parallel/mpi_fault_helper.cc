// tests/parallel/mpi_fault_helper.cc: a small MPI program that misbehaves on purpose, for
// rank_death_test. Every rank joins an all-reduce on the world, then rank `victim`
//   kill   raises SIGKILL (as the OOM killer or a node failure would),
//   hang   sleeps instead of joining the next all-reduce (a deadlock or a diverged rank),
//   abort  fails with an error and ends the job through MpiRuntime::AbortJob,
// while the other ranks enter the next all-reduce and wait for it.
// Usage: mpi_fault_helper kill|hang|abort <victim> <watchdog deadline s, 0 = none>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "parallel/communicator_groups.h"

namespace {

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "mpi_fault_helper: %s\n", s.ToString().c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: mpi_fault_helper kill|hang|abort <victim> <deadline_s>\n");
    return 2;
  }
  const std::string mode = argv[1];
  const int victim = std::atoi(argv[2]);
  const double deadline = std::atof(argv[3]);
  absl::StatusOr<mt::LaunchEnv> env = mt::DetectLaunchEnv();
  if (!env.ok()) return Fail(env.status());
  absl::StatusOr<std::unique_ptr<mt::MpiRuntime>> mpi = mt::MpiRuntime::Start(*env, &argc, &argv);
  if (!mpi.ok()) return Fail(mpi.status());
  mt::LayoutSpec spec;
  spec.dp = env->world_size;
  absl::StatusOr<mt::Topology> topo =
      mt::Topology::Create(spec, env->world_size, env->rank, env->local_size);
  if (!topo.ok()) return Fail(topo.status());
  absl::StatusOr<mt::ProcessGroups> groups =
      mt::CreateProcessGroups(*topo, {.timeout_s = deadline});
  if (!groups.ok()) return Fail(groups.status());

  double x = 1;
  absl::Status st = groups->world->AllReduce(mt::OutBuffer::Of(&x, 1), mt::ReduceOp::kSum);
  if (!st.ok()) return Fail(st);
  std::printf("process %d: all ranks up\n", env->rank);
  std::fflush(stdout);
  if (env->rank == victim) {
    if (mode == "kill") raise(SIGKILL);
    if (mode == "hang") sleep(600);
    if (mode == "abort")
      mt::MpiRuntime::AbortJob(absl::InternalError("injected failure in the optimizer step"), 3);
  }
  st = groups->world->AllReduce(mt::OutBuffer::Of(&x, 1), mt::ReduceOp::kSum);
  if (!st.ok()) mt::MpiRuntime::AbortJob(st);
  std::printf("process %d: second all-reduce returned %g\n", env->rank, x);
  return 0;
}

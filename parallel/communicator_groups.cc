// parallel/communicator_groups.cc: MPI start-up, process groups and the placement check (see
// communicator_groups.h).
#include "parallel/communicator_groups.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/status.h"
#include "parallel/communicator_mpi.h"
#include "parallel/communicator_stats.h"
#include "parallel/communicator_watchdog.h"

namespace mt {
namespace {

absl::Status MpiCall(int rc, const char* call, int world_rank) {
  if (rc == MPI_SUCCESS) return absl::OkStatus();
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  return absl::InternalError(absl::StrCat("rank ", world_rank, ": ", call,
                                          " failed: ", std::string(text, len), " (code ", rc, ")"));
}

bool MpiUsable() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

// Splits `parent` into the groups whose colour is `color`, ordered by world rank (which is
// the member order of topology.h), and checks the result against `members`.
absl::StatusOr<std::unique_ptr<Communicator>> Split(const MpiCommunicator& parent, int color,
                                                    const std::vector<int>& members,
                                                    const std::string& group, int world_rank,
                                                    std::shared_ptr<CommWatchdog> watchdog) {
  MPI_Comm comm = MPI_COMM_NULL;
  RETURN_IF_ERROR(MpiCall(MPI_Comm_split(parent.comm(), color, world_rank, &comm), "MPI_Comm_split",
                          world_rank));
  ASSIGN_OR_RETURN(std::unique_ptr<MpiCommunicator> c,
                   MpiCommunicator::Create(comm, group, std::move(watchdog)));
  const int want =
      static_cast<int>(std::find(members.begin(), members.end(), world_rank) - members.begin());
  if (c->size() != static_cast<int>(members.size()) || c->rank() != want)
    return absl::InternalError(absl::StrCat("rank ", world_rank, ": group ", group, " came out as ",
                                            c->rank(), " of ", c->size(), ", expected ", want,
                                            " of ", members.size()));
  return std::unique_ptr<Communicator>(std::move(c));
}

}  // namespace

// ---- MpiRuntime -------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<MpiRuntime>> MpiRuntime::Start(const LaunchEnv& env, int* argc,
                                                              char*** argv) {
  std::unique_ptr<MpiRuntime> rt(new MpiRuntime());
  int already = 0;
  MPI_Initialized(&already);
  if (!env.launched_by_mpi || already) return rt;  // nothing to do, or not ours to finalise

  int provided = 0;
  RETURN_IF_ERROR(MpiCall(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided),
                          "MPI_Init_thread", env.rank));
  rt->active_ = true;  // from here on the destructor finalises, also on the errors below
  RETURN_IF_ERROR(MpiCall(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN),
                          "MPI_Comm_set_errhandler", env.rank));
  if (provided < MPI_THREAD_FUNNELED)
    return absl::FailedPreconditionError(
        absl::StrCat("rank ", env.rank, ": MPI_Init_thread provided thread level ", provided,
                     ", below MPI_THREAD_FUNNELED (", MPI_THREAD_FUNNELED, ")"));
  int size = 0, rank = 0;
  RETURN_IF_ERROR(MpiCall(MPI_Comm_size(MPI_COMM_WORLD, &size), "MPI_Comm_size", env.rank));
  RETURN_IF_ERROR(MpiCall(MPI_Comm_rank(MPI_COMM_WORLD, &rank), "MPI_Comm_rank", env.rank));
  if (size != env.world_size || rank != env.rank)
    return absl::FailedPreconditionError(
        absl::StrCat("MPI sees rank ", rank, " of ", size, " but the ", LauncherName(env.launcher),
                     " launcher variables say rank ", env.rank, " of ", env.world_size,
                     "; was moetrain built against another MPI than the launcher's?"));
  return rt;
}

MpiRuntime::~MpiRuntime() {
  if (active_ && MpiUsable()) MPI_Finalize();
}

void MpiRuntime::AbortJob(const absl::Status& status, int exit_code) {
  int rank = 0;
  const bool mpi = MpiUsable();
  if (mpi) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::fprintf(stderr, "[moetrain] rank %d: %s\n", rank, std::string(status.message()).c_str());
  std::fflush(stderr);
  std::fflush(stdout);
  if (mpi) MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::exit(exit_code);
}

// ---- Process groups -----------------------------------------------------------------------

absl::StatusOr<ProcessGroups> CreateProcessGroups(const Topology& topo,
                                                  const CommOptions& options) {
  ProcessGroups g;
  if (!MpiUsable()) {
    if (topo.world_size() != 1)
      return absl::FailedPreconditionError(absl::StrCat(
          "the layout ", topo.Describe(), " needs ", topo.world_size(),
          " processes but MPI is not running; launch with mpirun or srun --mpi=pmix (torchrun "
          "cannot start a CPU job) and create an MpiRuntime first"));
    g.world = std::make_unique<LocalCommunicator>("world");
    g.pp = std::make_unique<LocalCommunicator>("pp");
    g.dp = std::make_unique<LocalCommunicator>("dp");
    g.ep = std::make_unique<LocalCommunicator>("ep");
    g.expert_dp = std::make_unique<LocalCommunicator>("expert_dp");
    if (options.collect_stats) WrapGroupsWithStats(&g);
    return g;
  }

  const int me = topo.rank();
  int size = 0, rank = 0;
  RETURN_IF_ERROR(MpiCall(MPI_Comm_size(MPI_COMM_WORLD, &size), "MPI_Comm_size", me));
  RETURN_IF_ERROR(MpiCall(MPI_Comm_rank(MPI_COMM_WORLD, &rank), "MPI_Comm_rank", me));
  if (size != topo.world_size() || rank != me)
    return absl::FailedPreconditionError(
        absl::StrCat("MPI sees rank ", rank, " of ", size, " but the topology was built for rank ",
                     me, " of ", topo.world_size(), " (", topo.Describe(), ")"));

  if (options.timeout_s > 0)
    g.watchdog = std::make_shared<CommWatchdog>(options.timeout_s, absl::StrCat("rank ", me));
  MPI_Comm dup = MPI_COMM_NULL;
  RETURN_IF_ERROR(MpiCall(MPI_Comm_dup(MPI_COMM_WORLD, &dup), "MPI_Comm_dup", me));
  ASSIGN_OR_RETURN(std::unique_ptr<MpiCommunicator> world,
                   MpiCommunicator::Create(dup, "world", g.watchdog));
  ASSIGN_OR_RETURN(g.pp, Split(*world, topo.PpGroupId(me), topo.PpGroup(me), "pp", me, g.watchdog));
  ASSIGN_OR_RETURN(g.dp, Split(*world, topo.DpGroupId(me), topo.DpGroup(me), "dp", me, g.watchdog));
  ASSIGN_OR_RETURN(g.ep, Split(*world, topo.EpGroupId(me), topo.EpGroup(me), "ep", me, g.watchdog));
  ASSIGN_OR_RETURN(g.expert_dp, Split(*world, topo.ExpertDpGroupId(me), topo.ExpertDpGroup(me),
                                      "expert_dp", me, g.watchdog));
  g.world = std::move(world);
  if (options.collect_stats) WrapGroupsWithStats(&g);
  return g;
}

absl::Status CheckRankPlacement(Communicator& world, const Topology& topo) {
  constexpr int kHostLen = 256;
  std::vector<uint8_t> mine(kHostLen, 0), all(static_cast<size_t>(kHostLen) * world.size(), 0);
  if (gethostname(reinterpret_cast<char*>(mine.data()), kHostLen - 1) != 0)
    return absl::InternalError(absl::StrCat("rank ", world.rank(), ": gethostname failed"));
  RETURN_IF_ERROR(world.AllGather(mine, all));
  auto host = [&](int r) { return std::string(reinterpret_cast<const char*>(&all[r * kHostLen])); };
  const int rpn = topo.ranks_per_node();
  for (int r = 0; r < world.size(); ++r) {
    const int first = r - r % rpn;
    if (host(r) != host(first))
      return absl::FailedPreconditionError(
          absl::StrCat("rank ", r, " runs on host ", host(r), " but rank ", first,
                       ", the first of its node block (ranks ", first, "-", first + rpn - 1,
                       " with ", rpn, " ranks per node), runs on ", host(first),
                       "; place consecutive ranks on one node (mpirun --map-by slot, srun "
                       "--distribution=block) or set parallel.ranks_per_node"));
  }
  return absl::OkStatus();
}

}  // namespace mt

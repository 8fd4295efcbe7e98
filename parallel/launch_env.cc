// parallel/launch_env.cc: launcher detection from environment variables (see launch_env.h).
#include "parallel/launch_env.h"

#include <cstdlib>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/status.h"

namespace mt {

const char* LauncherName(Launcher launcher) {
  switch (launcher) {
    case Launcher::kNone:
      return "none";
    case Launcher::kOpenMpi:
      return "Open MPI";
    case Launcher::kPmi:
      return "PMI";
    case Launcher::kSlurm:
      return "Slurm";
    case Launcher::kTorchrun:
      return "torchrun";
  }
  return "?";
}

std::string LaunchEnv::Describe() const {
  return absl::StrCat("rank ", rank, " of ", world_size, " (local ", local_rank, " of ", local_size,
                      " on node ", node_rank, "), launched by ", LauncherName(launcher));
}

namespace {

// Reads the variables of one launcher, remembering their names for messages.
class Vars {
 public:
  explicit Vars(const EnvGetter& getenv) : getenv_(getenv) {}

  bool Has(const std::string& name) const { return getenv_(name).has_value(); }

  // The integer value of `name`, nullopt when unset; an error when set but not a
  // non-negative integer.
  absl::StatusOr<std::optional<int>> Int(const std::string& name) const {
    std::optional<std::string> v = getenv_(name);
    if (!v) return std::optional<int>();
    int x = 0;
    if (!absl::SimpleAtoi(*v, &x) || x < 0)
      return absl::InvalidArgumentError(
          absl::StrCat("launcher variable ", name, "=\"", *v, "\" is not a non-negative integer"));
    return std::optional<int>(x);
  }

  // Like Int, but the variable must be set because `partner` is.
  absl::StatusOr<int> Required(const std::string& name, const std::string& partner) const {
    ASSIGN_OR_RETURN(std::optional<int> v, Int(name));
    if (!v)
      return absl::InvalidArgumentError(
          absl::StrCat("launcher variable ", partner, " is set but ", name,
                       " is not; the launcher environment is incomplete"));
    return *v;
  }

 private:
  const EnvGetter& getenv_;
};

// Slurm's SLURM_TASKS_PER_NODE, e.g. "4(x2),3": tasks on node 0, 1 and 2 are 4, 4, 3.
absl::StatusOr<std::optional<int>> SlurmTasksOnNode(const Vars& vars, const EnvGetter& getenv,
                                                    int node) {
  std::optional<std::string> spec = getenv("SLURM_TASKS_PER_NODE");
  if (!spec) return vars.Int("SLURM_NTASKS_PER_NODE");
  int seen = 0;
  for (absl::string_view part : absl::StrSplit(*spec, ',')) {
    int tasks = 0, repeat = 1;
    std::vector<absl::string_view> tr = absl::StrSplit(part, "(x");
    bool ok = absl::SimpleAtoi(tr[0], &tasks);
    if (ok && tr.size() == 2) {
      absl::string_view r = tr[1];
      ok = !r.empty() && r.back() == ')' && absl::SimpleAtoi(r.substr(0, r.size() - 1), &repeat);
    }
    if (!ok || tr.size() > 2 || tasks < 1 || repeat < 1)
      return absl::InvalidArgumentError(absl::StrCat("launcher variable SLURM_TASKS_PER_NODE=\"",
                                                     *spec, "\" is not like \"4(x2),3\""));
    if (node < seen + repeat) return std::optional<int>(tasks);
    seen += repeat;
  }
  return absl::InvalidArgumentError(absl::StrCat("launcher variable SLURM_TASKS_PER_NODE=\"", *spec,
                                                 "\" lists ", seen, " nodes but SLURM_NODEID is ",
                                                 node));
}

// Node-local placement shared by the launchers: local rank/size if given, else one node.
struct Local {
  std::optional<int> rank, size, node;
};

absl::StatusOr<LaunchEnv> Finish(Launcher launcher, bool by_mpi, int rank, int size,
                                 const Local& local, const std::string& names) {
  LaunchEnv env;
  env.launcher = launcher;
  env.launched_by_mpi = by_mpi;
  env.rank = rank;
  env.world_size = size;
  if (size < 1)
    return absl::InvalidArgumentError(
        absl::StrCat("launcher variables ", names, ": world size ", size, " is less than 1"));
  if (rank >= size)
    return absl::InvalidArgumentError(absl::StrCat("launcher variables ", names, ": rank ", rank,
                                                   " is not below the world size ", size));
  // Without node-local variables, assume one node (every launcher we know sets them).
  env.local_size = local.size.value_or(size);
  if (env.local_size < 1 || env.local_size > size)
    return absl::InvalidArgumentError(absl::StrCat("launcher variables ", names, ": local size ",
                                                   env.local_size, " is not in [1, world size ",
                                                   size, "]"));
  env.local_rank = local.rank.value_or(rank % env.local_size);
  if (env.local_rank >= env.local_size)
    return absl::InvalidArgumentError(absl::StrCat("launcher variables ", names, ": local rank ",
                                                   env.local_rank, " is not below the local size ",
                                                   env.local_size));
  // Launchers place consecutive ranks on one node by default (mpirun --map-by slot, srun's
  // block distribution), so the node index follows when the launcher does not give it.
  env.node_rank = local.node.value_or(rank / env.local_size);
  return env;
}

}  // namespace

absl::StatusOr<LaunchEnv> DetectLaunchEnv(const EnvGetter& getenv) {
  Vars v(getenv);

  // 1. Open MPI. OMPI_COMM_WORLD_NODE_RANK is a node-local index across jobs, not the node.
  if (v.Has("OMPI_COMM_WORLD_RANK") || v.Has("OMPI_COMM_WORLD_SIZE")) {
    ASSIGN_OR_RETURN(int rank, v.Required("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"));
    ASSIGN_OR_RETURN(int size, v.Required("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"));
    Local local;
    ASSIGN_OR_RETURN(local.rank, v.Int("OMPI_COMM_WORLD_LOCAL_RANK"));
    ASSIGN_OR_RETURN(local.size, v.Int("OMPI_COMM_WORLD_LOCAL_SIZE"));
    return Finish(Launcher::kOpenMpi, true, rank, size, local,
                  "OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE}");
  }

  // Slurm's node-local view, used by PMI launches under srun and by plain srun.
  Local slurm;
  ASSIGN_OR_RETURN(slurm.rank, v.Int("SLURM_LOCALID"));
  ASSIGN_OR_RETURN(slurm.node, v.Int("SLURM_NODEID"));
  if (slurm.rank) {
    ASSIGN_OR_RETURN(slurm.size, SlurmTasksOnNode(v, getenv, slurm.node.value_or(0)));
  }

  // 2. MPICH / Intel MPI (hydra), or srun --mpi=pmi2.
  if (v.Has("PMI_RANK") || v.Has("PMI_SIZE")) {
    ASSIGN_OR_RETURN(int rank, v.Required("PMI_RANK", "PMI_SIZE"));
    ASSIGN_OR_RETURN(int size, v.Required("PMI_SIZE", "PMI_RANK"));
    Local local;
    ASSIGN_OR_RETURN(local.rank, v.Int("MPI_LOCALRANKID"));
    ASSIGN_OR_RETURN(local.size, v.Int("MPI_LOCALNRANKS"));
    if (!local.rank) local = slurm;
    return Finish(Launcher::kPmi, true, rank, size, local,
                  "PMI_RANK, PMI_SIZE, MPI_LOCALRANKID, MPI_LOCALNRANKS");
  }

  // 3. Slurm srun. Only with PMIx (srun --mpi=pmix) can the tasks form an MPI job.
  if (v.Has("SLURM_PROCID") || v.Has("SLURM_NTASKS")) {
    ASSIGN_OR_RETURN(int rank, v.Required("SLURM_PROCID", "SLURM_NTASKS"));
    ASSIGN_OR_RETURN(int size, v.Required("SLURM_NTASKS", "SLURM_PROCID"));
    return Finish(Launcher::kSlurm, v.Has("PMIX_RANK"), rank, size, slurm,
                  "SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NODEID, SLURM_TASKS_PER_NODE");
  }

  // 4. torchrun. WORLD_SIZE decides: RANK alone is too common a name to mean a launch.
  if (v.Has("WORLD_SIZE")) {
    ASSIGN_OR_RETURN(int rank, v.Required("RANK", "WORLD_SIZE"));
    ASSIGN_OR_RETURN(int size, v.Required("WORLD_SIZE", "RANK"));
    Local local;
    ASSIGN_OR_RETURN(local.rank, v.Int("LOCAL_RANK"));
    ASSIGN_OR_RETURN(local.size, v.Int("LOCAL_WORLD_SIZE"));
    ASSIGN_OR_RETURN(local.node, v.Int("GROUP_RANK"));
    return Finish(Launcher::kTorchrun, false, rank, size, local,
                  "RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK");
  }

  // 5. One process.
  return LaunchEnv{};
}

absl::StatusOr<LaunchEnv> DetectLaunchEnv() {
  return DetectLaunchEnv([](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  });
}

}  // namespace mt

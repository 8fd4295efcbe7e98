// tests/parallel/launch_env_test.cc: launcher detection over fake environments (the real
// environment is never touched).
#include "parallel/launch_env.h"

#include <map>
#include <string>

#include "gtest/gtest.h"

namespace mt {
namespace {

using Env = std::map<std::string, std::string>;

absl::StatusOr<LaunchEnv> Detect(const Env& env) {
  return DetectLaunchEnv([&env](const std::string& name) -> std::optional<std::string> {
    auto it = env.find(name);
    if (it == env.end()) return std::nullopt;
    return it->second;
  });
}

void ExpectError(const Env& env, const std::string& needle) {
  absl::StatusOr<LaunchEnv> e = Detect(env);
  ASSERT_FALSE(e.ok()) << "accepted: " << e->Describe();
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(e.status().message()).find(needle), std::string::npos)
      << e.status().message();
}

TEST(LaunchEnvTest, NoLauncherIsOneProcess) {
  absl::StatusOr<LaunchEnv> e = Detect({{"HOME", "/root"}, {"RANK", "3"}});  // RANK alone
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->launcher, Launcher::kNone);
  EXPECT_EQ(e->rank, 0);
  EXPECT_EQ(e->world_size, 1);
  EXPECT_EQ(e->local_rank, 0);
  EXPECT_EQ(e->local_size, 1);
  EXPECT_EQ(e->node_rank, 0);
  EXPECT_FALSE(e->launched_by_mpi);
}

TEST(LaunchEnvTest, OpenMpi) {
  absl::StatusOr<LaunchEnv> e = Detect({{"OMPI_COMM_WORLD_RANK", "5"},
                                        {"OMPI_COMM_WORLD_SIZE", "8"},
                                        {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                        {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"},
                                        {"OMPI_COMM_WORLD_NODE_RANK", "1"}});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->launcher, Launcher::kOpenMpi);
  EXPECT_EQ(e->rank, 5);
  EXPECT_EQ(e->world_size, 8);
  EXPECT_EQ(e->local_rank, 1);
  EXPECT_EQ(e->local_size, 4);
  EXPECT_EQ(e->node_rank, 1);  // 5 / 4
  EXPECT_TRUE(e->launched_by_mpi);
  EXPECT_EQ(e->Describe(), "rank 5 of 8 (local 1 of 4 on node 1), launched by Open MPI");
}

TEST(LaunchEnvTest, OpenMpiWinsOverSlurmInsideAnAllocation) {
  absl::StatusOr<LaunchEnv> e = Detect({{"OMPI_COMM_WORLD_RANK", "2"},
                                        {"OMPI_COMM_WORLD_SIZE", "4"},
                                        {"OMPI_COMM_WORLD_LOCAL_RANK", "2"},
                                        {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"},
                                        {"SLURM_PROCID", "0"},
                                        {"SLURM_NTASKS", "1"},
                                        {"SLURM_LOCALID", "0"}});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->launcher, Launcher::kOpenMpi);
  EXPECT_EQ(e->rank, 2);
  EXPECT_EQ(e->world_size, 4);
}

TEST(LaunchEnvTest, MpichHydra) {
  absl::StatusOr<LaunchEnv> e = Detect(
      {{"PMI_RANK", "6"}, {"PMI_SIZE", "8"}, {"MPI_LOCALRANKID", "2"}, {"MPI_LOCALNRANKS", "4"}});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->launcher, Launcher::kPmi);
  EXPECT_EQ(e->local_rank, 2);
  EXPECT_EQ(e->local_size, 4);
  EXPECT_EQ(e->node_rank, 1);
  EXPECT_TRUE(e->launched_by_mpi);
}

TEST(LaunchEnvTest, SrunPmi2TakesNodeLayoutFromSlurm) {
  absl::StatusOr<LaunchEnv> e = Detect({{"PMI_RANK", "9"},
                                        {"PMI_SIZE", "11"},
                                        {"SLURM_PROCID", "9"},
                                        {"SLURM_NTASKS", "11"},
                                        {"SLURM_LOCALID", "1"},
                                        {"SLURM_NODEID", "2"},
                                        {"SLURM_TASKS_PER_NODE", "4(x2),3"}});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->launcher, Launcher::kPmi);
  EXPECT_EQ(e->local_rank, 1);
  EXPECT_EQ(e->local_size, 3);
  EXPECT_EQ(e->node_rank, 2);
}

TEST(LaunchEnvTest, SlurmWithPmixIsMpi) {
  Env env = {{"SLURM_PROCID", "5"},
             {"SLURM_NTASKS", "8"},
             {"SLURM_LOCALID", "1"},
             {"SLURM_NODEID", "1"},
             {"SLURM_TASKS_PER_NODE", "4(x2)"}};
  absl::StatusOr<LaunchEnv> plain = Detect(env);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->launcher, Launcher::kSlurm);
  EXPECT_EQ(plain->rank, 5);
  EXPECT_EQ(plain->local_size, 4);
  EXPECT_EQ(plain->node_rank, 1);
  EXPECT_FALSE(plain->launched_by_mpi);
  env["PMIX_RANK"] = "5";
  absl::StatusOr<LaunchEnv> pmix = Detect(env);
  ASSERT_TRUE(pmix.ok()) << pmix.status();
  EXPECT_TRUE(pmix->launched_by_mpi);
}

TEST(LaunchEnvTest, SlurmNtasksPerNodeFallback) {
  absl::StatusOr<LaunchEnv> e = Detect({{"SLURM_PROCID", "3"},
                                        {"SLURM_NTASKS", "4"},
                                        {"SLURM_LOCALID", "1"},
                                        {"SLURM_NODEID", "1"},
                                        {"SLURM_NTASKS_PER_NODE", "2"}});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->local_size, 2);
}

TEST(LaunchEnvTest, Torchrun) {
  absl::StatusOr<LaunchEnv> e = Detect({{"RANK", "3"},
                                        {"WORLD_SIZE", "4"},
                                        {"LOCAL_RANK", "1"},
                                        {"LOCAL_WORLD_SIZE", "2"},
                                        {"GROUP_RANK", "1"},
                                        {"MASTER_ADDR", "n0"},
                                        {"MASTER_PORT", "29500"}});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->launcher, Launcher::kTorchrun);
  EXPECT_EQ(e->rank, 3);
  EXPECT_EQ(e->local_rank, 1);
  EXPECT_EQ(e->local_size, 2);
  EXPECT_EQ(e->node_rank, 1);
  EXPECT_FALSE(e->launched_by_mpi);
}

TEST(LaunchEnvTest, MissingLocalVariablesMeanOneNode) {
  absl::StatusOr<LaunchEnv> e = Detect({{"PMI_RANK", "2"}, {"PMI_SIZE", "3"}});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->local_rank, 2);
  EXPECT_EQ(e->local_size, 3);
  EXPECT_EQ(e->node_rank, 0);
}

TEST(LaunchEnvTest, InconsistentVariablesAreErrorsNamingThem) {
  ExpectError({{"OMPI_COMM_WORLD_RANK", "4"}, {"OMPI_COMM_WORLD_SIZE", "4"}},
              "rank 4 is not below the world size 4");
  ExpectError({{"OMPI_COMM_WORLD_RANK", "4"}, {"OMPI_COMM_WORLD_SIZE", "4"}}, "OMPI_COMM_WORLD_");
  ExpectError({{"OMPI_COMM_WORLD_RANK", "1"}}, "OMPI_COMM_WORLD_SIZE");
  ExpectError({{"OMPI_COMM_WORLD_SIZE", "2"}}, "OMPI_COMM_WORLD_RANK");
  ExpectError({{"PMI_RANK", "x"}, {"PMI_SIZE", "2"}}, "PMI_RANK=\"x\" is not a non-negative");
  ExpectError({{"PMI_RANK", "-1"}, {"PMI_SIZE", "2"}}, "PMI_RANK");
  ExpectError({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "0"}}, "world size 0 is less than 1");
  ExpectError({{"SLURM_PROCID", "0"}}, "SLURM_NTASKS");
  ExpectError({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "2"}, {"LOCAL_WORLD_SIZE", "2"}},
              "local rank 2 is not below the local size 2");
  ExpectError({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_WORLD_SIZE", "3"}},
              "local size 3 is not in [1, world size 2]");
  ExpectError({{"WORLD_SIZE", "2"}}, "RANK");
  ExpectError({{"SLURM_PROCID", "0"},
               {"SLURM_NTASKS", "2"},
               {"SLURM_LOCALID", "0"},
               {"SLURM_TASKS_PER_NODE", "2(x"}},
              "SLURM_TASKS_PER_NODE=\"2(x\"");
  ExpectError({{"SLURM_PROCID", "0"},
               {"SLURM_NTASKS", "2"},
               {"SLURM_LOCALID", "0"},
               {"SLURM_NODEID", "3"},
               {"SLURM_TASKS_PER_NODE", "1(x2)"}},
              "lists 2 nodes but SLURM_NODEID is 3");
}

}  // namespace
}  // namespace mt

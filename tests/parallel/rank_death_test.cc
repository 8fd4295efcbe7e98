// tests/parallel/rank_death_test.cc: a rank that dies, hangs or fails makes the whole job end
// with a message naming a rank, never a hang. Each case runs `mpirun -np 2` on
// mpi_fault_helper and waits for it with a bound; running past the bound fails the test
// (and kills the job) instead of hanging CTest.
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "gtest/gtest.h"

#ifndef MT_MPIEXEC
#error "MT_MPIEXEC (the mpirun path) must be defined by the build"
#endif
#ifndef MT_FAULT_HELPER
#error "MT_FAULT_HELPER (the mpi_fault_helper path) must be defined by the build"
#endif

namespace mt {
namespace {

struct JobResult {
  bool finished = false;  // false: still running at the bound, then killed
  int exit_code = -1;     // exit status, or 128 + signal
  std::string output;     // stdout and stderr together
};

// Runs argv in its own process group, capturing its output, for at most bound_s seconds.
JobResult RunJob(const std::vector<std::string>& args, double bound_s) {
  int fds[2];
  if (pipe(fds) != 0) return {};
  const pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    close(fds[0]);
    close(fds[1]);
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(fds[1]);
  JobResult r;
  const auto start = std::chrono::steady_clock::now();
  int status = 0;
  bool eof = false;
  for (;;) {
    if (!eof) {
      pollfd p{fds[0], POLLIN, 0};
      if (poll(&p, 1, 100) > 0) {
        char buf[4096];
        const ssize_t n = read(fds[0], buf, sizeof(buf));
        if (n > 0) r.output.append(buf, n);
        if (n <= 0) eof = true;
      }
    } else {
      usleep(100 * 1000);
    }
    if (!r.finished && waitpid(pid, &status, WNOHANG) == pid) r.finished = true;
    if (r.finished && eof) break;
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (waited > bound_s) {
      kill(-pid, SIGKILL);
      if (!r.finished) waitpid(pid, &status, 0);
      break;
    }
  }
  close(fds[0]);
  if (r.finished) r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

JobResult RunFaultJob(const std::string& mode, double deadline_s) {
  return RunJob({MT_MPIEXEC, "-np", "2", "--oversubscribe", "--allow-run-as-root", "--mca", "btl",
                 "self,vader", MT_FAULT_HELPER, mode, "1", std::to_string(deadline_s)},
                /*bound_s=*/60);
}

// Without any watchdog, Open MPI itself aborts the job when a rank is killed mid-run, and
// says which rank.
TEST(RankDeathTest, KilledRankEndsTheJobNamingTheRank) {
  JobResult r = RunFaultJob("kill", 0);
  ASSERT_TRUE(r.finished) << "mpirun still running after 60 s: the job hung\n" << r.output;
  EXPECT_NE(r.exit_code, 0) << r.output;
  // Open MPI: "mpirun noticed that process rank 1 with PID ... exited on signal 9 (Killed)."
  EXPECT_NE(r.output.find("process rank 1 "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("signal 9"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("second all-reduce returned"), std::string::npos) << r.output;
}

// A rank that hangs: the waiting rank's watchdog ends it, naming itself, the call and the
// group, and mpirun then takes the hung rank down too.
TEST(RankDeathTest, HungRankTripsTheWatchdog) {
  JobResult r = RunFaultJob("hang", 2);
  ASSERT_TRUE(r.finished) << "mpirun still running after 60 s: the job hung\n" << r.output;
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("[moetrain] rank 0: MPI_Allreduce on mpi:world (group rank 0 of 2) "
                          "has not completed"),
            std::string::npos)
      << r.output;
  // The flight recorder: the first all-reduce done, the second still running.
  EXPECT_NE(r.output.find("[moetrain] rank 0: its last communication calls, oldest first: #1 "
                          "MPI_Allreduce on mpi:world (group rank 0 of 2) ("),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("; #2 MPI_Allreduce on mpi:world (group rank 0 of 2) (running "),
            std::string::npos)
      << r.output;
}

// A rank that fails with an error ends the whole job through MpiRuntime::AbortJob.
TEST(RankDeathTest, FailingRankAbortsTheJob) {
  JobResult r = RunFaultJob("abort", 0);
  ASSERT_TRUE(r.finished) << "mpirun still running after 60 s: the job hung\n" << r.output;
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("[moetrain] rank 1: injected failure in the optimizer step"),
            std::string::npos)
      << r.output;
}

// The healthy path of the same program finishes, so the failures above come from the
// injected faults and not from the launch.
TEST(RankDeathTest, HealthyJobCompletes) {
  JobResult r = RunFaultJob("none", 30);
  ASSERT_TRUE(r.finished) << r.output;
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("process 1: second all-reduce returned 4"), std::string::npos)
      << r.output;
}

}  // namespace
}  // namespace mt

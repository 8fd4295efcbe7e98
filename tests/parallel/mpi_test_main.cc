// tests/parallel/mpi_test_main.cc: main() of the multi-rank GoogleTest binaries. Under mpirun
// every rank runs every test (the tests are collective); rank 0 prints GoogleTest's usual
// report, the other ranks only their failures, prefixed with their rank. Run directly, the
// binary is a world of one.
#include <cstdio>
#include <string>

#include "gtest/gtest.h"
#include "tests/parallel/mpi_test_util.h"

namespace mt::mpi_test {
namespace {

LaunchEnv g_env;  // written once in main, before any test runs

// Prints "[rank r] FAILED ..." for each failed assertion, and nothing else.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  // The test's name is noted here: asking UnitTest::current_test_info() inside
  // OnTestPartResult takes the lock AddTestPartResult already holds, and the failing rank
  // then hangs (until the communicators' watchdog ends the job) instead of reporting.
  void OnTestStart(const ::testing::TestInfo& info) override {
    test_ = std::string(info.test_suite_name()) + "." + info.name();
  }
  void OnTestEnd(const ::testing::TestInfo&) override { test_ = "?"; }
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "[rank %d] FAILED %s at %s:%d\n%s\n", rank_, test_.c_str(),
                 r.file_name() ? r.file_name() : "?", r.line_number(), r.message());
    std::fflush(stderr);
  }

 private:
  int rank_;
  std::string test_ = "?";
};

}  // namespace

const LaunchEnv& Env() { return g_env; }

absl::StatusOr<Topology> MakeTopology(const LayoutSpec& spec) {
  return Topology::Create(spec, g_env.world_size, g_env.rank, g_env.local_size);
}

absl::StatusOr<ProcessGroups> MakeGroups(const LayoutSpec& spec) {
  ASSIGN_OR_RETURN(Topology topo, MakeTopology(spec));
  return CreateProcessGroups(topo, {.timeout_s = 60});
}

}  // namespace mt::mpi_test

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  absl::StatusOr<mt::LaunchEnv> env = mt::DetectLaunchEnv();
  if (!env.ok()) {
    std::fprintf(stderr, "%s\n", env.status().ToString().c_str());
    return 2;
  }
  absl::StatusOr<std::unique_ptr<mt::MpiRuntime>> mpi = mt::MpiRuntime::Start(*env, &argc, &argv);
  if (!mpi.ok()) {
    std::fprintf(stderr, "%s\n", mpi.status().ToString().c_str());
    return 2;
  }
  mt::mpi_test::g_env = *env;
  if (env->rank != 0) {
    ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new mt::mpi_test::RankFailurePrinter(env->rank));
  }
  return RUN_ALL_TESTS();  // `mpi` finalises MPI on the way out
}

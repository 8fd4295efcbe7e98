// tests/gpu/ops_gpu_test.cc: every entry of the GPU op table (op_table.h) as one test,
// each comparison printed with its error and tolerance.
//
// Skips cleanly (GTEST_SKIP) on machines without a CUDA device, so CI builds and runs it
// anywhere; the comparisons only happen on a GPU machine. MOETRAIN_REQUIRE_GPU=1 (set by
// tests/gpu/check.sh) turns the skip into a failure.
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>

#include "gtest/gtest.h"
#include "kernels/cuda/runtime.h"
#include "tests/gpu/op_table.h"

namespace mt::cuda::test {
namespace {

class OpTableTest : public ::testing::TestWithParam<OpCase> {
 protected:
  void SetUp() override {
    if (DeviceCount() > 0) return;
    // tests/gpu/check.sh sets this: on the GPU machine a missing device is a failure.
    if (std::getenv("MOETRAIN_REQUIRE_GPU") != nullptr) FAIL() << "no CUDA device visible";
    GTEST_SKIP() << "no CUDA device: GPU op tests skipped";
  }
};

TEST_P(OpTableTest, MatchesCpuReference) {
  const OpCase& op = GetParam();
  for (const Check& c : op.run()) {
    std::printf("  %-24s %-6s %-42s err %-10.3g tol %-8.3g %s\n", op.name.c_str(), op.dtype.c_str(),
                c.what.c_str(), c.error, c.tolerance,
                c.ok() ? "ok" : (c.vacuous ? "VACUOUS" : "FAIL"));
    EXPECT_FALSE(c.vacuous) << op.name << " " << c.what << ": all-zero reference";
    EXPECT_LE(c.error, c.tolerance) << op.name << " " << c.what << ": GPU vs CPU reference";
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, OpTableTest, ::testing::ValuesIn(OpTable()),
                         [](const auto& info) { return info.param.name; });

TEST(OpTable, EveryEntryIsNamedAndUnique) {
  std::set<std::string> names;
  for (const OpCase& op : OpTable()) {
    EXPECT_FALSE(op.name.empty());
    EXPECT_TRUE(names.insert(op.name).second) << "duplicate op " << op.name;
    EXPECT_TRUE(op.dtype == "fp32" || op.dtype == "bf16" || op.dtype == "fp8" ||
                op.dtype == "exact")
        << op.name;
  }
  EXPECT_GE(names.size(), 15u);
}

}  // namespace
}  // namespace mt::cuda::test

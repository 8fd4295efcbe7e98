// tests/kernels/ops_test.cc: every CPU op in kernels/ops.h, checked from one table.
//
// Each row is an op at one shape (builders in dense_cases.cc and sequence_cases.cc). For
// every row the harness (op_check.h) compares the double forward with naive loops, float
// with double, and the backward with central finite differences; op-specific properties
// live in the row's `extra`. Small shapes get per-element differences, the large ones
// (which also take the OpenMP paths) random directional derivatives.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/kernels/op_check.h"

namespace mt::opcheck {
namespace {

std::vector<OpCase> AllCases() {
  return {
      // Gemm: all transpose combinations, padded leading dimensions, beta on and off.
      GemmCase(false, false, 5, 4, 3, 0, 1.0, 0.0),
      GemmCase(false, false, 5, 4, 3, 2, 0.7, 0.3),
      GemmCase(true, false, 6, 3, 4, 3, 1.0, 0.0),
      GemmCase(false, true, 4, 6, 5, 1, -1.2, 1.0),
      GemmCase(true, true, 3, 5, 7, 4, 0.5, -0.5),
      GemmCase(true, true, 33, 17, 70, 5, 1.0, 0.0),
      LinearCase(6, 5, 4, /*accumulate=*/false),
      LinearCase(6, 5, 4, /*accumulate=*/true),
      LinearCase(70, 64, 48, /*accumulate=*/true),
      RmsNormCase(6, 16, 1e-6),
      RmsNormCase(300, 200, 1e-5),
      // RoPE: rotary slice in the middle of a wider head vector; with and without mscale.
      RopeCase(2, 5, 3, 12, 4, 6, 1.0),
      RopeCase(2, 5, 3, 12, 4, 6, 1.3),
      RopeCase(2, 64, 8, 72, 8, 64, 1.0),
      SwigluCase(257),
      SwigluCase(40000),
      AttentionCase(2, 5, 2, 4, 3),
      AttentionCase(1, 200, 2, 16, 8),
      EmbeddingCase(12, 7, 5),
      CrossEntropyCase(9, 11),
      CrossEntropyCase(64, 1000),
      AddCase(100003),
      AxpyCase(100003, -0.7),
      SumSquaresCase(17),
      SumSquaresCase(100003),
  };
}

class OpsTest : public ::testing::TestWithParam<OpCase> {};

TEST_P(OpsTest, MatchesReferenceAndFiniteDifferences) { CheckCase(GetParam()); }

INSTANTIATE_TEST_SUITE_P(Table, OpsTest, ::testing::ValuesIn(AllCases()),
                         [](const ::testing::TestParamInfo<OpCase>& info) {
                           return info.param.name + "_" + std::to_string(info.index);
                         });

}  // namespace
}  // namespace mt::opcheck

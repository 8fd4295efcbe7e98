// tests/gpu/op_table.h: the table of CUDA ops checked against their CPU references.
//
// ggml's test-backend-ops in miniature: each entry runs one op (forward and backward where
// it has one) on random inputs on the GPU and on the CPU, and returns the comparisons, each
// with its tolerance: fp32 normwise relative error < 1e-5, bf16 < 1e-2, FP8 GEMMs against
// the FP64 product of the dequantised operands, and 0 mismatches for the ops that must be
// bit-exact (quantisation, casts, routing, permutation plans). ops_gpu_test.cc runs every
// entry as a test; tests/gpu/check.sh prints them. Adding an op = adding an entry.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "tests/gpu/gpu_test_util.h"

namespace mt::cuda::test {

struct OpCase {
  std::string name;   // "rmsnorm", "router", ...
  std::string dtype;  // "fp32", "bf16", "fp8", "exact"
  std::function<std::vector<Check>()> run;
};

const std::vector<OpCase>& OpTable();

}  // namespace mt::cuda::test

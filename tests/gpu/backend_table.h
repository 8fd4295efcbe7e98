// tests/gpu/backend_table.h: the table of kernels/backend.h ops that backend_table_test.cc
// runs on the CUDA backend and on CpuBackend with the same inputs.
//
// An entry is a function of a Backend: it builds its inputs from fixed seeds (so both
// backends see the same numbers), runs one op or a short chain (a forward and its
// backward, a plan and the permutations that use it), and returns host copies of the
// outputs, each compared exactly (integers, routing, plans, zero fills) or by normwise
// relative error (fp32 and double: 1e-5).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/tensor.h"

namespace mt::test {

struct BackendOutput {
  std::string name;
  Tensor host;           // ToHost of the output
  bool exact = false;    // bytes must match (integers always are)
  bool zeros = false;    // all zeros is the expected answer (not a vacuous comparison)
  double tolerance = 0;  // normwise relative error allowed when > 0 (BF16 operators), else 1e-5
};

struct BackendOp {
  std::string name;  // "gemm", "router", ...
  std::function<std::vector<BackendOutput>(Backend&)> run;
};

const std::vector<BackendOp>& BackendOpTable();
// The FP8 entries (backend_table_fp8.cc), appended to the table by BackendOpTable.
std::vector<BackendOp> Fp8BackendOps();
// The BF16 attention core (backend_table_attention.cc: cuDNN's fused SDPA where the CUDA
// backend chooses it), a table of its own in backend_table_test.cc.
std::vector<BackendOp> AttentionBf16BackendOps();

}  // namespace mt::test

// tests/gpu/backend_table_test.cc: every op of kernels/backend.h on the CUDA backend
// (kernels/cuda/backend_cuda.h) against CpuBackend (kernels/backend_cpu.h), the same
// inputs on both (backend_table.h), one line printed per output with its error:
// fp32 and double outputs by normwise relative error (< 1e-5), integers, routing, plans
// and zero fills exactly.
//
// Skips (GTEST_SKIP) without a CUDA device, so CI builds and runs it anywhere;
// MOETRAIN_REQUIRE_GPU=1 (tests/gpu/check.sh) turns the skip into a failure. The cuBLAS
// argument mapping of the FP32 GEMM (ColumnMajorFor) is checked on the host everywhere; on
// a GPU, the table's BF16 GEMMs must run on cuBLASLt (no fallback to the FP32 GEMM), and on
// sm_90 so must the FP8 GEMMs of the entries whose K is a multiple of 16.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend_cpu.h"
#include "kernels/cuda/backend_cuda.h"
#include "kernels/cuda/gemm_plan_cache.h"
#include "kernels/cuda/runtime.h"
#include "kernels/ops.h"
#include "tests/gpu/backend_table.h"
#include "tests/gpu/gpu_test_util.h"

namespace mt::test {
namespace {

using cuda::test::Check;

constexpr double kTolerance = 1e-5;

// One backend for the whole binary, never destroyed (CUDA objects outliving main's
// return would be torn down after the driver).
absl::StatusOr<std::unique_ptr<cuda::CudaBackend>>& Gpu() {
  static auto* gpu =
      new absl::StatusOr<std::unique_ptr<cuda::CudaBackend>>(cuda::CudaBackend::Create(0));
  return *gpu;
}

template <typename T>
std::vector<T> Values(const Tensor& t) {
  return std::vector<T>(t.data<T>(), t.data<T>() + t.numel());
}

template <typename T>
Check CompareAs(const std::string& what, const Tensor& got, const Tensor& want, bool exact,
                double tolerance) {
  if (exact) return cuda::test::Mismatches(what, Values<T>(got), Values<T>(want));
  return cuda::test::RelError(what, Values<T>(got), Values<T>(want), tolerance);
}

Check Compare(const BackendOutput& got, const BackendOutput& want) {
  const Tensor& g = got.host;
  const Tensor& w = want.host;
  if (g.dtype() != w.dtype() || g.shape() != w.shape()) {
    return {want.name + " (dtype or shape differs)", INFINITY, 0};
  }
  const double tol = want.tolerance > 0 ? want.tolerance : kTolerance;
  Check c;
  switch (w.dtype()) {
    case DType::kF32:
      c = CompareAs<float>(want.name, g, w, want.exact, tol);
      break;
    case DType::kF64:
      c = CompareAs<double>(want.name, g, w, want.exact, tol);
      break;
    case DType::kI32:
      c = CompareAs<int32_t>(want.name, g, w, true, tol);
      break;
    case DType::kI64:
      c = CompareAs<int64_t>(want.name, g, w, true, tol);
      break;
    default:
      return {want.name + " (dtype not compared)", INFINITY, 0};
  }
  if (want.zeros) c.vacuous = false;  // zeros are the point of the comparison
  return c;
}

class NeedsGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::DeviceCount() > 0) return;
    // tests/gpu/check.sh sets this: on the GPU machine a missing device is a failure.
    if (std::getenv("MOETRAIN_REQUIRE_GPU") != nullptr) FAIL() << "no CUDA device visible";
    GTEST_SKIP() << "no CUDA device: CUDA backend vs CPU backend skipped";
  }
};

class BackendTableTest : public NeedsGpu, public ::testing::WithParamInterface<BackendOp> {};

TEST_P(BackendTableTest, CudaMatchesCpu) {
  auto& gpu = Gpu();
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  CpuBackend cpu;
  const BackendOp& op = GetParam();
  const std::vector<BackendOutput> want = op.run(cpu);
  const std::vector<BackendOutput> got = op.run(**gpu);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(got[i].name, want[i].name);
    const Check c = Compare(got[i], want[i]);
    const DType dt = want[i].host.dtype();
    const bool exact = want[i].exact || dt == DType::kI32 || dt == DType::kI64;
    std::printf("  %-20s %-32s %-5s err %-10.3g tol %-8.3g %s\n", op.name.c_str(), c.what.c_str(),
                exact ? "exact" : "rel", c.error, c.tolerance,
                c.ok() ? "ok" : (c.vacuous ? "VACUOUS" : "FAIL"));
    EXPECT_FALSE(c.vacuous) << op.name << " " << c.what << ": all-zero reference";
    EXPECT_LE(c.error, c.tolerance) << op.name << " " << c.what << ": CUDA vs CPU backend";
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, BackendTableTest, ::testing::ValuesIn(BackendOpTable()),
                         [](const auto& info) { return info.param.name; });
INSTANTIATE_TEST_SUITE_P(AttentionBf16, BackendTableTest,
                         ::testing::ValuesIn(AttentionBf16BackendOps()),
                         [](const auto& info) { return info.param.name; });

// The default BF16 GEMM (rounded FP32 operands through the FP32 GEMM) would pass the
// comparison too: the table's shapes must all take cuBLASLt's BF16 path.
using CudaBackendBf16 = NeedsGpu;
TEST_F(CudaBackendBf16, TableGemmsRunOnCublasLt) {
  auto& gpu = Gpu();
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  const int64_t before = (*gpu)->bf16_gemm_fallbacks();
  int runs = 0;
  for (const BackendOp& op : BackendOpTable()) {
    if (op.name != "gemm_bf16") continue;
    op.run(**gpu);
    ++runs;
  }
  EXPECT_EQ(runs, 1);
  EXPECT_EQ((*gpu)->bf16_gemm_fallbacks(), before) << "cuBLASLt refused a table shape";
}

// The same for Fp8Gemm: its fallback (grouped_gemm_fp8.cu) sums the same exact products and
// would pass the comparison too. cuBLASLt's block-scaled mode exists on sm_90 only and takes K
// (the inner dimension) in multiples of 16 only (CublasLtGemm::Fp8Linear), so the entries
// below keep K and the Dgrad GEMM's K (the Linear's N) multiples of 16 while neither is a
// multiple of 128; fp8_gemm_unaligned (K = 300) is the one that must fall back.
class CudaBackendFp8 : public NeedsGpu {
 protected:
  // Fp8Gemm fallbacks counted while the named entries ran on the GPU.
  static int64_t FallbacksOf(const std::set<std::string>& names) {
    cuda::CudaBackend& be = **Gpu();
    const int64_t before = be.fp8_gemm_fallbacks();
    int runs = 0;
    for (const BackendOp& op : BackendOpTable()) {
      if (names.count(op.name) == 0) continue;
      op.run(be);
      ++runs;
    }
    EXPECT_EQ(runs, static_cast<int>(names.size()));
    return be.fp8_gemm_fallbacks() - before;
  }
  void SetUp() override {
    NeedsGpu::SetUp();
    if (IsSkipped() || HasFailure()) return;
    ASSERT_TRUE(Gpu().ok()) << Gpu().status();
    if (!cuda::CublasLtHasBlockScaledFp8((*Gpu())->info().sm))
      GTEST_SKIP() << "cuBLASLt's block-scaled FP8 GEMM is sm_90's only";
  }
};

TEST_F(CudaBackendFp8, TableGemmsRunOnCublasLt) {
  EXPECT_EQ(FallbacksOf({"fp8_gemm", "fp8_linear"}), 0) << "cuBLASLt refused a table shape";
  EXPECT_EQ(FallbacksOf({"fp8_gemm_unaligned"}), 1) << "K = 300 should be refused (K % 16)";
}

TEST(BackendTable, EveryEntryIsNamedAndUnique) {
  std::set<std::string> names;
  for (const BackendOp& op : BackendOpTable()) {
    EXPECT_FALSE(op.name.empty());
    EXPECT_TRUE(names.insert(op.name).second) << "duplicate op " << op.name;
  }
}

// The table itself, on the CPU alone (everywhere): every entry runs, the same inputs give
// the same outputs twice, and no comparison would be vacuous.
TEST(BackendTable, EveryEntryRunsOnTheCpuBackend) {
  for (const BackendOp& op : BackendOpTable()) {
    CpuBackend cpu;
    const std::vector<BackendOutput> a = op.run(cpu), b = op.run(cpu);
    ASSERT_EQ(a.size(), b.size()) << op.name;
    for (size_t i = 0; i < a.size(); ++i) {
      BackendOutput exact = a[i];
      exact.exact = true;
      const Check c = Compare(b[i], exact);
      EXPECT_EQ(c.error, 0) << op.name << " " << c.what << ": not repeatable on the CPU";
      EXPECT_FALSE(c.vacuous) << op.name << " " << c.what << ": all zeros";
    }
  }
}

// ---- the FP32 GEMM's cuBLAS arguments, on the host ------------------------------------

// cuBLAS's column-major C[m, n] = alpha op(A) op(B) + beta C, naively, reading through
// bounds-checked accessors; EXPECTs the leading-dimension rules cuBLAS enforces.
void ColumnMajorReplay(const cuda::ColumnMajorGemm& g, float alpha, float beta,
                       const std::vector<float>& a, const std::vector<float>& b,
                       std::vector<float>* c) {
  EXPECT_GE(g.lda, std::max<int64_t>(1, g.trans_a ? g.k : g.m));
  EXPECT_GE(g.ldb, std::max<int64_t>(1, g.trans_b ? g.n : g.k));
  EXPECT_GE(g.ldc, std::max<int64_t>(1, g.m));
  auto at = [](const std::vector<float>& v, int64_t i) {
    EXPECT_TRUE(i >= 0 && i < static_cast<int64_t>(v.size())) << "read " << i;
    return i >= 0 && i < static_cast<int64_t>(v.size()) ? v[i] : NAN;
  };
  for (int64_t j = 0; j < g.n; ++j) {
    for (int64_t i = 0; i < g.m; ++i) {
      double acc = 0;
      for (int64_t l = 0; l < g.k; ++l) {
        const float x = at(a, g.trans_a ? l + i * g.lda : i + l * g.lda);
        const float y = at(b, g.trans_b ? j + l * g.ldb : l + j * g.ldb);
        acc += double(x) * y;
      }
      float& out = (*c)[i + j * g.ldc];
      out = float(alpha * acc + (beta == 0 ? 0.0 : double(beta) * out));
    }
  }
}

TEST(CudaBackendGemm, ColumnMajorMappingMatchesRowMajorGemm) {
  struct Case {
    bool ta, tb;
    int64_t M, N, K;
  };
  const std::vector<Case> cases = {{false, false, 7, 5, 3}, {false, true, 7, 5, 3},
                                   {true, false, 7, 5, 3},  {true, true, 7, 5, 3},
                                   {false, false, 4, 6, 0}, {true, true, 4, 6, 0}};
  for (const Case& cs : cases) {
    SCOPED_TRACE(testing::Message()
                 << "trans_a " << cs.ta << " trans_b " << cs.tb << " K " << cs.K);
    const int64_t lda = std::max<int64_t>(1, cs.ta ? cs.M : cs.K) + 2;
    const int64_t ldb = std::max<int64_t>(1, cs.tb ? cs.K : cs.N) + 1;
    const int64_t ldc = cs.N + 3;
    const int64_t a_rows = cs.ta ? cs.K : cs.M, b_rows = cs.tb ? cs.N : cs.K;
    // Exactly the elements a row-major caller owns: any read past them is a mapping bug.
    const auto a = cuda::test::Random(std::max<int64_t>(a_rows * lda, 1), 1);
    const auto b = cuda::test::Random(std::max<int64_t>(b_rows * ldb, 1), 2);
    auto want = cuda::test::Random(cs.M * ldc, 3);
    auto got = want;
    ops::Gemm<float>(cs.ta, cs.tb, cs.M, cs.N, cs.K, 0.7f, a.data(), lda, b.data(), ldb, 0.3f,
                     want.data(), ldc);
    const cuda::ColumnMajorGemm g = cuda::ColumnMajorFor(cs.ta, cs.tb, cs.M, cs.N, cs.K, a.data(),
                                                         lda, b.data(), ldb, got.data(), ldc);
    ASSERT_EQ(g.a, b.data());  // cuBLAS's A is our B, its B our A
    ASSERT_EQ(g.b, a.data());
    const std::vector<float>& ca = g.a == a.data() ? a : b;
    const std::vector<float>& cb = g.b == a.data() ? a : b;
    ColumnMajorReplay(g, 0.7f, 0.3f, ca, cb, &got);
    const Check c = cuda::test::RelError("C", got, want, kTolerance);
    EXPECT_LE(c.error, c.tolerance);
    EXPECT_FALSE(c.vacuous);
  }
}

}  // namespace
}  // namespace mt::test

// kernels/cuda/gemm_plan_cache.h: the key of a GEMM "plan" (cuBLASLt descriptors plus the
// algorithm its heuristic picked) and the cache that builds each plan once.
//
// cublasLtMatmulAlgoGetHeuristic costs tens of microseconds and may allocate; the training
// step repeats the same few dozen GEMM shapes, so each distinct problem is planned once
// and reused. Everything the choice of algorithm can depend on is in the key: shape,
// transposes, leading dimensions, dtypes, scale modes, the output accumulation and the
// device's SM version. Also which FP8 problems cuBLASLt can take (CheckFp8Linear). Plain
// C++ so that the keying and those rules are tested on the CPU
// (tests/gpu/gemm_plan_cache_test.cc).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace mt::cuda {

enum class GemmDtype : uint8_t { kF32, kBF16, kE4M3 };
// How an FP8 operand is scaled: kNone (no scale), one scalar (per tensor, sm_89), one per
// 1x128 tile (activations) or one per 128x128 block (weights), DeepSeek-V3's recipe on sm_90.
enum class GemmScale : uint8_t { kNone, kTensor, kVec128, kBlock128 };

const char* GemmDtypeName(GemmDtype d);
const char* GemmScaleName(GemmScale s);

// Row-major C[M, N] = alpha op(A)[M, K] op(B)[K, N] (+ beta C when accumulate).
struct GemmKey {
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;
  bool trans_a = false, trans_b = false;
  bool accumulate = false;  // beta != 0: C is read
  GemmDtype a = GemmDtype::kBF16, b = GemmDtype::kBF16, c = GemmDtype::kF32;
  GemmScale scale_a = GemmScale::kNone, scale_b = GemmScale::kNone;
  int sm = 0;  // 10 * major + minor

  bool operator==(const GemmKey& o) const {
    return m == o.m && n == o.n && k == o.k && lda == o.lda && ldb == o.ldb && ldc == o.ldc &&
           trans_a == o.trans_a && trans_b == o.trans_b && accumulate == o.accumulate && a == o.a &&
           b == o.b && c == o.c && scale_a == o.scale_a && scale_b == o.scale_b && sm == o.sm;
  }
  // "M x N x K, A bf16 (T), ..." for error messages and logs.
  std::string ToString() const;
};

struct GemmKeyHash {
  size_t operator()(const GemmKey& key) const;
};

// Whether cuBLASLt has DeepSeek-V3's block-scaled FP8 GEMM (CUBLASLT_MATMUL_MATRIX_SCALE_
// VEC128_32F and BLK128x128_32F) on this device. The cuBLAS documentation ("Narrow Precision
// Data Types Usage", the scaling modes' overview) lists both for compute capability 9.0 only,
// where per-tensor scaling says 8.9+ and the 32-element UE8M0 block scaling 10.0+: Blackwell
// has MXFP8's block scaling, not these, so there the caller's own kernel runs without asking
// cuBLASLt's heuristic on every call.
inline bool CublasLtHasBlockScaledFp8(int sm) { return sm == 90; }

// Whether CublasLtGemm::Fp8Linear's cuBLASLt call can take Y[M, N] (y_dtype) = X[M, K]
// W[N, K]^T as asked, checked on the host before a plan is made: OK, or why not
// (FailedPrecondition for the device, InvalidArgument otherwise), which callers take as "run
// your own kernel". The rules are the cuBLAS documentation's for cublasLtMatmul (FP8 needs
// Tensor Core Usage's 16-byte alignment; "128-element 1D and 128x128 2D Block Scaling For
// FP8 Data Types"), in our row-major names; the pointers (device addresses as integers) are
// those of X, its scales, W, its scales and Y.
absl::Status CheckFp8Linear(int sm, GemmScale x_scale, GemmScale w_scale, GemmDtype y_dtype,
                            int64_t M, int64_t N, int64_t K, uintptr_t x, uintptr_t x_scales,
                            uintptr_t w, uintptr_t w_scales, uintptr_t y);

// Plans by key; `Plan` is whatever the backend needs (cuBLASLt descriptors and algorithm).
template <typename Plan>
class GemmPlanCache {
 public:
  using Factory = std::function<absl::StatusOr<std::unique_ptr<Plan>>(const GemmKey&)>;

  explicit GemmPlanCache(Factory factory) : factory_(std::move(factory)) {}

  // The plan for `key`, built by the factory on first use. A failed build is not cached,
  // and its error names the key.
  absl::StatusOr<Plan*> Get(const GemmKey& key) {
    auto it = plans_.find(key);
    if (it != plans_.end()) {
      ++hits_;
      return it->second.get();
    }
    ++misses_;
    absl::StatusOr<std::unique_ptr<Plan>> plan = factory_(key);
    if (!plan.ok()) {
      return absl::Status(plan.status().code(),
                          absl::StrCat("GEMM ", key.ToString(), ": ", plan.status().message()));
    }
    Plan* raw = plan->get();
    plans_.emplace(key, std::move(*plan));
    return raw;
  }

  int64_t hits() const { return hits_; }
  int64_t misses() const { return misses_; }
  size_t size() const { return plans_.size(); }

 private:
  Factory factory_;
  std::unordered_map<GemmKey, std::unique_ptr<Plan>, GemmKeyHash> plans_;
  int64_t hits_ = 0, misses_ = 0;
};

}  // namespace mt::cuda

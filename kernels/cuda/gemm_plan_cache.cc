// kernels/cuda/gemm_plan_cache.cc: key names and hashing.
#include "kernels/cuda/gemm_plan_cache.h"

namespace mt::cuda {

const char* GemmDtypeName(GemmDtype d) {
  switch (d) {
    case GemmDtype::kF32:
      return "f32";
    case GemmDtype::kBF16:
      return "bf16";
    case GemmDtype::kE4M3:
      return "e4m3";
  }
  return "?";
}

const char* GemmScaleName(GemmScale s) {
  switch (s) {
    case GemmScale::kNone:
      return "none";
    case GemmScale::kTensor:
      return "tensor";
    case GemmScale::kVec128:
      return "1x128";
    case GemmScale::kBlock128:
      return "128x128";
  }
  return "?";
}

std::string GemmKey::ToString() const {
  return absl::StrCat(m, "x", n, "x", k, " A ", GemmDtypeName(a), trans_a ? " (T)" : "", " scale ",
                      GemmScaleName(scale_a), " lda ", lda, ", B ", GemmDtypeName(b),
                      trans_b ? " (T)" : "", " scale ", GemmScaleName(scale_b), " ldb ", ldb,
                      ", C ", GemmDtypeName(c), accumulate ? " (+=)" : "", " ldc ", ldc, ", sm_",
                      sm);
}

absl::Status CheckFp8Linear(int sm, GemmScale x_scale, GemmScale w_scale, GemmDtype y_dtype,
                            int64_t M, int64_t N, int64_t K, uintptr_t x, uintptr_t x_scales,
                            uintptr_t w, uintptr_t w_scales, uintptr_t y) {
  if (M <= 0 || N <= 0 || K <= 0) return absl::InvalidArgumentError("GEMM with an empty dimension");
  const bool block = x_scale == GemmScale::kVec128 && w_scale == GemmScale::kBlock128;
  const bool tensor = x_scale == GemmScale::kTensor && w_scale == GemmScale::kTensor;
  if (!block && !tensor) {
    return absl::InvalidArgumentError(
        "FP8 GEMM scales: 1x128 activations with 128x128 weights, or per-tensor both");
  }
  if (block && !CublasLtHasBlockScaledFp8(sm)) {
    return absl::FailedPreconditionError(
        absl::StrCat("cuBLASLt's block-scaled FP8 GEMM is sm_90's only; this device is sm_", sm,
                     ": use per-tensor scaling"));
  }
  // An FP8 Y would need a D scale, which Fp8Linear does not set.
  if (y_dtype != GemmDtype::kF32 && y_dtype != GemmDtype::kBF16)
    return absl::InvalidArgumentError("FP8 GEMM: Y must be f32 or bf16");
  // FP8 takes Tensor Core Usage's 16-byte rules: the K codes of a row of X and W, and a row
  // of Y ((m * Ctype size) % 16 == 0, cuBLASLt's m being our N).
  if (K % 16 != 0) return absl::InvalidArgumentError("FP8 GEMM: K must be a multiple of 16");
  const int64_t y_bytes = y_dtype == GemmDtype::kF32 ? 4 : 2;
  if (N * y_bytes % 16 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("FP8 GEMM: a row of Y (N = ", N, ") must be a multiple of 16 bytes"));
  }
  // Block scales: "M and N must be multiples of 4" (cuBLASLt's M and N, our N and M: the VEC128
  // scales [ceil(K/128), M] have rows of exactly M floats). Transformer Engine also found
  // cuBLASLt's n (our M) must be a multiple of 8 when its B (our X) is 1D-scaled
  // (transformer_engine/common/gemm/cublaslt_gemm.cu, "Observed this requirement"): 8 here.
  if (block && (M % 8 != 0 || N % 4 != 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "block-scaled FP8 GEMM: M must be a multiple of 8 and N of 4 (", M, "x", N, ")"));
  }
  // The plans are picked for 256-byte aligned matrices (cuBLASLt's default
  // CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*_BYTES), and scales must start 16-byte aligned.
  if (x % 256 != 0 || w % 256 != 0 || y % 256 != 0)
    return absl::InvalidArgumentError("FP8 GEMM: X, W and Y must be 256-byte aligned");
  if (x_scales % 16 != 0 || w_scales % 16 != 0)
    return absl::InvalidArgumentError("FP8 GEMM: scales must be 16-byte aligned");
  return absl::OkStatus();
}

size_t GemmKeyHash::operator()(const GemmKey& key) const {
  // FNV-1a over the fields, one at a time (the struct has padding, so not its bytes).
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](uint64_t v) {
    for (int i = 0; i < 8; ++i) {
      h ^= (v >> (8 * i)) & 0xff;
      h *= 1099511628211ull;
    }
  };
  for (int64_t v : {key.m, key.n, key.k, key.lda, key.ldb, key.ldc}) mix(uint64_t(v));
  mix(uint64_t(key.trans_a) | uint64_t(key.trans_b) << 1 | uint64_t(key.accumulate) << 2 |
      uint64_t(key.a) << 8 | uint64_t(key.b) << 16 | uint64_t(key.c) << 24 |
      uint64_t(key.scale_a) << 32 | uint64_t(key.scale_b) << 40);
  mix(uint64_t(key.sm));
  return size_t(h);
}

}  // namespace mt::cuda

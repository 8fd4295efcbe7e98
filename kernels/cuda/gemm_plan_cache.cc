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

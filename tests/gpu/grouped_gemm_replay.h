// tests/gpu/grouped_gemm_replay.h: what the host replays of the grouped GEMM kernels share
// (grouped_gemm_schedule_test.cc, grouped_gemm_fp8_test.cc): ragged offsets, the tensor-core
// kernels' shared-memory tile load and wmma fragment reads, replayed element by element on
// the CPU, and the comparisons.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/grouped_gemm.h"
#include "kernels/fp8.h"
#include "kernels/quantize.h"

namespace mt::cuda {

inline std::vector<int32_t> OffsetsFromCounts(const std::vector<int32_t>& counts) {
  std::vector<int32_t> off(counts.size() + 1, 0);
  for (size_t e = 0; e < counts.size(); ++e) off[e + 1] = off[e] + counts[e];
  return off;
}

// A test case: experts with `counts` rows each and N x K weights.
struct RaggedCase {
  std::vector<int32_t> counts;
  int64_t n, k;
  std::string Trace() const {
    return ::testing::PrintToString(counts) + " N " + std::to_string(n) + " K " + std::to_string(k);
  }
  // The launch shape, with `spare` rows past offsets[E] that no kernel may write.
  GroupedGemmShape Shape(const std::vector<int32_t>& off, int64_t spare) const {
    GroupedGemmShape sh;
    sh.experts = int64_t(counts.size());
    sh.rows = off.back() + spare;
    sh.n = n;
    sh.k = k;
    return sh;
  }
};

// The kernel's LoadTcTile: op(r0 + r, k0 + k) -> s[GroupedTcVecOuter / Inner slot], zero outside
// [0, r_lim) x [0, k_lim). s starts as NaN so that a fragment reading a slot no load wrote (the
// padding, or a geometry error) poisons the result.
inline void ReplayTcLoad(bool k_major, const std::vector<float>& p, int64_t offset, int64_t ld,
                         int64_t r_lim, int64_t k_lim, int64_t r0, int64_t k0,
                         std::vector<double>& s) {
  s.assign(kGroupedTcTileElems, std::numeric_limits<double>::quiet_NaN());
  const int64_t outer0 = k_major ? r0 : k0, outer_lim = k_major ? r_lim : k_lim;
  const int64_t inner0 = k_major ? k0 : r0, inner_lim = k_major ? k_lim : r_lim;
  for (int v = 0; v < kGroupedTcTileVecs; ++v) {
    const int64_t outer = outer0 + GroupedTcVecOuter(v), inner = inner0 + GroupedTcVecInner(v);
    for (int i = 0; i < kGroupedTcVec; ++i) {
      const bool in = outer < outer_lim && inner + i < inner_lim;
      s[GroupedTcVecOuter(v) * kGroupedTcLd + GroupedTcVecInner(v) + i] =
          in ? p[offset + outer * ld + inner + i] : 0.0;
    }
  }
}

// wmma::load_matrix_sync's element (row, col) of a 16x16 fragment at s[off] with ldm ld:
// row-major s[off + row * ld + col], col-major s[off + col * ld + row]. matrix_a is (m, k),
// matrix_b (k, n).
inline double FragAt(const std::vector<double>& s, int off, bool row_major, int row, int col) {
  EXPECT_EQ(off % 16, 0) << "fragment pointer not 32-byte aligned";
  const int i = off + (row_major ? row * kGroupedTcLd + col : col * kGroupedTcLd + row);
  EXPECT_GE(i, 0);
  EXPECT_LT(i, kGroupedTcTileElems);
  return s[i];
}

inline std::vector<float> Decoded(const QuantizedActivation& q) {
  std::vector<float> v(q.rows * q.cols);
  E4M3ToFloats(q.codes(), v.data(), int64_t(v.size()));
  return v;
}

inline double NormRelError(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num / den);
}

}  // namespace mt::cuda

// tests/gpu/grouped_gemm_schedule_test.cc: the grouped expert GEMM's tile schedule
// (grouped_gemm.h), host-tested: from per-expert row offsets, how many row tiles each expert
// has, which (expert, tile) each block of the launch grid gets, and which rows that covers.
// The kernel calls the same GroupedTilesForRows / GroupedFindTile / GroupedTileRows on the
// device; only its in-block scan differs from GroupedTilePrefix. Also checks the CPU
// references against a whole-matrix formulation, and replays the BF16 tensor-core kernel's
// data movement (grouped_gemm_bf16.cu: tile loads into shared memory, wmma fragment pointers
// and layouts, warp -> fragment map, output tile) on the CPU against them, and the FP8
// variant's in grouped_gemm_fp8_test.cc (no GPU needed).
#include "kernels/cuda/grouped_gemm.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/fp8.h"
#include "kernels/quantize.h"
#include "tests/gpu/grouped_gemm_replay.h"

namespace mt::cuda {
namespace {

// Every (expert, tile) with tile < tiles(expert) is hit by exactly one block of the grid,
// blocks past the last tile get none, and the tiles' rows partition [offsets[0], offsets[E]).
void CheckSchedule(const std::vector<int32_t>& counts) {
  SCOPED_TRACE(::testing::PrintToString(counts));
  const int64_t E = int64_t(counts.size());
  const auto off = OffsetsFromCounts(counts);
  const int64_t rows = off[E];
  std::vector<int32_t> prefix(E + 1);
  GroupedTilePrefix(off.data(), E, prefix.data());
  int64_t want_tiles = 0;
  for (int64_t e = 0; e < E; ++e) {
    EXPECT_EQ(GroupedTilesForRows(counts[e]), (counts[e] + kGroupedTileM - 1) / kGroupedTileM);
    want_tiles += GroupedTilesForRows(counts[e]);
  }
  ASSERT_EQ(prefix[E], want_tiles);
  const int64_t grid = GroupedGridTiles(rows, E);
  ASSERT_GE(grid, want_tiles) << "grid bound too small";

  std::vector<std::vector<int>> hits(E);
  for (int64_t e = 0; e < E; ++e) hits[e].assign(GroupedTilesForRows(counts[e]), 0);
  std::vector<int> row_hits(rows, 0);
  for (int64_t b = 0; b < grid; ++b) {
    int32_t expert = -1, tile = -1;
    const bool has = GroupedFindTile(prefix.data(), E, b, &expert, &tile);
    ASSERT_EQ(has, b < want_tiles) << "block " << b;
    if (!has) continue;
    ASSERT_GE(expert, 0);
    ASSERT_LT(expert, E);
    ASSERT_GE(tile, 0);
    ASSERT_LT(tile, int32_t(hits[expert].size())) << "block " << b << " -> empty or past tile";
    ++hits[expert][tile];
    int64_t begin = 0, end = 0;
    GroupedTileRows(off.data(), expert, tile, &begin, &end);
    EXPECT_GE(begin, off[expert]);
    EXPECT_LE(end, off[expert + 1]);
    EXPECT_GT(end, begin) << "a scheduled tile has no rows";
    EXPECT_LE(end - begin, kGroupedTileM);
    for (int64_t r = begin; r < end; ++r) ++row_hits[r];
  }
  for (int64_t e = 0; e < E; ++e)
    for (size_t t = 0; t < hits[e].size(); ++t) EXPECT_EQ(hits[e][t], 1) << e << "/" << t;
  for (int64_t r = 0; r < rows; ++r) EXPECT_EQ(row_hits[r], 1) << "row " << r;
  EXPECT_FALSE(GroupedFindTile(prefix.data(), E, -1, nullptr, nullptr));
}

TEST(GroupedGemmSchedule, RaggedExpertsWithEmptyOnes) {
  CheckSchedule({70, 0, 1, 130, 64, 0});  // empty middle and last, 1 row, 64 and 65+ rows
  CheckSchedule({0, 0, 5});               // empty first experts
  CheckSchedule({0, 0, 0});               // no rows at all: no tile scheduled
  CheckSchedule({64, 64, 64});            // exact multiples
  CheckSchedule({63, 65, 127, 129});      // one short / over a tile edge
  CheckSchedule({1});
  CheckSchedule({1000});
}

TEST(GroupedGemmSchedule, RandomCountsAndMaxExperts) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 50; ++trial) {
    const int E = 1 + int(rng() % 40);
    std::vector<int32_t> counts(E);
    // Heavy skew: many empty experts next to long ones, as routing produces.
    for (int32_t& c : counts) c = rng() % 3 == 0 ? 0 : int32_t(rng() % 300);
    CheckSchedule(counts);
  }
  std::vector<int32_t> counts(kGroupedMaxExperts);
  for (int e = 0; e < kGroupedMaxExperts; ++e) counts[e] = e % 7 == 0 ? 0 : e % 97;
  CheckSchedule(counts);
}

// The grid bound GroupedGridTiles(rows, E) is tight enough to hold when every expert has
// one row past a tile edge (the worst case of the ceil in every expert).
TEST(GroupedGemmSchedule, GridBoundWorstCase) {
  for (int E : {1, 2, 8, 256}) {
    std::vector<int32_t> counts(E, kGroupedTileM + 1);
    CheckSchedule(counts);
    const auto off = OffsetsFromCounts(counts);
    EXPECT_GE(GroupedGridTiles(off[E], E), 2 * E);
  }
}

// The references against one formulation per expert via the whole-matrix products: rows of
// expert e multiply W_e; rows outside [offsets[0], offsets[E]) are untouched.
TEST(GroupedGemmReference, MatchesPerExpertProducts) {
  const std::vector<int32_t> counts = {3, 0, 5, 2};
  const auto off = OffsetsFromCounts(counts);
  GroupedGemmShape shape;
  shape.rows = off.back() + 1;  // one spare row past offsets[E]
  shape.experts = int64_t(counts.size());
  shape.n = 3;
  shape.k = 4;
  const int64_t R = shape.rows, E = shape.experts, N = shape.n, K = shape.k;
  std::vector<float> x(R * K), w(E * N * K), dy(R * N);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(int(i % 7) - 3);
  for (size_t i = 0; i < w.size(); ++i) w[i] = float(int(i % 5) - 2);
  for (size_t i = 0; i < dy.size(); ++i) dy[i] = float(int(i % 3) - 1);
  std::vector<float> y(R * N, 42.0f), dx(R * K, 42.0f), dw(E * N * K, 1.0f);
  ref::GroupedGemmForward(x.data(), w.data(), y.data(), off.data(), shape);
  ref::GroupedGemmDataGrad(dy.data(), w.data(), dx.data(), off.data(), shape);
  ref::GroupedGemmWeightGrad(dy.data(), x.data(), dw.data(), off.data(), shape);
  for (int64_t e = 0; e < E; ++e) {
    for (int64_t r = off[e]; r < off[e + 1]; ++r) {
      for (int64_t n = 0; n < N; ++n) {
        float s = 0;
        for (int64_t k = 0; k < K; ++k) s += x[r * K + k] * w[(e * N + n) * K + k];
        EXPECT_EQ(y[r * N + n], s);
      }
      for (int64_t k = 0; k < K; ++k) {
        float s = 0;
        for (int64_t n = 0; n < N; ++n) s += dy[r * N + n] * w[(e * N + n) * K + k];
        EXPECT_EQ(dx[r * K + k], s);
      }
    }
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t k = 0; k < K; ++k) {
        float s = 1.0f;  // accumulated onto the initial gradient
        for (int64_t r = off[e]; r < off[e + 1]; ++r) s += dy[r * N + n] * x[r * K + k];
        EXPECT_EQ(dw[(e * N + n) * K + k], s);
      }
    }
  }
  for (int64_t n = 0; n < N; ++n) EXPECT_EQ(y[(R - 1) * N + n], 42.0f) << "spare row written";
  for (int64_t k = 0; k < K; ++k) EXPECT_EQ(dx[(R - 1) * K + k], 42.0f) << "spare row written";
}

// The kernel's per-block GEMM (GroupedBlockFor: offsets, leading dimensions, operand layouts,
// limits) replayed on the CPU over the whole launch grid (GroupedGrid), in double, against the
// references: every output element written exactly once (weight grad: once per non-empty
// expert), spare rows never, values equal to the references'.
double OpAt(const std::vector<float>& p, int64_t offset, int64_t ld, bool k_major, int64_t m,
            int64_t k) {
  return p[offset + (k_major ? m * ld + k : k * ld + m)];
}

void ReplayKind(GroupedGemmKind kind, const GroupedGemmShape& sh, const std::vector<int32_t>& off,
                const std::vector<float>& a, const std::vector<float>& b, std::vector<float>& c,
                std::vector<int>& writes) {
  std::vector<int32_t> prefix(sh.experts + 1);
  GroupedTilePrefix(off.data(), sh.experts, prefix.data());
  int64_t grid[3];
  GroupedGrid(kind, sh, grid);
  for (int64_t bz = 0; bz < grid[2]; ++bz) {
    for (int64_t by = 0; by < grid[1]; ++by) {
      for (int64_t bx = 0; bx < grid[0]; ++bx) {
        GroupedBlockGemm g;
        if (!GroupedBlockFor(kind, sh, off.data(), prefix.data(), bx, by, bz, &g)) continue;
        for (int64_t m = g.m0; m < std::min(g.m0 + kGroupedTileM, g.a_rows); ++m) {
          for (int64_t n = g.n0; n < std::min(g.n0 + kGroupedTileN, g.b_rows); ++n) {
            double s = 0;
            for (int64_t k = 0; k < g.depth; ++k)
              s += OpAt(a, g.a_offset, g.lda, GroupedAKMajor(kind), m, k) *
                   OpAt(b, g.b_offset, g.ldb, GroupedBKMajor(kind), n, k);
            const int64_t i = g.c_offset + m * g.ldc + n;
            ASSERT_GE(i, 0);
            ASSERT_LT(i, int64_t(c.size()));
            c[i] = kind == GroupedGemmKind::kWeightGrad ? float(double(c[i]) + s) : float(s);
            ++writes[i];
          }
        }
      }
    }
  }
}

TEST(GroupedGemmBlocks, ReplayMatchesReferences) {
  for (const std::vector<int32_t>& counts :
       {std::vector<int32_t>{70, 0, 1, 130, 64, 65, 0, 33}, std::vector<int32_t>{0, 3},
        std::vector<int32_t>{200}}) {
    SCOPED_TRACE(::testing::PrintToString(counts));
    const auto off = OffsetsFromCounts(counts);
    GroupedGemmShape sh;
    sh.experts = int64_t(counts.size());
    sh.rows = off.back() + 3;  // spare rows past offsets[E]
    sh.n = 72;
    sh.k = 100;
    const int64_t R = sh.rows, E = sh.experts, N = sh.n, K = sh.k;
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    auto random = [&](int64_t n) {
      std::vector<float> v(n);
      for (float& f : v) f = u(rng);
      return v;
    };
    const auto x = random(R * K), w = random(E * N * K), dy = random(R * N);
    const auto y0 = random(R * N), dx0 = random(R * K), dw0 = random(E * N * K);

    auto y = y0, want_y = y0;
    std::vector<int> y_writes(R * N, 0);
    ReplayKind(GroupedGemmKind::kForward, sh, off, x, w, y, y_writes);
    ref::GroupedGemmForward(x.data(), w.data(), want_y.data(), off.data(), sh);
    auto dx = dx0, want_dx = dx0;
    std::vector<int> dx_writes(R * K, 0);
    ReplayKind(GroupedGemmKind::kDataGrad, sh, off, dy, w, dx, dx_writes);
    ref::GroupedGemmDataGrad(dy.data(), w.data(), want_dx.data(), off.data(), sh);
    auto dw = dw0, want_dw = dw0;
    std::vector<int> dw_writes(E * N * K, 0);
    ReplayKind(GroupedGemmKind::kWeightGrad, sh, off, dy, x, dw, dw_writes);
    ref::GroupedGemmWeightGrad(dy.data(), x.data(), want_dw.data(), off.data(), sh);

    EXPECT_EQ(y, want_y);
    EXPECT_EQ(dx, want_dx);
    EXPECT_EQ(dw, want_dw);
    for (int64_t r = 0; r < R; ++r) {
      const int want = r < off.back() ? 1 : 0;
      for (int64_t n = 0; n < N; ++n) ASSERT_EQ(y_writes[r * N + n], want) << r << "," << n;
      for (int64_t k = 0; k < K; ++k) ASSERT_EQ(dx_writes[r * K + k], want) << r << "," << k;
    }
    for (int64_t e = 0; e < E; ++e)
      for (int64_t i = 0; i < N * K; ++i) ASSERT_EQ(dw_writes[e * N * K + i], counts[e] ? 1 : 0);
  }
}

// ---- the BF16 tensor-core block (grouped_gemm_bf16.cu), replayed --------------------------

// Grid-wide element counts of the tile geometry: every output fragment has one owner, and
// the loader's 16-byte groups cover each tile row once, inside the shared row.
TEST(GroupedGemmTcBlocks, GeometryCoversTheTile) {
  std::vector<int> frag_owner(kGroupedTcFragEdge * kGroupedTcFragEdge, 0);
  for (int w = 0; w < kGroupedTcWarps; ++w) {
    for (int j = 0; j < kGroupedTcFragsPerWarp; ++j) {
      const int r = GroupedTcWarpFragRow(w), c = GroupedTcWarpFragCol(w, j);
      ASSERT_GE(r, 0);
      ASSERT_LT(r, kGroupedTcFragEdge);
      ASSERT_GE(c, 0);
      ASSERT_LT(c, kGroupedTcFragEdge);
      ++frag_owner[r * kGroupedTcFragEdge + c];
    }
  }
  for (int n : frag_owner) EXPECT_EQ(n, 1);
  std::vector<int> slot(kGroupedTcTileElems, 0);
  for (int v = 0; v < kGroupedTcTileVecs; ++v) {
    const int outer = GroupedTcVecOuter(v), inner = GroupedTcVecInner(v);
    ASSERT_LT(outer, kGroupedTileM);
    ASSERT_EQ(inner % kGroupedTcVec, 0);
    ASSERT_LE(inner + kGroupedTcVec, kGroupedTcTileK);
    EXPECT_EQ((outer * kGroupedTcLd + inner) * 2 % 16, 0) << "16-byte shared store misaligned";
    for (int i = 0; i < kGroupedTcVec; ++i) ++slot[outer * kGroupedTcLd + inner + i];
  }
  for (int i = 0; i < kGroupedTcTileElems; ++i)
    EXPECT_EQ(slot[i], i % kGroupedTcLd < kGroupedTcTileK ? 1 : 0) << "slot " << i;
  // Both storage orders put op(r, k) where the loader puts tile row `outer`, column `inner`.
  for (int r = 0; r < kGroupedTileM; ++r) {
    for (int k = 0; k < kGroupedTcTileK; ++k) {
      EXPECT_EQ(GroupedTcAt(true, r, k), r * kGroupedTcLd + k);
      EXPECT_EQ(GroupedTcAt(false, r, k), k * kGroupedTcLd + r);
    }
  }
}

void ReplayKindTc(GroupedGemmKind kind, const GroupedGemmShape& sh, const std::vector<int32_t>& off,
                  const std::vector<float>& a, const std::vector<float>& b, std::vector<float>& c,
                  std::vector<int>& writes) {
  std::vector<int32_t> prefix(sh.experts + 1);
  GroupedTilePrefix(off.data(), sh.experts, prefix.data());
  const bool ak = GroupedAKMajor(kind), bk = GroupedBKMajor(kind);
  const bool a_row = GroupedTcARowMajor(ak), b_row = GroupedTcBRowMajor(bk);
  constexpr int F = kGroupedTcFrag;
  int64_t grid[3];
  GroupedGrid(kind, sh, grid);
  std::vector<double> sa, sb;
  for (int64_t bz = 0; bz < grid[2]; ++bz) {
    for (int64_t by = 0; by < grid[1]; ++by) {
      for (int64_t bx = 0; bx < grid[0]; ++bx) {
        GroupedBlockGemm g;
        if (!GroupedBlockFor(kind, sh, off.data(), prefix.data(), bx, by, bz, &g)) continue;
        // acc[warp][j][row][col], summed over k in order as the references do.
        std::vector<double> acc(kGroupedTcWarps * kGroupedTcFragsPerWarp * F * F, 0.0);
        for (int64_t k0 = 0; k0 < g.depth; k0 += kGroupedTcTileK) {
          ReplayTcLoad(ak, a, g.a_offset, g.lda, g.a_rows, g.depth, g.m0, k0, sa);
          ReplayTcLoad(bk, b, g.b_offset, g.ldb, g.b_rows, g.depth, g.n0, k0, sb);
          for (int kk = 0; kk < kGroupedTcTileK; kk += F) {
            for (int w = 0; w < kGroupedTcWarps; ++w) {
              const int fa = GroupedTcAt(ak, GroupedTcWarpFragRow(w) * F, kk);
              for (int j = 0; j < kGroupedTcFragsPerWarp; ++j) {
                const int fb = GroupedTcAt(bk, GroupedTcWarpFragCol(w, j) * F, kk);
                double* frag = &acc[(w * kGroupedTcFragsPerWarp + j) * F * F];
                for (int i = 0; i < F; ++i)
                  for (int jj = 0; jj < F; ++jj)
                    for (int k = 0; k < F; ++k)
                      frag[i * F + jj] +=
                          FragAt(sa, fa, a_row, i, k) * FragAt(sb, fb, b_row, k, jj);
              }
            }
          }
        }
        // store_matrix_sync (row-major) into the [64][kGroupedTcCLd] output tile.
        std::vector<double> sc(kGroupedTileM * kGroupedTcCLd,
                               std::numeric_limits<double>::quiet_NaN());
        for (int w = 0; w < kGroupedTcWarps; ++w) {
          for (int j = 0; j < kGroupedTcFragsPerWarp; ++j) {
            const int base =
                GroupedTcWarpFragRow(w) * F * kGroupedTcCLd + GroupedTcWarpFragCol(w, j) * F;
            ASSERT_EQ(base % 8, 0) << "output fragment pointer not 32-byte aligned";
            for (int i = 0; i < F; ++i)
              for (int jj = 0; jj < F; ++jj)
                sc[base + i * kGroupedTcCLd + jj] =
                    acc[(w * kGroupedTcFragsPerWarp + j) * F * F + i * F + jj];
          }
        }
        for (int idx = 0; idx < kGroupedTileM * kGroupedTileN; ++idx) {
          const int mm = idx / kGroupedTileN, nn = idx % kGroupedTileN;
          const int64_t m = g.m0 + mm, n = g.n0 + nn;
          if (m >= g.a_rows || n >= g.b_rows) continue;
          const double v = sc[mm * kGroupedTcCLd + nn];
          ASSERT_FALSE(std::isnan(v)) << "read a shared slot no load or fragment wrote";
          const int64_t i = g.c_offset + m * g.ldc + n;
          ASSERT_GE(i, 0);
          ASSERT_LT(i, int64_t(c.size()));
          c[i] = kind == GroupedGemmKind::kWeightGrad ? float(double(c[i]) + v) : float(v);
          ++writes[i];
        }
      }
    }
  }
}

// Shapes that exercise every edge of the tensor-core block: N and K past a 64 multiple (and
// K < 64, a single partial step), experts of 1, 63, 64, 65 rows and empty ones, spare rows.
TEST(GroupedGemmTcBlocks, ReplayMatchesReferences) {
  for (const RaggedCase& cs :
       {RaggedCase{{70, 0, 1, 130, 64, 65, 0, 33}, 72, 100}, RaggedCase{{0, 3}, 24, 40},
        RaggedCase{{200}, 130, 64}, RaggedCase{{63, 1}, 64, 129}}) {
    SCOPED_TRACE(cs.Trace());
    const auto off = OffsetsFromCounts(cs.counts);
    const GroupedGemmShape sh = cs.Shape(off, /*spare=*/3);
    const int64_t R = sh.rows, E = sh.experts, N = sh.n, K = sh.k;
    std::mt19937 rng(5);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    auto random = [&](int64_t n) {
      std::vector<float> v(n);
      for (float& f : v) f = u(rng);
      return v;
    };
    const auto x = random(R * K), w = random(E * N * K), dy = random(R * N);
    const auto y0 = random(R * N), dx0 = random(R * K), dw0 = random(E * N * K);

    auto y = y0, want_y = y0;
    std::vector<int> y_writes(R * N, 0);
    ReplayKindTc(GroupedGemmKind::kForward, sh, off, x, w, y, y_writes);
    ref::GroupedGemmForward(x.data(), w.data(), want_y.data(), off.data(), sh);
    auto dx = dx0, want_dx = dx0;
    std::vector<int> dx_writes(R * K, 0);
    ReplayKindTc(GroupedGemmKind::kDataGrad, sh, off, dy, w, dx, dx_writes);
    ref::GroupedGemmDataGrad(dy.data(), w.data(), want_dx.data(), off.data(), sh);
    auto dw = dw0, want_dw = dw0;
    std::vector<int> dw_writes(E * N * K, 0);
    ReplayKindTc(GroupedGemmKind::kWeightGrad, sh, off, dy, x, dw, dw_writes);
    ref::GroupedGemmWeightGrad(dy.data(), x.data(), want_dw.data(), off.data(), sh);

    EXPECT_EQ(y, want_y);
    EXPECT_EQ(dx, want_dx);
    EXPECT_EQ(dw, want_dw);
    for (int64_t r = 0; r < R; ++r) {
      const int want = r < off.back() ? 1 : 0;
      for (int64_t n = 0; n < N; ++n) ASSERT_EQ(y_writes[r * N + n], want) << r << "," << n;
      for (int64_t k = 0; k < K; ++k) ASSERT_EQ(dx_writes[r * K + k], want) << r << "," << k;
    }
    for (int64_t e = 0; e < E; ++e)
      for (int64_t i = 0; i < N * K; ++i) ASSERT_EQ(dw_writes[e * N * K + i], cs.counts[e] ? 1 : 0);
  }
}

}  // namespace
}  // namespace mt::cuda

// tests/gpu/grouped_gemm_fp8_test.cc: the E4M3 grouped expert GEMMs of grouped_gemm_fp8.cu,
// host-tested (no GPU needed). The kernels' data movement (shared-memory tiles, wmma fragment
// layouts, the warp -> fragment map, the staging of each chunk's sums and their promotion with
// the kernel's scale indices) is replayed element by element on the CPU through the same
// schedule functions the device calls (grouped_gemm.h), and compared with kernels/backend.cc's
// per-expert composition of the CPU's FP8 primitives. For the weight gradient also the token
// chunk layout: chunk bases, ids and their inverse, and the re-tiling kernel's placement.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/grouped_gemm.h"
#include "kernels/fp8.h"
#include "kernels/quantize.h"
#include "tests/gpu/grouped_gemm_replay.h"

namespace mt::cuda {
namespace {

// Every element of the 64x64 tile is staged and promoted by exactly one (warp, lane, i).
TEST(GroupedGemmFp8Blocks, StagingCoversTheTile) {
  std::vector<int> owner(kGroupedTileM * kGroupedTileN, 0);
  for (int w = 0; w < kGroupedTcWarps; ++w) {
    for (int lane = 0; lane < 32; ++lane) {
      for (int i = 0; i < kGroupedTcStagePerLane; ++i) {
        const int e = lane + 32 * i;
        ASSERT_LT(e, kGroupedTcStage);
        const int r = GroupedTcStageRow(w, e), c = GroupedTcStageCol(w, e);
        ASSERT_GE(r, 0);
        ASSERT_LT(r, kGroupedTileM);
        ASSERT_GE(c, 0);
        ASSERT_LT(c, kGroupedTileN);
        ++owner[r * kGroupedTileN + c];
      }
    }
  }
  for (int n : owner) EXPECT_EQ(n, 1);
}

// GroupedTc::MmaStep over one staged K step: stage[warp][j][16][16] (row-major per
// fragment, as the kernel stages it) += this warp's fragment products, in double.
void ReplayMmaStep(bool ak, bool bk, const std::vector<double>& sa, const std::vector<double>& sb,
                   std::vector<double>& stage) {
  constexpr int F = kGroupedTcFrag;
  const bool a_row = GroupedTcARowMajor(ak), b_row = GroupedTcBRowMajor(bk);
  for (int kk = 0; kk < kGroupedTcTileK; kk += F) {
    for (int w = 0; w < kGroupedTcWarps; ++w) {
      const int fa = GroupedTcAt(ak, GroupedTcWarpFragRow(w) * F, kk);
      for (int j = 0; j < kGroupedTcFragsPerWarp; ++j) {
        const int fb = GroupedTcAt(bk, GroupedTcWarpFragCol(w, j) * F, kk);
        for (int i = 0; i < F; ++i)
          for (int jj = 0; jj < F; ++jj)
            for (int k = 0; k < F; ++k)
              stage[w * kGroupedTcStage + j * F * F + i * F + jj] +=
                  FragAt(sa, fa, a_row, i, k) * FragAt(sb, fb, b_row, k, jj);
      }
    }
  }
}

// One block of an FP8 kernel: operand tiles of decoded codes (ReplayTcLoad), per-fragment
// chunk sums (in double here, FP32 on the device) staged row-major per fragment, promoted
// per lane at the end of each 128-deep chunk t with the kernel's scale(t, m, n), and handed
// to store(index into C, total) for the elements inside the output.
template <typename Scale, typename Store>
void ReplayFp8Block(bool ak, bool bk, const std::vector<float>& a_codes,
                    const std::vector<float>& b_codes, const GroupedBlockGemm& g, Scale scale,
                    Store store) {
  std::vector<double> sa, sb;
  std::vector<double> stage(kGroupedTcWarps * kGroupedTcStage, 0.0);  // chunk sums
  std::vector<float> total(kGroupedTcWarps * 32 * kGroupedTcStagePerLane, 0.0f);
  // f(m, n, staged index, the lane's total) for every staged element inside the output.
  const auto each = [&](auto f) {
    for (int w = 0; w < kGroupedTcWarps; ++w) {
      for (int lane = 0; lane < 32; ++lane) {
        for (int i = 0; i < kGroupedTcStagePerLane; ++i) {
          const int e = lane + 32 * i;
          const int64_t m = g.m0 + GroupedTcStageRow(w, e);
          const int64_t n = g.n0 + GroupedTcStageCol(w, e);
          if (m >= g.a_rows || n >= g.b_rows) continue;
          f(m, n, w * kGroupedTcStage + e, total[(w * 32 + lane) * kGroupedTcStagePerLane + i]);
        }
      }
    }
  };
  for (int64_t k0 = 0; k0 < g.depth; k0 += kGroupedTcTileK) {
    ReplayTcLoad(ak, a_codes, g.a_offset, g.lda, g.a_rows, g.depth, g.m0, k0, sa);
    ReplayTcLoad(bk, b_codes, g.b_offset, g.ldb, g.b_rows, g.depth, g.n0, k0, sb);
    ReplayMmaStep(ak, bk, sa, sb, stage);
    const int64_t k_next = k0 + kGroupedTcTileK;
    if (k_next % kGroupedFp8Chunk != 0 && k_next < g.depth) continue;
    const int64_t t = k0 / kGroupedFp8Chunk;
    each([&](int64_t m, int64_t n, int staged, float& acc) {
      acc = std::fma(scale(t, m, n), float(stage[staged]), acc);
    });
    std::fill(stage.begin(), stage.end(), 0.0);
  }
  each([&](int64_t m, int64_t n, int, float& acc) { store(g.c_offset + m * g.ldc + n, acc); });
}

// The forward or data-grad kernel over the whole grid: the row's activation scale times the
// weight block's (GroupedFp8WeightScaleIndex); outputs stored. A read or write past an array
// throws (at()), which fails the test.
void ReplayFp8Kind(GroupedGemmKind kind, const GroupedGemmShape& sh,
                   const std::vector<int32_t>& off, const std::vector<float>& a_codes,
                   const std::vector<float>& a_scales, const std::vector<float>& w_codes,
                   const std::vector<float>& w_scales, std::vector<float>& c,
                   std::vector<int>& writes) {
  std::vector<int32_t> prefix(sh.experts + 1);
  GroupedTilePrefix(off.data(), sh.experts, prefix.data());
  int64_t grid[3];
  GroupedGrid(kind, sh, grid);
  ASSERT_EQ(grid[2], 1);
  for (int64_t by = 0; by < grid[1]; ++by) {
    for (int64_t bx = 0; bx < grid[0]; ++bx) {
      GroupedBlockGemm g;
      if (!GroupedBlockFor(kind, sh, off.data(), prefix.data(), bx, by, 0, &g)) continue;
      int32_t expert = 0, tile = 0;
      ASSERT_TRUE(GroupedFindTile(prefix.data(), sh.experts, bx, &expert, &tile));
      int64_t row_begin = 0, row_end = 0;
      GroupedTileRows(off.data(), expert, tile, &row_begin, &row_end);
      ReplayFp8Block(
          GroupedAKMajor(kind), GroupedBKMajor(kind), a_codes, w_codes, g,
          [&](int64_t t, int64_t m, int64_t) {
            const float sw = w_scales.at(GroupedFp8WeightScaleIndex(kind, sh, expert, g.n0, t));
            return a_scales.at(t * sh.rows + row_begin + m) * sw;
          },
          [&](int64_t idx, float v) {
            c.at(idx) = v;
            ++writes.at(idx);
          });
    }
  }
}

// Against kernels/backend.cc's per-expert composition on the CPU (QuantizeActivation of the
// expert's rows, QuantizeWeight of W_e, TransposeWeight for Dgrad, Fp8GemmReference). The
// replay's chunk sums are in double, the reference's in FP32: equal up to FP32 rounding.
// Values span 10^-2..10^2 by 1x128 tile and 128x128 block so a wrong scale index shows.
TEST(GroupedGemmFp8Blocks, ReplayMatchesPerExpertFp8Gemm) {
  for (const RaggedCase& cs :
       {RaggedCase{{37, 0, 153, 1, 69}, 144, 176}, RaggedCase{{70, 0, 1, 130, 64, 65}, 200, 300},
        RaggedCase{{5}, 100, 64}}) {
    SCOPED_TRACE(cs.Trace());
    const auto off = OffsetsFromCounts(cs.counts);
    const GroupedGemmShape sh = cs.Shape(off, /*spare=*/2);
    const int64_t R = sh.rows, E = sh.experts, N = sh.n, K = sh.k;
    std::mt19937 rng(11);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    auto spread = [&](int64_t rows, int64_t cols, int64_t row_group) {
      std::vector<float> v(rows * cols);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c)
          v[r * cols + c] =
              u(rng) * std::pow(10.0f, float(((r / row_group) * 3 + (c / 128) * 2) % 5 - 2));
      return v;
    };
    const auto x = spread(R, K, 1), dy = spread(R, N, 1), w = spread(E * N, K, 128);
    const QuantizeOptions pow2{/*pow2_scales=*/true};
    const QuantizedActivation qx = QuantizeActivation(x.data(), R, K, pow2);
    const QuantizedActivation qdy = QuantizeActivation(dy.data(), R, N, pow2);
    std::vector<float> w_codes(E * N * K), w_scales;
    std::vector<float> want_y(R * N, 42.0f), want_dx(R * K, 42.0f);
    for (int64_t e = 0; e < E; ++e) {
      const QuantizedWeight qw = QuantizeWeight(w.data() + e * N * K, N, K, pow2);
      E4M3ToFloats(qw.codes(), w_codes.data() + e * N * K, N * K);
      ASSERT_EQ(qw.scales.numel(), GroupedFp8WeightScalesPerExpert(N, K));
      ASSERT_EQ(qw.scale_ld(), GroupedFp8WeightScaleLd(K));
      w_scales.insert(w_scales.end(), qw.scales.data<float>(),
                      qw.scales.data<float>() + qw.scales.numel());
      const int64_t M_e = off[e + 1] - off[e];
      if (M_e == 0) continue;
      Fp8GemmReference(QuantizeActivation(x.data() + off[e] * K, M_e, K, pow2), qw,
                       want_y.data() + off[e] * N);
      Fp8GemmReference(QuantizeActivation(dy.data() + off[e] * N, M_e, N, pow2),
                       TransposeWeight(qw), want_dx.data() + off[e] * K);
    }
    const std::vector<float> qx_scales(qx.scales.data<float>(),
                                       qx.scales.data<float>() + qx.scales.numel());
    const std::vector<float> qdy_scales(qdy.scales.data<float>(),
                                        qdy.scales.data<float>() + qdy.scales.numel());
    std::vector<float> y(R * N, 42.0f), dx(R * K, 42.0f);
    std::vector<int> y_writes(R * N, 0), dx_writes(R * K, 0);
    ReplayFp8Kind(GroupedGemmKind::kForward, sh, off, Decoded(qx), qx_scales, w_codes, w_scales, y,
                  y_writes);
    ReplayFp8Kind(GroupedGemmKind::kDataGrad, sh, off, Decoded(qdy), qdy_scales, w_codes, w_scales,
                  dx, dx_writes);
    EXPECT_LT(NormRelError(y, want_y), 1e-6);
    EXPECT_LT(NormRelError(dx, want_dx), 1e-6);
    for (int64_t r = 0; r < R; ++r) {
      const int want = r < off.back() ? 1 : 0;
      for (int64_t n = 0; n < N; ++n) ASSERT_EQ(y_writes[r * N + n], want) << r << "," << n;
      for (int64_t k = 0; k < K; ++k) ASSERT_EQ(dx_writes[r * K + k], want) << r << "," << k;
    }
    for (int64_t i = off.back() * N; i < R * N; ++i) EXPECT_EQ(y[i], 42.0f) << "spare row written";
  }
}

// ---- the weight gradient: token chunks ------------------------------------------------

// Chunk bases leave room for every expert's chunks, ids stay below GroupedFp8Chunks, and
// GroupedFp8ChunkOf inverts the map exactly on the ids in use (and rejects the others).
void CheckChunkIds(const std::vector<int32_t>& counts, int64_t spare_rows) {
  SCOPED_TRACE(::testing::PrintToString(counts));
  const auto off = OffsetsFromCounts(counts);
  const int64_t E = int64_t(counts.size()), rows = off.back() + spare_rows;
  const int64_t chunks = GroupedFp8Chunks(rows, E);
  std::vector<int> owner(chunks, -1), chunk_of(chunks, -1);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t base = GroupedFp8ChunkBase(off.data(), e);
    if (e > 0) {
      ASSERT_GT(base, GroupedFp8ChunkBase(off.data(), e - 1));
    }
    // The stride GroupedFp8GemmWeightGrad requires holds every expert's columns.
    EXPECT_LE(base * kGroupedFp8Chunk + counts[e], rows + (E - 1) * kGroupedFp8Chunk);
    for (int64_t t = 0; t * kGroupedFp8Chunk < counts[e]; ++t) {
      ASSERT_LT(base + t, chunks) << "expert " << e << " chunk " << t;
      ASSERT_EQ(owner[base + t], -1) << "id " << base + t << " used twice";
      owner[base + t] = int(e);
      chunk_of[base + t] = int(t);
    }
  }
  int64_t used = 0;
  for (int64_t id = 0; id < chunks; ++id) {
    int32_t e = -1, t = -1;
    const bool has = GroupedFp8ChunkOf(off.data(), E, id, &e, &t);
    ASSERT_EQ(has, owner[id] >= 0) << "id " << id;
    if (!has) continue;
    ++used;
    EXPECT_EQ(e, owner[id]);
    EXPECT_EQ(t, chunk_of[id]);
  }
  int64_t want = 0;
  for (int32_t c : counts) want += (c + kGroupedFp8Chunk - 1) / kGroupedFp8Chunk;
  EXPECT_EQ(used, want);
  int32_t e = 0, t = 0;
  EXPECT_FALSE(GroupedFp8ChunkOf(off.data(), E, -1, &e, &t));
  EXPECT_FALSE(GroupedFp8ChunkOf(off.data(), E, chunks, &e, &t));
}

TEST(GroupedFp8Chunks, IdsAreUniqueBoundedAndInvert) {
  CheckChunkIds({37, 0, 153, 1, 69}, 2);
  CheckChunkIds({128, 128, 0, 0, 256, 127, 129}, 0);
  CheckChunkIds({0, 0, 0}, 5);
  CheckChunkIds({1}, 0);
  std::mt19937 rng(7);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<int32_t> counts(1 + rng() % 300);
    for (int32_t& c : counts) c = rng() % 4 == 0 ? 0 : int32_t(rng() % 400);
    CheckChunkIds(counts, rng() % 3);
  }
}

// QuantizeChunksKernel on the host: each (id, column) warp's run through the CPU's own
// 1x128 quantisation, placed where the kernel stores it; unused slots stay NaN.
void ReplayQuantizeChunks(const std::vector<float>* src, const QuantizedActivation* src_q,
                          const std::vector<int32_t>& off, int64_t rows, int64_t C, int64_t ld,
                          std::vector<float>& codes_t, std::vector<float>& scales_t) {
  const int64_t E = int64_t(off.size()) - 1, chunks = GroupedFp8Chunks(rows, E);
  codes_t.assign(C * ld, std::numeric_limits<float>::quiet_NaN());
  scales_t.assign(chunks * C, std::numeric_limits<float>::quiet_NaN());
  std::vector<float> deq;
  if (src_q != nullptr) {
    deq.resize(rows * C);
    DequantizeActivation(*src_q, deq.data());
  }
  const std::vector<float>& values = src_q != nullptr ? deq : *src;
  for (int64_t id = 0; id < chunks; ++id) {
    int32_t e = 0, t = 0;
    if (!GroupedFp8ChunkOf(off.data(), E, id, &e, &t)) continue;
    const int64_t r0 = off[e] + int64_t(t) * kGroupedFp8Chunk;
    const int64_t len = std::min<int64_t>(kGroupedFp8Chunk, off[e + 1] - r0);
    for (int64_t col = 0; col < C; ++col) {
      std::vector<float> run(len);
      for (int64_t i = 0; i < len; ++i) run[i] = values[(r0 + i) * C + col];
      const QuantizedActivation q = QuantizeActivation(run.data(), 1, len, {true});
      E4M3ToFloats(q.codes(), codes_t.data() + col * ld + id * kGroupedFp8Chunk, len);
      scales_t[id * C + col] = q.scale(0, 0);
    }
  }
}

// The weight-grad kernel over the whole grid, from the chunk layouts: K-major tiles of both,
// promoted with both chunk scales, added to dw.
void ReplayFp8Wgrad(const GroupedGemmShape& sh, const std::vector<int32_t>& off, int64_t ld,
                    const std::vector<float>& dy_t, const std::vector<float>& dy_scales,
                    const std::vector<float>& x_t, const std::vector<float>& x_scales,
                    std::vector<float>& dw, std::vector<int>& writes) {
  int64_t grid[3];
  GroupedGrid(GroupedGemmKind::kWeightGrad, sh, grid);
  ASSERT_EQ(grid[2], sh.experts);
  for (int64_t bz = 0; bz < grid[2]; ++bz) {
    for (int64_t by = 0; by < grid[1]; ++by) {
      for (int64_t bx = 0; bx < grid[0]; ++bx) {
        GroupedBlockGemm g;
        if (!GroupedFp8WgradBlockFor(sh, off.data(), ld, bx, by, bz, &g)) continue;
        ASSERT_EQ(g.a_offset % kGroupedFp8Chunk, 0) << "expert's columns not chunk-aligned";
        const int64_t base = GroupedFp8ChunkBase(off.data(), bz);
        ReplayFp8Block(
            true, true, dy_t, x_t, g,
            [&](int64_t t, int64_t m, int64_t n) {
              return dy_scales.at((base + t) * sh.n + m) * x_scales.at((base + t) * sh.k + n);
            },
            [&](int64_t idx, float v) {
              dw.at(idx) += v;
              ++writes.at(idx);
            });
      }
    }
  }
}

// Against kernels/backend.cc's per-expert Fp8LinearBackwardWeight on the CPU (dy^T quantised
// along the expert's tokens, x^T re-tiled from the cached E4M3 operand or quantised from the
// FP32 values, Fp8GemmTokenTiled, added to dW_e). The chunk layout's codes and scales must be
// exactly those per-expert operands' (a misplaced run shows there first); the products agree
// up to FP32 rounding (double chunk sums here).
TEST(GroupedGemmFp8Blocks, WgradReplayMatchesPerExpertTokenTiledGemm) {
  for (const RaggedCase& cs :
       {RaggedCase{{37, 0, 153, 1, 69}, 144, 176},
        RaggedCase{{70, 0, 1, 130, 64, 65, 257}, 200, 136}, RaggedCase{{5}, 100, 64}}) {
    SCOPED_TRACE(cs.Trace());
    const auto off = OffsetsFromCounts(cs.counts);
    const GroupedGemmShape sh = cs.Shape(off, /*spare=*/2);
    const int64_t R = sh.rows, E = sh.experts, N = sh.n, K = sh.k;
    const int64_t ld = GroupedFp8Chunks(R, E) * kGroupedFp8Chunk;
    std::mt19937 rng(13);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    // Magnitudes change every 37 rows and 128 columns, so chunks of one column differ.
    auto spread = [&](int64_t rows, int64_t cols) {
      std::vector<float> v(rows * cols);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c)
          v[r * cols + c] = u(rng) * std::pow(10.0f, float(((r / 37) * 3 + (c / 128) * 2) % 5 - 2));
      return v;
    };
    const auto x = spread(R, K), dy = spread(R, N), dw0 = spread(E * N, K);
    const QuantizeOptions pow2{/*pow2_scales=*/true};
    const QuantizedActivation qx = QuantizeActivation(x.data(), R, K, pow2);

    std::vector<float> dy_t, dy_s, xq_t, xq_s, xf_t, xf_s;
    ReplayQuantizeChunks(&dy, nullptr, off, R, N, ld, dy_t, dy_s);
    ReplayQuantizeChunks(nullptr, &qx, off, R, K, ld, xq_t, xq_s);
    ReplayQuantizeChunks(&x, nullptr, off, R, K, ld, xf_t, xf_s);

    std::vector<float> want_cached = dw0, want_fp32 = dw0;
    for (int64_t e = 0; e < E; ++e) {
      const int64_t M = off[e + 1] - off[e], base = GroupedFp8ChunkBase(off.data(), e);
      if (M == 0) continue;
      std::vector<float> dyt(N * M), xt(K * M);
      for (int64_t r = 0; r < M; ++r) {
        for (int64_t n = 0; n < N; ++n) dyt[n * M + r] = dy[(off[e] + r) * N + n];
        for (int64_t k = 0; k < K; ++k) xt[k * M + r] = x[(off[e] + r) * K + k];
      }
      const QuantizedActivation qa = QuantizeActivation(dyt.data(), N, M, pow2);
      const QuantizedActivation qb_cached =
          RetileTransposed(QuantizeActivation(x.data() + off[e] * K, M, K, pow2), pow2);
      const QuantizedActivation qb_fp32 = QuantizeActivation(xt.data(), K, M, pow2);
      // The chunk layout holds exactly these operands.
      const auto same = [&](const QuantizedActivation& q, const std::vector<float>& codes_t,
                            const std::vector<float>& scales_t, int64_t C, const char* what) {
        const std::vector<float> dec = Decoded(q);
        for (int64_t c = 0; c < C; ++c) {
          for (int64_t r = 0; r < M; ++r)
            ASSERT_EQ(codes_t[c * ld + base * kGroupedFp8Chunk + r], dec[c * M + r])
                << what << " expert " << e << " col " << c << " row " << r;
          for (int64_t t = 0; t < q.col_tiles(); ++t)
            ASSERT_EQ(scales_t[(base + t) * C + c], q.scale(c, t)) << what << " scale";
        }
      };
      same(qa, dy_t, dy_s, N, "dy^T");
      same(qb_cached, xq_t, xq_s, K, "x^T re-tiled");
      same(qb_fp32, xf_t, xf_s, K, "x^T from fp32");
      std::vector<float> t(N * K);
      Fp8GemmTokenTiled(qa, qb_cached, t.data());
      for (int64_t i = 0; i < N * K; ++i) want_cached[e * N * K + i] += t[i];
      Fp8GemmTokenTiled(qa, qb_fp32, t.data());
      for (int64_t i = 0; i < N * K; ++i) want_fp32[e * N * K + i] += t[i];
    }

    std::vector<float> dw_cached = dw0, dw_fp32 = dw0;
    std::vector<int> writes(E * N * K, 0), writes_fp32(E * N * K, 0);
    ReplayFp8Wgrad(sh, off, ld, dy_t, dy_s, xq_t, xq_s, dw_cached, writes);
    ReplayFp8Wgrad(sh, off, ld, dy_t, dy_s, xf_t, xf_s, dw_fp32, writes_fp32);
    EXPECT_LT(NormRelError(dw_cached, want_cached), 1e-6);
    EXPECT_LT(NormRelError(dw_fp32, want_fp32), 1e-6);
    for (int64_t e = 0; e < E; ++e) {
      const int want = off[e + 1] > off[e] ? 1 : 0;
      for (int64_t i = 0; i < N * K; ++i) {
        ASSERT_EQ(writes[e * N * K + i], want) << "expert " << e << " element " << i;
        if (want == 0) {
          ASSERT_EQ(dw_cached[e * N * K + i], dw0[e * N * K + i]);
        }
      }
    }
  }
}

// CudaBackend::Fp8GemmTokenTiled runs the weight-gradient kernel as one expert on the
// operands as they are (row stride = the reduction depth, their VEC128 scales as the chunk
// scales): the CPU's Fp8GemmTokenTiled, for a depth that is neither a multiple of 128 nor
// of 8.
TEST(GroupedGemmFp8Blocks, TokenTiledGemmIsOneExpert) {
  const int64_t M = 144, N = 136, depth = 300;
  std::mt19937 rng(17);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> a(M * depth), b(N * depth);
  for (float& v : a) v = u(rng) * 3.0f;
  for (float& v : b) v = u(rng) * 0.01f;
  const QuantizeOptions pow2{/*pow2_scales=*/true};
  const QuantizedActivation qa = QuantizeActivation(a.data(), M, depth, pow2);
  const QuantizedActivation qb = QuantizeActivation(b.data(), N, depth, pow2);
  std::vector<float> want(M * N);
  Fp8GemmTokenTiled(qa, qb, want.data());
  GroupedGemmShape sh;
  sh.rows = depth;
  sh.experts = 1;
  sh.n = M;
  sh.k = N;
  const std::vector<int32_t> off = {0, int32_t(depth)};
  const std::vector<float> sa(qa.scales.data<float>(), qa.scales.data<float>() + qa.scales.numel());
  const std::vector<float> sb(qb.scales.data<float>(), qb.scales.data<float>() + qb.scales.numel());
  std::vector<float> y(M * N, 0.0f);
  std::vector<int> writes(M * N, 0);
  ReplayFp8Wgrad(sh, off, /*ld=*/depth, Decoded(qa), sa, Decoded(qb), sb, y, writes);
  EXPECT_LT(NormRelError(y, want), 1e-6);
  for (int w : writes) ASSERT_EQ(w, 1);
}

}  // namespace
}  // namespace mt::cuda

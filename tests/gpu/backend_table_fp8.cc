// tests/gpu/backend_table_fp8.cc: the FP8 entries of the backend op table (backend_table.h):
// kernels/backend.h's FP8 primitives and the Linear GEMMs backend.cc composes from them.
//
// The quantisation primitives, Transpose and CopyToHost must give the CPU's bytes (codes,
// scales including the zero padding columns of the 128x128 weight-scale array); the GEMMs
// sum the same exact E4M3 products in another order, so they are compared by relative error.
// Inputs span four orders of magnitude from tile to tile (one tile all zero), so every
// 1x128 tile and 128x128 block gets its own scale and a wrong scale index shows; K and N are
// not multiples of 128, so every operand has a partial last tile.
//
// cuBLASLt's block-scaled FP8 GEMM needs K % 16 == 0 (16-byte rows of E4M3 codes:
// CublasLtGemm::Fp8Linear refuses other K). fp8_gemm, fp8_linear and fp8_experts keep K
// and N (the Dgrad GEMM's K) multiples of 16 so that on sm_90 they run on cuBLASLt
// (backend_table_test.cc checks that none falls back); fp8_gemm_unaligned has K = 300 and
// is the entry that covers the fallback (the grouped kernel) on every GPU. The grouped GEMMs
// do not use cuBLASLt on the CUDA backend (grouped_gemm_fp8.cu), so
// fp8_experts_odd and fp8_experts_n128 are free to pick K and N.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tests/gpu/backend_table.h"
#include "tests/gpu/gpu_test_util.h"

namespace mt::test {
namespace {

using Outs = std::vector<BackendOutput>;

// x [rows, cols] uniform in (-1, 1), times 10^e with e in -2..2 chosen per (row group, 128
// columns): row_group 1 gives each 1x128 activation tile its own magnitude, 128 each 128x128
// weight block. The tile (zero_row, columns 128..255) is zero (the 1e-4 scale floor), when
// it exists.
Tensor Spread(Backend& be, int64_t rows, int64_t cols, uint32_t seed, int64_t row_group,
              int64_t zero_row = -1) {
  Tensor h({rows, cols}, DType::kF32);
  const std::vector<float> u = cuda::test::Random(rows * cols, seed);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t e = ((r / row_group) * 3 + (c / kQuantTile) * 2 + seed) % 5 - 2;
      const bool zero = r == zero_row && c / kQuantTile == 1;
      h.data<float>()[r * cols + c] = zero ? 0.0f : u[r * cols + c] * std::pow(10.0f, float(e));
    }
  }
  return be.ToDevice(h);
}

Tensor F32(Backend& be, std::vector<int64_t> shape, uint32_t seed) {
  Tensor h(std::move(shape), DType::kF32);
  const std::vector<float> v = cuda::test::Random(h.numel(), seed);
  std::copy(v.begin(), v.end(), h.data<float>());
  return be.ToDevice(h);
}

float* F(Tensor& t) { return t.data<float>(); }

BackendOutput Out(Backend& be, std::string name, const Tensor& t, bool exact = false) {
  return {std::move(name), be.ToHost(t), exact};
}

// E4M3 codes widened to I32 on the host (the comparison knows no 8-bit dtypes; I32 is
// always compared exactly).
BackendOutput CodesOut(Backend& be, std::string name, const Tensor& codes) {
  const Tensor h = be.ToHost(codes);
  Tensor wide(h.shape(), DType::kI32);
  const uint8_t* b = static_cast<const uint8_t*>(h.raw());
  for (int64_t i = 0; i < h.numel(); ++i) wide.data<int32_t>()[i] = b[i];
  return {std::move(name), std::move(wide), true};
}

void AddActivation(Backend& be, const std::string& name, const QuantizedActivation& q, Outs* outs) {
  outs->push_back(CodesOut(be, name + " codes", q.data));
  outs->push_back(Out(be, name + " scales", q.scales, true));
}

void AddWeight(Backend& be, const std::string& name, const QuantizedWeight& q, Outs* outs) {
  outs->push_back(CodesOut(be, name + " codes", q.data));
  outs->push_back(Out(be, name + " scales (+ zero pad)", q.scales, true));
}

// ---- quantisation (exact) -------------------------------------------------------------

// 1x128 tiles of x [200, 300] (and of [3, 77], one partial tile), their dequantised
// values, and the re-tiling to X^T [300, 200] (tiles along M, 128 + 72 rows).
Outs Fp8Quantize(Backend& be) {
  Outs outs;
  Tensor x = Spread(be, 200, 300, 300, 1, /*zero_row=*/5);
  const QuantizedActivation q = be.QuantizeFp8(F(x), 200, 300);
  AddActivation(be, "x", q, &outs);
  Tensor deq = be.Empty({200, 300});
  be.DequantizeFp8(q, F(deq));
  outs.push_back(Out(be, "x dequantised", deq, true));
  AddActivation(be, "x^T re-tiled", be.RetileTransposedFp8(q), &outs);
  Tensor small = Spread(be, 3, 77, 301, 1);
  AddActivation(be, "small", be.QuantizeFp8(F(small), 3, 77), &outs);
  return outs;
}

// The attention output's E5M6 cache: 1x128 tiles of [200, 300] spread over many binades
// (one all-zero row), and in place on [3, 77]; the same bits on every backend.
Outs RoundE5M6(Backend& be) {
  Tensor x = Spread(be, 200, 300, 300, 1, /*zero_row=*/5), y = be.Empty({200, 300});
  be.RoundE5M6(F(x), F(y), 200, 300);
  Tensor small = Spread(be, 3, 77, 301, 1);
  be.RoundE5M6(F(small), F(small), 3, 77);
  return {Out(be, "e5m6 rounded", y, true), Out(be, "e5m6 rounded in place", small, true)};
}

// The norm before an FP8 GEMM (RmsNormQuantizeFp8; fused on CUDA) on rows of [200, 300]
// spread over many binades. Against the CPU: rstd and the dequantised values by relative
// error, since the GPU's sum of squares runs in another order (a last-bit change of rstd can
// move a code). Against the same backend's unfused norm then QuantizeFp8: codes and scales
// that differ, counted on the device's own host copies, must be none.
Outs RmsNormFp8(Backend& be) {
  constexpr int64_t R = 200, C = 300;
  Tensor x = Spread(be, R, C, 330, 1, /*zero_row=*/5), w = F32(be, {C}, 331);
  Tensor rstd = be.Empty({R}), y = be.Empty({R, C}), rstd_unfused = be.Empty({R});
  const QuantizedActivation q = be.RmsNormQuantizeFp8(F(x), F(w), F(rstd), R, C, 1e-6);
  be.RmsNormForward(F(x), F(w), F(y), F(rstd_unfused), R, C, 1e-6);
  const QuantizedActivation u = be.QuantizeFp8(F(y), R, C);
  Tensor deq = be.Empty({R, C});
  be.DequantizeFp8(q, F(deq));
  const auto differing = [&](const Tensor& a, const Tensor& b) {
    const Tensor ha = be.ToHost(a), hb = be.ToHost(b);
    const size_t bytes = ha.nbytes();
    const auto* pa = static_cast<const uint8_t*>(ha.raw());
    const auto* pb = static_cast<const uint8_t*>(hb.raw());
    int32_t n = 0;
    for (size_t i = 0; i < bytes; ++i) n += pa[i] != pb[i];
    return n;
  };
  Tensor mismatches({3}, DType::kI32);
  mismatches.data<int32_t>()[0] = differing(q.data, u.data);
  mismatches.data<int32_t>()[1] = differing(q.scales, u.scales);
  mismatches.data<int32_t>()[2] = differing(rstd, rstd_unfused);
  BackendOutput none{"fused vs unfused: differing code, scale and rstd bytes", mismatches, true};
  none.zeros = true;
  BackendOutput values = Out(be, "dequantised", deq);
  values.tolerance = 1e-3;  // a moved code is one E4M3 step (1/16) of one element
  return {Out(be, "rstd", rstd), std::move(values), std::move(none)};
}

// 128x128 blocks of w [260, 300] (3 x 3 blocks: one zero padding column per scale row) and
// of [130, 600] (2 x 5 blocks: three), of their transposes (exact code moves), and of
// expert stacks.
Outs Fp8Weight(Backend& be) {
  Outs outs;
  Tensor w = Spread(be, 260, 300, 310, kQuantTile);
  const QuantizedWeight q = be.QuantizeWeightFp8(F(w), 260, 300);
  AddWeight(be, "w", q, &outs);
  AddWeight(be, "w^T", be.TransposeWeightFp8(q), &outs);
  Tensor wide = Spread(be, 130, 600, 311, kQuantTile);
  const QuantizedWeight qw = be.QuantizeWeightFp8(F(wide), 130, 600);
  AddWeight(be, "wide", qw, &outs);
  AddWeight(be, "wide^T", be.TransposeWeightFp8(qw), &outs);
  // Stacked experts, each on its own grid: N = 260 (blocks would straddle experts) and
  // N = 256 (CUDA quantises the whole stack in one launch).
  for (const int64_t N : {260, 256}) {
    Tensor stack = Spread(be, 3 * N, 300, 312 + N, kQuantTile);
    const QuantizedExperts qe = be.QuantizeExpertsFp8(F(stack), 3, N, 300);
    AddWeight(be, "experts N=" + std::to_string(N), qe.all, &outs);
  }
  return outs;
}

// Transpose (the Wgrad operands' step) and CopyToHost (how backend.cc reads expert offsets
// back), from an offset start and for zero bytes.
Outs TransposeCopyToHost(Backend& be) {
  Tensor x = F32(be, {200, 300}, 320), xt = be.Empty({300, 200});
  be.Transpose(F(x), F(xt), 200, 300);
  Tensor row = F32(be, {1, 37}, 321), col = be.Empty({37, 1});
  be.Transpose(F(row), F(col), 1, 37);
  Tensor src = F32(be, {100}, 322), host({61}, DType::kF32);
  be.CopyToHost(F(src) + 3, host.raw(), 61 * sizeof(float));
  be.CopyToHost(F(src), host.raw(), 0);  // a no-op, not a wait on a null copy
  Tensor ints = be.ToDevice([] {
    Tensor h({9}, DType::kI32);
    for (int32_t i = 0; i < 9; ++i) h.data<int32_t>()[i] = i * i - 20;
    return h;
  }());
  Tensor host_ints({9}, DType::kI32);
  be.CopyToHost(ints.data<int32_t>(), host_ints.raw(), 9 * sizeof(int32_t));
  return {Out(be, "x^T", xt, true),
          Out(be, "row^T", col, true),
          {"copy to host (offset)", std::move(host), true},
          {"copy to host (i32)", std::move(host_ints), true}};
}

// ---- GEMMs (relative error) -----------------------------------------------------------

// Fp8Gemm into y one float past an aligned start (y may be a row slice of a larger tensor),
// and Fp8GemmTokenTiled on two 1x128-tiled operands.
Outs Fp8Gemms(Backend& be, int64_t M, int64_t K, int64_t N, uint32_t seed) {
  Tensor x = Spread(be, M, K, seed, 1, /*zero_row=*/7), w = Spread(be, N, K, seed + 1, kQuantTile);
  Tensor b = Spread(be, N, K, seed + 2, 1);
  const QuantizedActivation qx = be.QuantizeFp8(F(x), M, K);
  Tensor y = F32(be, {M * N + 1}, seed + 3), yt = F32(be, {M, N}, seed + 4);  // overwritten
  be.Fp8Gemm(qx, be.QuantizeWeightFp8(F(w), N, K), F(y) + 1);
  be.Fp8GemmTokenTiled(qx, be.QuantizeFp8(F(b), N, K), F(yt));
  return {Out(be, "fp8 gemm y (unaligned)", y), Out(be, "token-tiled y", yt)};
}

// The composed Linear GEMMs (backend.cc): Fprop, Dgrad overwriting and accumulating, Wgrad
// from the cached E4M3 operand and from the FP32 values (both accumulate into random dW).
Outs Fp8Linear(Backend& be) {
  const int64_t M = 200, K = 304, N = 272;
  Tensor x = Spread(be, M, K, 340, 1, /*zero_row=*/9), w = Spread(be, N, K, 341, kQuantTile);
  Tensor dy = Spread(be, M, N, 342, 1);
  const QuantizedActivation qx = be.QuantizeFp8(F(x), M, K);
  Tensor y = F32(be, {M, N}, 343), dx = F32(be, {M, K}, 344), dx_acc = F32(be, {M, K}, 345);
  Tensor dw_cached = F32(be, {N, K}, 346), dw_fp32 = F32(be, {N, K}, 347);
  be.Fp8LinearForward(qx, F(w), F(y), N);
  be.Fp8LinearBackwardInput(F(dy), F(w), F(dx), M, K, N, /*accumulate=*/false);
  be.Fp8LinearBackwardInput(F(dy), F(w), F(dx_acc), M, K, N, /*accumulate=*/true);
  be.Fp8LinearBackwardWeight(F(dy), &qx, nullptr, F(dw_cached), M, K, N);
  be.Fp8LinearBackwardWeight(F(dy), nullptr, F(x), F(dw_fp32), M, K, N);
  return {Out(be, "linear y", y), Out(be, "linear dx", dx), Out(be, "linear dx (+=)", dx_acc),
          Out(be, "linear dw (+=, cached xq)", dw_cached),
          Out(be, "linear dw (+=, fp32 x)", dw_fp32)};
}

// The grouped ones over ragged offsets: an empty expert, a one-row expert and one of 153
// rows (two token tiles, restarting at the expert's first row).
Outs Fp8Experts(Backend& be) {
  const int64_t E = 5, rows = 260, K = 176, N = 144;
  const std::vector<int32_t> off = {0, 37, 37, 190, 191, 260};
  Tensor offsets = be.ToDevice([&] {
    Tensor h({E + 1}, DType::kI32);
    std::copy(off.begin(), off.end(), h.data<int32_t>());
    return h;
  }());
  const int32_t* o = offsets.data<int32_t>();
  Tensor x = Spread(be, rows, K, 350, 1, /*zero_row=*/40);
  Tensor w = Spread(be, E * N, K, 351, kQuantTile), dy = Spread(be, rows, N, 352, 1);
  const QuantizedActivation qx = be.QuantizeFp8(F(x), rows, K);
  Tensor y = F32(be, {rows, N}, 353), dx = F32(be, {rows, K}, 354);
  Tensor dx_acc = F32(be, {rows, K}, 355), dw_cached = F32(be, {E, N, K}, 356);
  Tensor dw_fp32 = F32(be, {E, N, K}, 357);
  be.GroupedFp8Forward(qx, F(w), F(y), o, E, N);
  be.GroupedFp8BackwardInput(F(dy), F(w), F(dx), o, rows, E, K, N, /*accumulate=*/false);
  be.GroupedFp8BackwardInput(F(dy), F(w), F(dx_acc), o, rows, E, K, N, /*accumulate=*/true);
  be.GroupedFp8BackwardWeight(F(dy), &qx, nullptr, F(dw_cached), o, rows, E, K, N);
  be.GroupedFp8BackwardWeight(F(dy), nullptr, F(x), F(dw_fp32), o, rows, E, K, N);
  return {Out(be, "grouped y", y), Out(be, "grouped dx", dx), Out(be, "grouped dx (+=)", dx_acc),
          Out(be, "grouped dw (+=, cached xq)", dw_cached),
          Out(be, "grouped dw (+=, fp32 x)", dw_fp32)};
}

// The grouped GEMMs (CUDA: grouped_gemm_fp8.cu on the device offsets) with two
// spare rows past offsets[E] that neither backend may write, experts of 64 and 65 rows (one
// and two row tiles) and an empty one. K and N multiples of 8 take the kernel's 8-code
// loads, others its element-wise ones; N % 128 == 0 quantises the stacked experts' weights
// in one launch, other N per expert.
Outs Fp8ExpertsGrouped(Backend& be, int64_t K, int64_t N, uint32_t seed) {
  const std::vector<int32_t> off = {0, 64, 129, 129, 198};
  const int64_t E = int64_t(off.size()) - 1, rows = off.back() + 2;
  Tensor offsets = be.ToDevice([&] {
    Tensor h({E + 1}, DType::kI32);
    std::copy(off.begin(), off.end(), h.data<int32_t>());
    return h;
  }());
  const int32_t* o = offsets.data<int32_t>();
  Tensor x = Spread(be, rows, K, seed, 1, /*zero_row=*/3);
  Tensor w = Spread(be, E * N, K, seed + 1, kQuantTile), dy = Spread(be, rows, N, seed + 2, 1);
  const QuantizedActivation qx = be.QuantizeFp8(F(x), rows, K);
  Tensor y = F32(be, {rows, N}, seed + 3), dx = F32(be, {rows, K}, seed + 4);
  Tensor dx_acc = F32(be, {rows, K}, seed + 5);
  Tensor dw_cached = F32(be, {E, N, K}, seed + 6), dw_fp32 = F32(be, {E, N, K}, seed + 7);
  be.GroupedFp8Forward(qx, F(w), F(y), o, E, N);
  be.GroupedFp8BackwardInput(F(dy), F(w), F(dx), o, rows, E, K, N, /*accumulate=*/false);
  be.GroupedFp8BackwardInput(F(dy), F(w), F(dx_acc), o, rows, E, K, N, /*accumulate=*/true);
  be.GroupedFp8BackwardWeight(F(dy), &qx, nullptr, F(dw_cached), o, rows, E, K, N);
  be.GroupedFp8BackwardWeight(F(dy), nullptr, F(x), F(dw_fp32), o, rows, E, K, N);
  return {Out(be, "grouped y (spare rows kept)", y), Out(be, "grouped dx (spare rows kept)", dx),
          Out(be, "grouped dx (+=)", dx_acc), Out(be, "grouped dw (+=, cached xq)", dw_cached),
          Out(be, "grouped dw (+=, fp32 x)", dw_fp32)};
}

}  // namespace

std::vector<BackendOp> Fp8BackendOps() {
  return {
      {"fp8_quantize", Fp8Quantize},
      {"fp8_weight", Fp8Weight},
      {"round_e5m6", RoundE5M6},
      {"rmsnorm_fp8", RmsNormFp8},
      {"fp8_transpose_copy_to_host", TransposeCopyToHost},
      {"fp8_gemm", [](Backend& be) { return Fp8Gemms(be, 200, 304, 272, 330); }},
      {"fp8_gemm_unaligned", [](Backend& be) { return Fp8Gemms(be, 200, 300, 260, 335); }},
      {"fp8_linear", Fp8Linear},
      {"fp8_experts", Fp8Experts},
      {"fp8_experts_odd", [](Backend& be) { return Fp8ExpertsGrouped(be, 300, 130, 360); }},
      {"fp8_experts_n128", [](Backend& be) { return Fp8ExpertsGrouped(be, 200, 256, 370); }},
  };
}

}  // namespace mt::test

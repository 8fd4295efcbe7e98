// tests/gpu/backend_table_ops.cc: the entries of the backend op table (backend_table.h).
// Shapes are small but ragged (not multiples of any block or tile), leading dimensions
// exceed the rows they describe, and every "+=" output starts from random values.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "kernels/bf16.h"
#include "tests/gpu/backend_table.h"
#include "tests/gpu/gpu_test_util.h"

namespace mt::test {
namespace {

using Outs = std::vector<BackendOutput>;

// ---- inputs (host tensors from fixed seeds, put on the backend) -----------------------

Tensor F32(Backend& be, std::vector<int64_t> shape, uint32_t seed, float scale = 1.0f,
           float shift = 0.0f) {
  Tensor h(shape, DType::kF32);
  const std::vector<float> v = cuda::test::Random(h.numel(), seed, scale, shift);
  std::copy(v.begin(), v.end(), h.data<float>());
  return be.ToDevice(h);
}

Tensor F64(Backend& be, std::vector<int64_t> shape, uint32_t seed, double scale = 1.0) {
  Tensor h(shape, DType::kF64);
  const std::vector<float> v = cuda::test::Random(h.numel(), seed);
  for (int64_t i = 0; i < h.numel(); ++i) h.data<double>()[i] = scale * v[i];
  return be.ToDevice(h);
}

template <typename T>
Tensor FromVector(Backend& be, const std::vector<T>& v) {
  Tensor h({static_cast<int64_t>(v.size())}, DTypeOf<T>());
  std::copy(v.begin(), v.end(), h.template data<T>());
  return be.ToDevice(h);
}

// topk [T, K]: K distinct experts per token drawn from the first `used` of E (so experts
// past `used` stay empty).
std::vector<int32_t> RandomTopk(int64_t T, int64_t K, int64_t used, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> all(used), topk;
  std::iota(all.begin(), all.end(), 0);
  for (int64_t t = 0; t < T; ++t) {
    std::shuffle(all.begin(), all.end(), rng);
    topk.insert(topk.end(), all.begin(), all.begin() + K);
  }
  return topk;
}

float* F(Tensor& t) { return t.data<float>(); }
double* D(Tensor& t) { return t.data<double>(); }
int32_t* I(Tensor& t) { return t.data<int32_t>(); }

BackendOutput Out(Backend& be, std::string name, const Tensor& t, bool exact = false) {
  return {std::move(name), be.ToHost(t), exact};
}

// ---- memory ---------------------------------------------------------------------------

Outs Memory(Backend& be) {
  Tensor src = F32(be, {7, 9}, 1), dst = F32(be, {5, 12}, 2), acc = F32(be, {5, 12}, 3);
  be.Copy2D(F(src) + 1, 9, F(dst) + 2, 12, 5, 6);        // a [5, 6] block into columns 2..7
  be.Copy2D(F(src) + 4, 9, F(dst) + 60 - 12, 12, 1, 9);  // one row: no pitch needed
  // Bytes: 6 rows of 10 bytes at a 36-byte pitch into rows of 20 at byte 6 (unaligned
  // ends), and one row.
  Tensor bytes = F32(be, {6, 5}, 10);
  be.CopyBytes2D(F(src), 36, reinterpret_cast<std::byte*>(F(bytes)) + 6, 20, 6, 10);
  be.CopyBytes2D(F(src) + 50, 36, F(bytes) + 25, 20, 1, 18);
  be.Add2D(F(src) + 9 + 3, 9, F(acc) + 1, 12, 4, 5);
  Tensor flat = be.Empty({50});
  be.Copy(F(src) + 3, F(flat), 50 * sizeof(float));
  Tensor zeroed = F32(be, {33}, 4);
  be.Zero(&zeroed);
  { Tensor dirty = F32(be, {1000}, 5); }  // freed: the next block of its size is reused
  Tensor fresh = be.Empty({1000});
  Tensor i64 = be.Empty({3, 5}, DType::kI64);
  std::vector<float> host(40);
  for (size_t i = 0; i < host.size(); ++i) host[i] = 0.25f * static_cast<float>(i) - 3.0f;
  Tensor uploaded = be.Empty({48});  // 40 host floats into the middle of a zeroed buffer
  be.CopyFromHost(host.data(), F(uploaded) + 5, host.size() * sizeof(float));
  // MLA's shared rotary key into 6 heads of [T=5, 6, 9] (columns 4..8 of each head), and
  // those heads' rotary gradients summed back in head order onto a non-zero block.
  Tensor heads = F32(be, {5, 6, 9}, 6), rope = F32(be, {5, 5}, 7), rope_sum = F32(be, {5, 5}, 8);
  be.Broadcast2D(F(rope), 5, F(heads) + 4, 6 * 9, 9, 6, 5, 5);
  Tensor grads = F32(be, {5, 6, 9}, 9);
  be.SumRepeats2D(F(grads) + 4, 6 * 9, 9, 6, F(rope_sum), 5, 5, 5);
  Outs outs{Out(be, "copy2d", dst, true),
            Out(be, "copy bytes 2d", bytes, true),
            Out(be, "copy from host", uploaded, true),
            Out(be, "broadcast2d", heads, true),
            Out(be, "sum repeats2d (the per-head adds, same bits)", rope_sum, true),
            Out(be, "add2d", acc),
            Out(be, "copy", flat, true),
            Out(be, "zero", zeroed, true),
            Out(be, "empty f32 zero-filled", fresh, true),
            Out(be, "empty i64 zero-filled", i64, true)};
  for (BackendOutput& o : outs) o.zeros = o.name == "zero" || o.name.rfind("empty", 0) == 0;
  return outs;
}

// ---- dense ops ------------------------------------------------------------------------

Outs Gemm(Backend& be) {
  Outs outs;
  const int64_t M = 37, N = 45, K = 29;
  for (int ta = 0; ta < 2; ++ta) {
    for (int tb = 0; tb < 2; ++tb) {
      const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 2, ldc = N + 5;
      Tensor A = F32(be, {ta ? K : M, lda}, 10 + 2 * ta + tb);
      Tensor B = F32(be, {tb ? N : K, ldb}, 20 + 2 * ta + tb);
      Tensor C = F32(be, {M, ldc}, 30 + 2 * ta + tb);
      be.Gemm(ta, tb, M, N, K, 0.7f, F(A), lda, F(B), ldb, 0.3f, F(C), ldc);
      outs.push_back(Out(be, std::string("C ") + (ta ? "T" : "N") + (tb ? "T" : "N"), C));
    }
  }
  // The Linear helpers (kernels/backend.h) and K = 0 (C = beta C).
  Tensor x = F32(be, {13, 24}, 40), w = F32(be, {17, 24}, 41), y = be.Empty({13, 17});
  Tensor dy = F32(be, {13, 17}, 42), dx = F32(be, {13, 24}, 43), dw = F32(be, {17, 24}, 44);
  be.LinearForward(F(x), F(w), F(y), 13, 24, 17);
  be.LinearBackwardInput(F(dy), F(w), F(dx), 13, 24, 17, /*accumulate=*/true);
  be.LinearBackwardWeight(F(dy), F(x), F(dw), 13, 24, 17);
  Tensor c0 = F32(be, {5, 6}, 45);
  be.Gemm(false, false, 5, 6, 0, 1.0f, F(x), 1, F(w), 6, 0.5f, F(c0), 6);
  outs.push_back(Out(be, "linear y", y));
  outs.push_back(Out(be, "linear dx (+=)", dx));
  outs.push_back(Out(be, "linear dw (+=)", dw));
  outs.push_back(Out(be, "K = 0: C = beta C", c0));
  return outs;
}

Outs RmsNorm(Backend& be) {
  const int64_t rows = 37, C = 1000;
  Tensor x = F32(be, {rows, C}, 50, 2.0f), w = F32(be, {C}, 51, 0.5f, 1.0f);
  Tensor y = be.Empty({rows, C}), rstd = be.Empty({rows}), dy = F32(be, {rows, C}, 52);
  Tensor dx = be.Empty({rows, C}), dw = F32(be, {C}, 53);
  be.RmsNormForward(F(x), F(w), F(y), F(rstd), rows, C, 1e-6);
  be.RmsNormBackward(F(dy), F(x), F(w), F(rstd), F(dx), F(dw), rows, C);
  return {Out(be, "y", y), Out(be, "rstd", rstd), Out(be, "dx", dx), Out(be, "dw (+=)", dw)};
}

Outs Rope(Backend& be) {
  const int64_t B = 2, S = 19, H = 5, stride = 80, offset = 16, dr = 64;
  Tensor cs({S, dr / 2}, DType::kF64), sn({S, dr / 2}, DType::kF64);
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t i = 0; i < dr / 2; ++i) {
      const double angle = s * std::pow(10000.0, -2.0 * i / dr);
      cs.data<double>()[s * dr / 2 + i] = 1.1 * std::cos(angle);
      sn.data<double>()[s * dr / 2 + i] = 1.1 * std::sin(angle);
    }
  }
  Tensor cos = be.ToDevice(cs), sin = be.ToDevice(sn);
  Tensor x = F32(be, {B, S, H, stride}, 60), dx = F32(be, {B, S, H, stride}, 61);
  be.RopeForward(F(x), B, S, H, stride, offset, dr, D(cos), D(sin));
  be.RopeBackward(F(dx), B, S, H, stride, offset, dr, D(cos), D(sin));
  return {Out(be, "x", x), Out(be, "dx", dx)};
}

Outs Pointwise(Backend& be) {
  const int64_t n = 4099;
  Tensor gate = F32(be, {n}, 70, 4.0f), up = F32(be, {n}, 71), dh = F32(be, {n}, 72);
  Tensor h = be.Empty({n}), dgate = be.Empty({n}), dup = be.Empty({n});
  be.SwigluForward(F(gate), F(up), F(h), n);
  be.SwigluBackward(F(dh), F(gate), F(up), F(dgate), F(dup), n);
  Tensor y = F32(be, {n}, 73), z = F32(be, {n}, 74), g = F32(be, {n}, 75);
  be.Add(F(gate), F(y), n);
  be.Axpy(-0.37f, F(up), F(z), n);
  be.Scale(F(g), n, 0.61f);
  return {Out(be, "swiglu h", h), Out(be, "swiglu dgate", dgate), Out(be, "swiglu dup", dup),
          Out(be, "add (+=)", y), Out(be, "axpy (+=)", z),        Out(be, "scale", g)};
}

Outs Attention(Backend& be) {
  const int64_t B = 2, S = 17, N = 3, Dqk = 24, Dv = 16;
  const double scale = 1.0 / std::sqrt(double(Dqk));
  Tensor q = F32(be, {B, S, N, Dqk}, 80), k = F32(be, {B, S, N, Dqk}, 81);
  Tensor v = F32(be, {B, S, N, Dv}, 82), dout = F32(be, {B, S, N, Dv}, 83);
  Tensor out = be.Empty({B, S, N, Dv}), saved;
  Tensor dq = F32(be, {B, S, N, Dqk}, 84), dk = F32(be, {B, S, N, Dqk}, 85);
  Tensor dv = F32(be, {B, S, N, Dv}, 86);  // random: overwritten, not added to
  be.AttentionForward(F(q), F(k), F(v), F(out), &saved, B, S, N, Dqk, Dv, scale);
  be.AttentionBackward(F(dout), F(q), F(k), F(v), F(out), saved, F(dq), F(dk), F(dv), B, S, N, Dqk,
                       Dv, scale);
  return {Out(be, "out", out), Out(be, "dq", dq), Out(be, "dk", dk), Out(be, "dv", dv)};
}

Outs Embedding(Backend& be) {
  const int64_t V = 50, C = 70, n = 41;
  std::vector<int32_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = int32_t((i * 7) % 13);  // repeated ids
  Tensor d_ids = FromVector(be, ids), table = F32(be, {V, C}, 90), out = be.Empty({n, C});
  Tensor dout = F32(be, {n, C}, 91), dtable = F32(be, {V, C}, 92);
  be.EmbeddingForward(I(d_ids), F(table), F(out), n, C);
  be.EmbeddingBackward(I(d_ids), F(dout), F(dtable), n, C);
  return {Out(be, "out", out, true), Out(be, "dtable (+=, repeated ids)", dtable)};
}

Outs CrossEntropy(Backend& be) {
  const int64_t rows = 13, V = 1000;
  std::vector<int32_t> targets(rows);
  for (int64_t r = 0; r < rows; ++r) targets[r] = r % 5 == 3 ? -1 : int32_t((r * 97) % V);
  Tensor t = FromVector(be, targets), logits = F32(be, {rows, V}, 100, 5.0f);
  Tensor loss = FromVector(be, std::vector<double>{0.5});
  be.CrossEntropy(F(logits), I(t), rows, V, 1.0f / 10, D(loss));
  return {Out(be, "dlogits", logits), Out(be, "loss sum (+=)", loss)};
}

// ---- BF16 GEMMs ------------------------------------------------------------------------
// Both backends round the operands to BF16 alike and sum in FP32, so they differ by the
// order of the sums only. The inputs are not BF16 values: a path that skipped the rounding
// would be ~1e-3 off.

Outs GemmBf16(Backend& be) {
  Outs outs;
  const int64_t M = 37, N = 45, K = 29;
  for (int ta = 0; ta < 2; ++ta) {
    for (int tb = 0; tb < 2; ++tb) {
      const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 2, ldc = N + 5;
      const float beta = ta == tb ? 0.0f : 0.3f;
      Tensor A = F32(be, {ta ? K : M, lda}, 210 + 2 * ta + tb);
      Tensor B = F32(be, {tb ? N : K, ldb}, 220 + 2 * ta + tb);
      Tensor C = F32(be, {M, ldc}, 230 + 2 * ta + tb);
      be.GemmBf16(ta, tb, M, N, K, F(A), lda, F(B), ldb, beta, F(C), ldc);
      outs.push_back(Out(be, std::string("C ") + (ta ? "T" : "N") + (tb ? "T" : "N"), C));
    }
  }
  // The Linear helpers (tight, odd leading dimensions), each output one float past an
  // aligned start (the CUDA backend computes those in an aligned temporary), and K = 0.
  const int64_t T = 13, in = 24, out = 17;
  Tensor x = F32(be, {T, in}, 240), w = F32(be, {out, in}, 241), dy = F32(be, {T, out}, 242);
  Tensor y = be.Empty({T * out + 1}), dx = F32(be, {T * in + 1}, 243);
  Tensor dx_set = F32(be, {T, in}, 244), dw = F32(be, {out * in + 1}, 245);
  be.LinearForwardBf16(F(x), F(w), F(y) + 1, T, in, out);
  be.LinearBackwardInputBf16(F(dy), F(w), F(dx) + 1, T, in, out, /*accumulate=*/true);
  be.LinearBackwardInputBf16(F(dy), F(w), F(dx_set), T, in, out, /*accumulate=*/false);
  be.LinearBackwardWeightBf16(F(dy), F(x), F(dw) + 1, T, in, out);
  Tensor c0 = F32(be, {5, 6}, 246);
  be.GemmBf16(false, false, 5, 6, 0, F(x), 1, F(w), 6, 0.5f, F(c0), 6);
  outs.push_back(Out(be, "linear y (unaligned)", y));
  outs.push_back(Out(be, "linear dx (+=, unaligned)", dx));
  outs.push_back(Out(be, "linear dx", dx_set));
  outs.push_back(Out(be, "linear dw (+=, unaligned)", dw));
  outs.push_back(Out(be, "K = 0: C = beta C", c0));
  // The same Linear GEMMs on a kept BF16 copy of w (Backend::Bf16Weight): the results of w.
  const Tensor wb = be.Bf16Weight(F(w), out * in);
  Tensor y_kept = be.Empty({T * out + 1}), dx_kept = F32(be, {T * in + 1}, 243);
  be.LinearForwardBf16(F(x), wb, F(y_kept) + 1, T, in, out);
  be.LinearBackwardInputBf16(F(dy), wb, F(dx_kept) + 1, T, in, out, /*accumulate=*/true);
  Tensor c0_kept = F32(be, {5, 6}, 246);
  be.GemmBf16(false, false, 5, 6, 0, F(x), 1, wb, 6, 0.5f, F(c0_kept), 6);
  outs.push_back(Out(be, "kept w: linear y (unaligned)", y_kept));
  outs.push_back(Out(be, "kept w: linear dx (+=, unaligned)", dx_kept));
  outs.push_back(Out(be, "kept w: K = 0", c0_kept));
  return outs;
}

// The grouped expert GEMMs on fixed offsets: ragged experts, two of them empty.
Outs ExpertsBf16(Backend& be) {
  const int64_t E = 6, rows = 150, K = 40, N = 24;
  Tensor offsets = FromVector(be, std::vector<int32_t>{0, 23, 23, 90, 91, 150, 150});
  Tensor x = F32(be, {rows, K}, 250), w = F32(be, {E, N, K}, 251), y = be.Empty({rows, N});
  Tensor dy = F32(be, {rows, N}, 252), dx = F32(be, {rows, K}, 253);
  Tensor dx_acc = F32(be, {rows, K}, 254), dw = F32(be, {E, N, K}, 255);
  be.GroupedLinearForwardBf16(F(x), F(w), F(y), I(offsets), rows, E, K, N);
  be.GroupedLinearBackwardInputBf16(F(dy), F(w), F(dx), I(offsets), rows, E, K, N, false);
  be.GroupedLinearBackwardInputBf16(F(dy), F(w), F(dx_acc), I(offsets), rows, E, K, N, true);
  be.GroupedLinearBackwardWeightBf16(F(dy), F(x), F(dw), I(offsets), rows, E, K, N);
  // On a kept BF16 copy of the stacked weights (Backend::Bf16Weight).
  const Tensor wb = be.Bf16Weight(F(w), E * N * K);
  Tensor y_kept = be.Empty({rows, N}), dx_kept = F32(be, {rows, K}, 254);
  be.GroupedLinearForwardBf16(F(x), wb, F(y_kept), I(offsets), rows, E, K, N);
  be.GroupedLinearBackwardInputBf16(F(dy), wb, F(dx_kept), I(offsets), rows, E, K, N, true);
  return {Out(be, "grouped fwd y", y),
          Out(be, "grouped dgrad dx", dx),
          Out(be, "grouped dgrad dx (+=)", dx_acc),
          Out(be, "grouped wgrad dw (+=)", dw),
          Out(be, "kept w: grouped fwd y", y_kept),
          Out(be, "kept w: grouped dgrad dx (+=)", dx_kept)};
}

// ---- MoE ------------------------------------------------------------------------------

RouteShape Route() {
  RouteShape s;
  s.seq_len = 20;
  s.tokens = 3 * s.seq_len;
  s.experts = 64;
  s.top_k = 6;
  s.n_group = 8;
  s.topk_group = 4;
  s.norm_topk = true;
  s.scaling = 2.5;
  s.valid = 17;
  return s;
}

Outs Router(Backend& be) {
  const RouteShape s = Route();
  Tensor logits = F32(be, {s.tokens, s.experts}, 110, 3.0f), bias = F32(be, {s.experts}, 111, 0.1f);
  Tensor scores = be.Empty({s.tokens, s.experts}),
         topk = be.Empty({s.tokens, s.top_k}, DType::kI32);
  Tensor weight = be.Empty({s.tokens, s.top_k});
  Tensor load = FromVector(be, std::vector<int64_t>(s.experts, 3));
  be.RouterForward(F(logits), F(bias), F(scores), I(topk), F(weight), load.data<int64_t>(), s);
  return {Out(be, "scores", scores), Out(be, "topk", topk, true), Out(be, "weight", weight),
          Out(be, "load (+=)", load, true)};
}

// The balance loss and the router backward on routing that is the same on both backends.
Outs Balance(Backend& be, bool norm_topk, double balance_scale) {
  RouteShape s = Route();
  s.norm_topk = norm_topk;
  Tensor scores = F32(be, {s.tokens, s.experts}, 120, 0.45f, 0.5f);  // sigmoids in (0, 1)
  Tensor topk = FromVector(be, RandomTopk(s.tokens, s.top_k, s.experts, 121));
  Tensor f = F64(be, {s.tokens / s.seq_len, s.experts}, 122);  // overwritten
  Tensor loss = FromVector(be, std::vector<double>{0.25});
  be.BalanceForward(F(scores), I(topk), D(f), D(loss), s);
  Tensor dweight = F64(be, {s.tokens, s.top_k}, 123), dl = F32(be, {s.tokens, s.experts}, 124);
  be.RouterBackward(F(scores), I(topk), D(dweight), D(f), balance_scale, F(dl), s);
  return {Out(be, "f", f), Out(be, "balance loss (+=)", loss), Out(be, "d_logits", dl)};
}

// Plan, permutation, combine and the grouped expert GEMMs over it: E = 16 experts of which
// the last 4 get no token.
Outs Experts(Backend& be) {
  const int64_t T = 37, K = 4, E = 16, H = 40, F_ = 24, P = T * K;
  Tensor topk = FromVector(be, RandomTopk(T, K, 12, 130));
  Tensor src_token = be.Empty({P}, DType::kI32), slot_pos = be.Empty({P}, DType::kI32);
  Tensor offsets = be.Empty({E + 1}, DType::kI32);
  const MoeRoutingPlan plan{I(src_token), I(slot_pos), I(offsets)};
  be.MoePlanBuild(I(topk), T, K, E, plan);
  Tensor x = F32(be, {T, H}, 131), xp = be.Empty({P, H});
  be.PermuteRows(F(x), F(xp), I(src_token), P, H);
  // Experts: h = xp W1_e^T [P, F], ye = h W2_e^T [P, H]; then back.
  Tensor w1 = F32(be, {E, F_, H}, 132), w2 = F32(be, {E, H, F_}, 133);
  Tensor h = be.Empty({P, F_}), ye = be.Empty({P, H});
  be.GroupedLinearForward(F(xp), F(w1), F(h), I(offsets), P, E, H, F_);
  be.GroupedLinearForward(F(h), F(w2), F(ye), I(offsets), P, E, F_, H);
  Tensor weight = F32(be, {T, K}, 134, 0.5f, 0.5f), y = F32(be, {T, H}, 135);
  be.Combine(F(ye), F(weight), I(slot_pos), F(y), T, K, H);
  Tensor dy = F32(be, {T, H}, 136), dye = be.Empty({P, H}), dweight = be.Empty({T, K}, DType::kF64);
  be.CombineBackward(F(dy), F(ye), F(weight), I(slot_pos), F(dye), D(dweight), T, K, H);
  Tensor dh = be.Empty({P, F_}), dxp = F32(be, {P, H}, 137);
  be.GroupedLinearBackwardInput(F(dye), F(w2), F(dh), I(offsets), P, E, F_, H, false);
  be.GroupedLinearBackwardInput(F(dh), F(w1), F(dxp), I(offsets), P, E, H, F_, true);
  Tensor dw1 = F32(be, {E, F_, H}, 138), dw2 = F32(be, {E, H, F_}, 139);
  be.GroupedLinearBackwardWeight(F(dye), F(h), F(dw2), I(offsets), P, E, F_, H);
  be.GroupedLinearBackwardWeight(F(dh), F(xp), F(dw1), I(offsets), P, E, H, F_);
  Tensor dx = F32(be, {T, H}, 140);
  be.UnpermuteAdd(F(dxp), I(slot_pos), F(dx), T, K, H);
  return {Out(be, "plan src_token", src_token, true),
          Out(be, "plan slot_pos", slot_pos, true),
          Out(be, "plan offsets", offsets, true),
          Out(be, "permuted x", xp, true),
          Out(be, "grouped fwd h", h),
          Out(be, "grouped fwd ye", ye),
          Out(be, "combine y (+=)", y),
          Out(be, "combine bwd dye", dye),
          Out(be, "combine bwd dweight (f64)", dweight),
          Out(be, "grouped dgrad dh", dh),
          Out(be, "grouped dgrad dxp (+=)", dxp),
          Out(be, "grouped wgrad dw1 (+=)", dw1),
          Out(be, "grouped wgrad dw2 (+=)", dw2),
          Out(be, "unpermute dx (+=)", dx)};
}

// ---- optimizer ------------------------------------------------------------------------

Outs Optimizer(Backend& be) {
  const int64_t n = 3001;
  Tensor g = F32(be, {n}, 150), w = F32(be, {n}, 151), m = F32(be, {n}, 152, 0.1f);
  Tensor v = F32(be, {n}, 153, 0.01f, 0.011f);  // second moments are positive
  Tensor sum_sq = FromVector(be, std::vector<double>{1.5});
  be.SumSquares(F(g), n, D(sum_sq));
  // Ranges as a flat gradient buffer has them: out of order, touching (folded into one pass
  // on a GPU) and apart.
  Tensor ranges_sq = FromVector(be, std::vector<double>{0.5});
  be.SumSquaresRanges(F(g), {{1000, 700}, {0, 1000}, {1700, 300}, {2500, 501}}, D(ranges_sq));
  AdamStepCoeffs c;
  c.lr = 3e-3;
  c.wd = 0.1;
  c.bc1 = 1 - std::pow(c.b1, 7);
  c.bc2 = 1 - std::pow(c.b2, 7);
  be.AdamW(F(w), F(g), F(m), F(v), n / 2, /*decay=*/true, c);
  be.AdamW(F(w) + n / 2, F(g) + n / 2, F(m) + n / 2, F(v) + n / 2, n - n / 2, false, c);
  // BF16 moments: the same step from the initial moments rounded to BF16.
  auto bf16_of = [&](uint32_t seed, float scale, float offset) {
    const Tensor f = be.ToHost(F32(be, {n}, seed, scale, offset));
    Tensor bits({n}, DType::kBF16);
    FloatsToBf16(f.data<float>(), static_cast<uint16_t*>(bits.raw()), n);
    return be.ToDevice(bits);
  };
  Tensor w16 = F32(be, {n}, 151), m16 = bf16_of(152, 0.1f, 0.0f), v16 = bf16_of(153, 0.01f, 0.011f);
  auto* m16p = static_cast<uint16_t*>(m16.raw());
  auto* v16p = static_cast<uint16_t*>(v16.raw());
  be.AdamWBf16Moments(F(w16), F(g), m16p, v16p, n / 2, /*decay=*/true, c);
  be.AdamWBf16Moments(F(w16) + n / 2, F(g) + n / 2, m16p + n / 2, v16p + n / 2, n - n / 2, false,
                      c);
  // Widened to FP32 on the host: a GPU's double arithmetic (FMA) may round a moment to the
  // neighbouring BF16 value, so they compare by normwise error, not bytes.
  auto widened = [&](const char* name, const Tensor& bits) {
    const Tensor h = be.ToHost(bits);
    Tensor f({n}, DType::kF32);
    Bf16ToFloats(static_cast<const uint16_t*>(h.raw()), f.data<float>(), n);
    return BackendOutput{name, f, false, false, 1e-2};
  };
  return {Out(be, "sum of squares (+=)", sum_sq),
          Out(be, "sum of squares over ranges (+=)", ranges_sq),
          Out(be, "adamw w", w),
          Out(be, "adamw m", m),
          Out(be, "adamw v", v),
          Out(be, "adamw bf16-moments w", w16),
          widened("adamw bf16-moments m", m16),
          widened("adamw bf16-moments v", v16)};
}

// Expert parallelism's row sums and copies (trainer/device_moe_ep_plan.h): 11 segments of 0
// to 6 rows of 145, in an order of their own, rows repeating across segments; the same float
// additions in the same order on both backends: exact. And rows moved as bytes (H = 40 of
// them, as FP8 codes would be), repeated and skipped, held as I32 words (compared exactly).
Outs EpRows(Backend& be) {
  const int64_t rows = 145, H = 40, n = 29;
  Tensor x = F32(be, {rows, H}, 151);
  std::vector<int32_t> seg_offsets = {0}, seg_rows;
  for (int32_t s = 0; s < 11; ++s) {
    for (int32_t j = 0; j < (s * 5) % 7; ++j) seg_rows.push_back((s * 37 + j * 11) % rows);
    seg_offsets.push_back(static_cast<int32_t>(seg_rows.size()));
  }
  Tensor segments = F32(be, {11, H}, 154);  // overwritten, the empty segment too
  Tensor d_offsets = FromVector(be, seg_offsets), d_rows = FromVector(be, seg_rows);
  be.SegmentSumRows(F(x), I(d_offsets), I(d_rows), F(segments), 11, H);
  std::vector<int32_t> words(rows * H / 4), pick(n);
  uint32_t lcg = 155;
  for (int32_t& w : words) w = static_cast<int32_t>(lcg = lcg * 1664525u + 1013904223u);
  for (int64_t i = 0; i < n; ++i) pick[i] = static_cast<int32_t>((i * 7) % rows);
  Tensor gathered = be.Empty({n, H / 4}, DType::kI32), d_words = FromVector(be, words),
         d_pick = FromVector(be, pick);
  be.GatherRows(d_words.raw(), gathered.raw(), I(d_pick), n, H);
  return {Out(be, "segment sums", segments, true), Out(be, "gathered byte rows", gathered, true)};
}

// The BF16 wire format: FP32 -> BF16 bits (round to nearest even, NaN and infinities kept)
// and back. Bits and widened values exact.
Outs Bf16Bits(Backend& be) {
  const int64_t n = 1000;
  Tensor host = be.ToHost(F32(be, {n}, 160, 1e3f));
  float* v = host.data<float>();
  v[0] = std::numeric_limits<float>::infinity();
  v[1] = -std::numeric_limits<float>::infinity();
  v[2] = std::numeric_limits<float>::quiet_NaN();
  v[3] = -0.0f;
  v[4] = 1.0f + 1.0f / 256;  // a tie: to even
  v[5] = 3.0e38f;            // rounds up to infinity
  Tensor x = be.ToDevice(host), bits = be.Empty({n}, DType::kBF16), y = be.Empty({n});
  be.ToBf16Bits(F(x), static_cast<uint16_t*>(bits.raw()), n);
  be.FromBf16Bits(static_cast<const uint16_t*>(bits.raw()), F(y), n);
  const Tensor b = be.ToHost(bits);  // compared as I32 (the table compares no 16-bit dtype)
  Tensor codes({n}, DType::kI32);
  for (int64_t i = 0; i < n; ++i)
    codes.data<int32_t>()[i] = static_cast<const uint16_t*>(b.raw())[i];
  return {BackendOutput{"bf16 bits", codes, true}, Out(be, "bf16 widened", y, true)};
}

}  // namespace

const std::vector<BackendOp>& BackendOpTable() {
  static const std::vector<BackendOp> table = [] {
    std::vector<BackendOp> t = {
        {"memory", Memory},
        {"gemm", Gemm},
        {"gemm_bf16", GemmBf16},
        {"rmsnorm", RmsNorm},
        {"rope", Rope},
        {"pointwise", Pointwise},
        {"attention", Attention},
        {"embedding", Embedding},
        {"cross_entropy", CrossEntropy},
        {"router", Router},
        {"balance_norm_topk", [](Backend& be) { return Balance(be, true, 0.03); }},
        {"balance_plain_topk", [](Backend& be) { return Balance(be, false, 0.0); }},
        {"experts", Experts},
        {"ep_segment_sums_and_row_gather", EpRows},
        {"bf16_bits", Bf16Bits},
        {"experts_bf16", ExpertsBf16},
        {"optimizer", Optimizer},
    };
    for (BackendOp& op : Fp8BackendOps()) t.push_back(std::move(op));
    return t;
  }();
  return table;
}

}  // namespace mt::test

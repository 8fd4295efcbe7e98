// tests/gpu/attention_plan_test.cc: the unfused attention's launch lists
// (attention_unfused.h UnfusedAttentionForwardPlan / BackwardPlan), replayed on the CPU
// with a column-major strided-batched GEMM of cuBLAS's semantics and the kernels' softmax,
// against ops::AttentionForward / Backward. No GPU: host buffers stand in for device ones,
// so every offset, leading dimension, batch stride and transpose handed to cuBLAS is
// checked here; the GPU op table (attention_mla_*) checks cuBLAS and the kernels themselves.
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/attention_unfused.h"
#include "kernels/ops.h"

namespace mt::cuda {
namespace {

// cuBLAS's column-major op(X)[r, c] of a matrix stored with leading dimension ld.
float At(const float* x, cublasOperation_t op, int ld, int64_t r, int64_t c) {
  return op == CUBLAS_OP_N ? x[r + c * ld] : x[c + r * ld];
}

// The FP32 steps of a plan, executed as cuBLAS and the kernels define them.
void Replay(const std::vector<UnfusedAttentionStep>& steps) {
  for (const UnfusedAttentionStep& st : steps) {
    if (st.kind == UnfusedAttentionStep::Kind::kGemm) {
      ASSERT_EQ(st.ab_type, CUDA_R_32F);
      ASSERT_EQ(st.c_type, CUDA_R_32F);
      for (int i = 0; i < st.batch; ++i) {
        const float* a = static_cast<const float*>(st.a) + i * st.stride_a;
        const float* b = static_cast<const float*>(st.b) + i * st.stride_b;
        float* c = static_cast<float*>(st.c) + i * st.stride_c;
        for (int r = 0; r < st.m; ++r) {
          for (int col = 0; col < st.n; ++col) {
            double acc = 0;
            for (int k = 0; k < st.k; ++k)
              acc += double(At(a, st.op_a, st.lda, r, k)) * At(b, st.op_b, st.ldb, k, col);
            c[r + int64_t(col) * st.ldc] = float(st.alpha * acc);  // beta = 0
          }
        }
      }
      continue;
    }
    const int64_t S = st.S;
    for (int64_t row = 0; row < st.rows; ++row) {
      const int64_t i = row % S;
      const float* in = st.f32 + row * S;
      float* out = static_cast<float*>(st.out) + row * S;
      if (st.kind == UnfusedAttentionStep::Kind::kSoftmax) {
        float mx = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) mx = std::max(mx, in[j]);
        double sum = 0;
        for (int64_t j = 0; j <= i; ++j) sum += std::exp(double(in[j]) - mx);
        for (int64_t j = 0; j < S; ++j) out[j] = j <= i ? float(std::exp(in[j] - mx) / sum) : 0;
      } else {
        const float* p = static_cast<const float*>(st.probs) + row * S;
        double dot = 0;
        for (int64_t j = 0; j <= i; ++j) dot += double(p[j]) * in[j];
        for (int64_t j = 0; j < S; ++j) out[j] = j <= i ? float(p[j] * (in[j] - dot)) : 0;
      }
    }
  }
}

std::vector<float> Random(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

double RelError(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num / den);
}

// heads_in_workspace < N makes the plan split each batch's heads into GEMM chunks.
void CheckPlan(const AttentionShape& sh, int64_t heads_in_workspace) {
  const int64_t B = sh.B, S = sh.S, N = sh.N, Dqk = sh.Dqk, Dv = sh.Dv;
  const int64_t nqk = B * S * N * Dqk, nv = B * S * N * Dv, np = B * N * S * S;
  const auto q = Random(nqk, 1), k = Random(nqk, 2), v = Random(nv, 3), dout = Random(nv, 4);
  std::vector<float> out(nv), probs(np), dq(nqk), dk(nqk), dv(nv);
  ops::AttentionForward<float>(q.data(), k.data(), v.data(), out.data(), probs.data(), B, S, N, Dqk,
                               Dv, sh.scale);
  ops::AttentionBackward<float>(dout.data(), q.data(), k.data(), v.data(), probs.data(), dq.data(),
                                dk.data(), dv.data(), B, S, N, Dqk, Dv, sh.scale);

  const size_t ws_bytes =
      UnfusedAttentionWorkspaceBytes(sh, AttentionDtype::kF32) / N * heads_in_workspace;
  std::vector<float> ws(ws_bytes / sizeof(float) + 1, NAN);  // NaN: unwritten scratch shows
  // NaN-filled outputs: a step that misses an element leaves a NaN in the comparison.
  std::vector<float> g_out(nv, NAN), g_probs(np, NAN), g_dq(nqk, NAN), g_dk(nqk, NAN),
      g_dv(nv, NAN);
  const auto fwd = UnfusedAttentionForwardPlan<float>(
      sh, q.data(), k.data(), v.data(), g_out.data(), g_probs.data(), ws.data(), ws_bytes);
  const int64_t chunks = B * ((N + heads_in_workspace - 1) / heads_in_workspace);
  EXPECT_EQ(fwd.size(), size_t(3 * chunks));
  Replay(fwd);
  const auto bwd = UnfusedAttentionBackwardPlan<float>(
      sh, dout.data(), q.data(), k.data(), v.data(), g_probs.data(), g_dq.data(), g_dk.data(),
      g_dv.data(), ws.data(), ws_bytes);
  EXPECT_EQ(bwd.size(), size_t(5 * chunks));
  Replay(bwd);
  EXPECT_LE(RelError(g_out, out), 1e-5);
  EXPECT_LE(RelError(g_probs, probs), 1e-5);
  EXPECT_LE(RelError(g_dq, dq), 1e-5);
  EXPECT_LE(RelError(g_dk, dk), 1e-5);
  EXPECT_LE(RelError(g_dv, dv), 1e-5);
}

// The op table's MLA shape: head dims 192 / 128.
AttentionShape Mla() { return {2, 128, 4, 192, 128, 1.2 / std::sqrt(192.0)}; }

TEST(UnfusedAttentionPlan, MlaAllHeadsPerGemm) { CheckPlan(Mla(), 4); }
TEST(UnfusedAttentionPlan, MlaHeadsChunkedThreeThenOne) { CheckPlan(Mla(), 3); }
TEST(UnfusedAttentionPlan, OddShapeOneHeadPerGemm) { CheckPlan({3, 7, 5, 12, 8, 0.3}, 1); }

TEST(UnfusedAttentionPlan, Bf16PlanTypes) {
  const AttentionShape sh{1, 8, 2, 16, 8, 0.25};
  std::vector<uint16_t> t(1 << 12);
  std::vector<char> ws(UnfusedAttentionWorkspaceBytes(sh, AttentionDtype::kBF16));
  const auto fwd = UnfusedAttentionForwardPlan<uint16_t>(sh, t.data(), t.data(), t.data(), t.data(),
                                                         t.data(), ws.data(), ws.size());
  ASSERT_EQ(fwd.size(), 3u);
  // Scores in FP32 from BF16 operands; P V in BF16 out.
  EXPECT_EQ(fwd[0].ab_type, CUDA_R_16BF);
  EXPECT_EQ(fwd[0].c_type, CUDA_R_32F);
  EXPECT_EQ(fwd[2].ab_type, CUDA_R_16BF);
  EXPECT_EQ(fwd[2].c_type, CUDA_R_16BF);
  const auto bwd =
      UnfusedAttentionBackwardPlan<uint16_t>(sh, t.data(), t.data(), t.data(), t.data(), t.data(),
                                             t.data(), t.data(), t.data(), ws.data(), ws.size());
  ASSERT_EQ(bwd.size(), 5u);
  EXPECT_EQ(bwd[1].c_type, CUDA_R_32F);  // dP
  // dS (BF16) sits after dP's FP32 [N, S, S] in the workspace.
  EXPECT_EQ(static_cast<const char*>(bwd[2].out), ws.data() + sh.N * sh.S * sh.S * 4);
  EXPECT_LE(static_cast<const char*>(bwd[2].out) + sh.N * sh.S * sh.S * 2, ws.data() + ws.size());
}

}  // namespace
}  // namespace mt::cuda

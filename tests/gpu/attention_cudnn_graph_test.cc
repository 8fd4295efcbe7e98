// tests/gpu/attention_cudnn_graph_test.cc: the cuDNN SDPA graphs (attention_cudnn_graph.h)
// executed on the CPU, operation by operation, against ops::AttentionForward / Backward.
// No GPU and no cuDNN engine: what this checks is moetrain's side of the graphs (the
// [B, S, N, D] strides, the K^T / V^T views and transposed reshapes, the causal mask's
// direction, the log-sum-exp Stats, the softmax backward, which tensor feeds which
// operand), with each operation given the meaning cudnn-frontend's SDPA lowering relies
// on (BINARY_SELECT y = t ? x : b, GEN_INDEX the index along `axis`, reductions onto the
// extent-1 dims, BF16 tensors rounded on write). Whether cuDNN's engines take the graphs
// and agree is the device's to say (attention_choice_test, AttentionOnDevice).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/attention_cudnn_backend.h"
#include "kernels/cuda/attention_cudnn_graph.h"
#include "kernels/ops.h"

namespace mt::cuda {
namespace {

using Trace = GraphBuilder::Trace;
using OpKind = GraphBuilder::OpKind;

float RoundBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  std::memcpy(&f, &u, 4);
  return f;
}

int64_t Numel(const Dims4& d) { return d[0] * d[1] * d[2] * d[3]; }

// Logical index -> (i0, i1, i2, i3) of dims d.
Dims4 Unflatten(int64_t idx, const Dims4& d) {
  Dims4 i{};
  for (int k = 3; k >= 0; --k) {
    i[k] = idx % d[k];
    idx /= d[k];
  }
  return i;
}

int64_t Flatten(const Dims4& i, const Dims4& d) {
  return ((i[0] * d[1] + i[1]) * d[2] + i[2]) * d[3] + i[3];
}

int64_t Offset(const Dims4& i, const Dims4& strides) {
  return i[0] * strides[0] + i[1] * strides[1] + i[2] * strides[2] + i[3] * strides[3];
}

// `i` of an output read from an input of dims d (extent-1 dims broadcast).
Dims4 Broadcast(Dims4 i, const Dims4& d) {
  for (int k = 0; k < 4; ++k) {
    if (d[k] == 1) i[k] = 0;
  }
  return i;
}

// Executes a trace: every tensor as a dense logical array of doubles; non-virtual tensors
// read from / written to strided float memory bound by uid.
class TraceRunner {
 public:
  explicit TraceRunner(const Trace& trace) : trace_(trace) {}

  void Bind(int64_t uid, float* memory) { memory_[uid] = memory; }

  void Run() {
    std::map<int64_t, bool> produced;
    for (const auto& op : trace_.ops) produced[op.y] = true;
    for (const auto& [uid, info] : trace_.tensors) {
      if (info.is_virtual || produced.count(uid)) continue;
      ASSERT_TRUE(memory_.count(uid)) << "input " << uid << " not bound";
      std::vector<double>& v = values_[uid];
      v.resize(Numel(info.dims));
      for (int64_t j = 0; j < Numel(info.dims); ++j) {
        v[j] = memory_[uid][Offset(Unflatten(j, info.dims), info.strides)];
      }
    }
    for (const auto& op : trace_.ops) Execute(op);
    for (const auto& [uid, info] : trace_.tensors) {
      if (info.is_virtual || !produced.count(uid)) continue;
      ASSERT_TRUE(memory_.count(uid)) << "output " << uid << " not bound";
      for (int64_t j = 0; j < Numel(info.dims); ++j) {
        memory_[uid][Offset(Unflatten(j, info.dims), info.strides)] =
            static_cast<float>(values_[uid][j]);
      }
    }
  }

 private:
  const GraphBuilder::TensorInfo& Info(int64_t uid) { return trace_.tensors.at(uid); }

  double At(int64_t uid, const Dims4& i) {
    return values_.at(uid)[Flatten(Broadcast(i, Info(uid).dims), Info(uid).dims)];
  }

  void Execute(const GraphBuilder::OpInfo& op) {
    const GraphBuilder::TensorInfo& yi = Info(op.y);
    std::vector<double> y(Numel(yi.dims));
    switch (op.kind) {
      case OpKind::kPointwise:
        for (int64_t j = 0; j < Numel(yi.dims); ++j) y[j] = Pointwise(op, Unflatten(j, yi.dims));
        break;
      case OpKind::kReduction: {
        const bool max = op.mode == CUDNN_REDUCE_TENSOR_MAX;
        std::fill(y.begin(), y.end(), max ? -INFINITY : 0.0);
        const Dims4& xd = Info(op.x).dims;
        for (int64_t j = 0; j < Numel(xd); ++j) {
          const double x = values_.at(op.x)[j];
          double& acc = y[Flatten(Broadcast(Unflatten(j, xd), yi.dims), yi.dims)];
          acc = max ? std::max(acc, x) : acc + x;
        }
        break;
      }
      case OpKind::kMatmul: {
        const int64_t K = Info(op.x).dims[3];
        EXPECT_EQ(Info(op.b).dims[2], K);
        for (int64_t j = 0; j < Numel(yi.dims); ++j) {
          const Dims4 i = Unflatten(j, yi.dims);
          double acc = 0;
          for (int64_t kk = 0; kk < K; ++kk) {
            acc += At(op.x, {i[0], i[1], i[2], kk}) * At(op.b, {i[0], i[1], kk, i[3]});
          }
          y[j] = acc;
        }
        break;
      }
      case OpKind::kReshape: {
        // Same memory, other dims and strides: lay x out by its strides, read by y's.
        const GraphBuilder::TensorInfo& xi = Info(op.x);
        std::vector<double> memory(Numel(xi.dims) * 4, NAN);
        for (int64_t j = 0; j < Numel(xi.dims); ++j) {
          memory[Offset(Unflatten(j, xi.dims), xi.strides)] = values_.at(op.x)[j];
        }
        for (int64_t j = 0; j < Numel(yi.dims); ++j) {
          y[j] = memory[Offset(Unflatten(j, yi.dims), yi.strides)];
        }
        break;
      }
    }
    if (yi.type == CUDNN_DATA_BFLOAT16) {
      for (double& v : y) v = RoundBf16(static_cast<float>(v));
    }
    values_[op.y] = std::move(y);
  }

  double Pointwise(const GraphBuilder::OpInfo& op, const Dims4& i) {
    auto x = [&] { return At(op.x, i); };
    auto b = [&] { return At(op.b, i); };
    switch (op.mode) {
      case CUDNN_POINTWISE_ADD:
        return x() + b();
      case CUDNN_POINTWISE_SUB:
        return x() - b();
      case CUDNN_POINTWISE_MUL:
        return x() * b();
      case CUDNN_POINTWISE_DIV:
        return x() / b();
      case CUDNN_POINTWISE_EXP:
        return std::exp(x());
      case CUDNN_POINTWISE_LOG:
        return std::log(x());
      case CUDNN_POINTWISE_IDENTITY:
        return x();
      case CUDNN_POINTWISE_CMP_GE:
        return x() >= b() ? 1.0 : 0.0;
      case CUDNN_POINTWISE_BINARY_SELECT:
        return At(op.t, i) != 0 ? x() : b();
      case CUDNN_POINTWISE_GEN_INDEX:
        return static_cast<double>(i[op.axis]);
      default:
        ADD_FAILURE() << "pointwise mode " << op.mode << " not interpreted";
        return NAN;
    }
  }

  const Trace& trace_;
  std::map<int64_t, float*> memory_;
  std::map<int64_t, std::vector<double>> values_;
};

std::vector<float> RandomBf16(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = RoundBf16(dist(rng));
  return v;
}

// max |got - want| / max |want|.
double MaxRelError(const std::vector<float>& got, const std::vector<float>& want) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, std::fabs(double(got[i]) - want[i]));
    ref = std::max(ref, std::fabs(double(want[i])));
  }
  return err / ref;
}

class CudnnSdpaGraphOnCpu : public ::testing::TestWithParam<AttentionShape> {};

TEST_P(CudnnSdpaGraphOnCpu, MatchesTheReferenceAttention) {
  const AttentionShape sh = GetParam();
  const int64_t B = sh.B, S = sh.S, N = sh.N, Dqk = sh.Dqk, Dv = sh.Dv;
  const int64_t nqk = B * S * N * Dqk, nv = B * S * N * Dv;
  std::vector<float> q = RandomBf16(nqk, 1), k = RandomBf16(nqk, 2), v = RandomBf16(nv, 3),
                     dout = RandomBf16(nv, 4);
  // The reference: FP32 attention on the same BF16 values.
  std::vector<float> ref_o(nv), probs(B * N * S * S), ref_dq(nqk), ref_dk(nqk), ref_dv(nv);
  ops::AttentionForward<float>(q.data(), k.data(), v.data(), ref_o.data(), probs.data(), B, S, N,
                               Dqk, Dv, sh.scale);
  ops::AttentionBackward<float>(dout.data(), q.data(), k.data(), v.data(), probs.data(),
                                ref_dq.data(), ref_dk.data(), ref_dv.data(), B, S, N, Dqk, Dv,
                                sh.scale);

  float scale = static_cast<float>(sh.scale), neg_inf = std::numeric_limits<float>::lowest();
  float one = 1.0f;
  std::vector<float> o(nv), stats(B * N * S);
  GraphBuilder fwd;
  AddSdpaForwardGraph(&fwd, sh);
  ASSERT_TRUE(fwd.status().ok()) << fwd.status();
  TraceRunner f(fwd.trace());
  f.Bind(kSdpaQ, q.data());
  f.Bind(kSdpaK, k.data());
  f.Bind(kSdpaV, v.data());
  f.Bind(kSdpaO, o.data());
  f.Bind(kSdpaStats, stats.data());
  f.Bind(kSdpaScale, &scale);
  f.Bind(kSdpaNegInf, &neg_inf);
  f.Run();
  EXPECT_LT(MaxRelError(o, ref_o), 1e-2);

  // Stats [B, N, S] = log-sum-exp of row (b, h, i)'s scaled scores over keys 0..i.
  double stats_err = 0;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < N; ++h) {
      for (int64_t i = 0; i < S; ++i) {
        std::vector<double> s;
        for (int64_t j = 0; j <= i; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < Dqk; ++d) {
            dot += double(q[((b * S + i) * N + h) * Dqk + d]) * k[((b * S + j) * N + h) * Dqk + d];
          }
          s.push_back(double(scale) * dot);
        }
        const double m = *std::max_element(s.begin(), s.end());
        double z = 0;
        for (double x : s) z += std::exp(x - m);
        stats_err = std::max(stats_err, std::fabs(stats[(b * N + h) * S + i] - (m + std::log(z))));
      }
    }
  }
  EXPECT_LT(stats_err, 1e-4);

  std::vector<float> dq(nqk), dk(nqk), dv(nv), row_sum(B * N * S), dq_accum(nqk);
  GraphBuilder bwd;
  AddSdpaBackwardGraph(&bwd, sh);
  ASSERT_TRUE(bwd.status().ok()) << bwd.status();
  TraceRunner r(bwd.trace());
  r.Bind(kSdpaQ, q.data());
  r.Bind(kSdpaK, k.data());
  r.Bind(kSdpaV, v.data());
  r.Bind(kSdpaO, o.data());  // forward's BF16 output, as in training
  r.Bind(kSdpaDO, dout.data());
  r.Bind(kSdpaStats, stats.data());
  r.Bind(kSdpaDQ, dq.data());
  r.Bind(kSdpaDK, dk.data());
  r.Bind(kSdpaDV, dv.data());
  r.Bind(kSdpaRowSum, row_sum.data());
  r.Bind(kSdpaDQAccum, dq_accum.data());
  r.Bind(kSdpaScale, &scale);
  r.Bind(kSdpaNegInf, &neg_inf);
  r.Bind(kSdpaOne, &one);
  r.Run();
  EXPECT_LT(MaxRelError(dq, ref_dq), 2e-2);
  EXPECT_LT(MaxRelError(dk, ref_dk), 2e-2);
  EXPECT_LT(MaxRelError(dv, ref_dv), 2e-2);
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudnnSdpaGraphOnCpu,
                         ::testing::Values(AttentionShape{2, 9, 3, 24, 16, 0.2},
                                           AttentionShape{1, 6, 2, 192, 128, 0.07}),
                         [](const auto& info) {
                           return "S" + std::to_string(info.param.S) + "_Dqk" +
                                  std::to_string(info.param.Dqk);
                         });

}  // namespace
}  // namespace mt::cuda

// kernels/cuda/attention_cudnn_graph.cc: the causal SDPA forward and backward operation
// graphs (attention_cudnn_graph.h), operation by operation.
#include "kernels/cuda/attention_cudnn_graph.h"

namespace mt::cuda {
namespace {

constexpr cudnnDataType_t kF32 = CUDNN_DATA_FLOAT;
constexpr cudnnDataType_t kBf16 = CUDNN_DATA_BFLOAT16;

// The tensors of one graph: moetrain's [B, S, N, D] memory as cuDNN's [B, N, S, D], and the
// virtual [B, N, S, S] scores and [B, N, S, 1] row statistics between the operations.
class SdpaTensors {
 public:
  SdpaTensors(GraphBuilder* g, const AttentionShape& sh) : g_(g), sh_(sh) {}

  // [B, N, S, d] over memory [B, S, N, d].
  void Bnsd(int64_t uid, int64_t d) {
    g_->Tensor(uid, kBf16, {sh_.B, sh_.N, sh_.S, d}, {sh_.S * sh_.N * d, d, sh_.N * d, 1}, false);
  }
  // [B, N, d, S]: the transpose of Bnsd's memory (K^T, V^T), no copy.
  void Bnds(int64_t uid, int64_t d) {
    g_->Tensor(uid, kBf16, {sh_.B, sh_.N, d, sh_.S}, {sh_.S * sh_.N * d, d, 1, sh_.N * d}, false);
  }
  // [B, N, S, 1] FP32, non-virtual (Stats, the row sums).
  void Rows(int64_t uid) {
    g_->Tensor(uid, kF32, {sh_.B, sh_.N, sh_.S, 1}, {sh_.N * sh_.S, sh_.S, 1, 1}, false);
  }
  // A virtual [B, N, S, 1] FP32 row statistic.
  int64_t VirtualRows() {
    g_->Tensor(next_, kF32, {sh_.B, sh_.N, sh_.S, 1}, {sh_.N * sh_.S, sh_.S, 1, 1}, true);
    return next_++;
  }
  // A virtual [B, N, S, S] score-shaped tensor (row-major per head).
  int64_t Scores(cudnnDataType_t type = kF32) {
    const int64_t S = sh_.S;
    g_->Tensor(next_, type, {sh_.B, sh_.N, S, S}, {sh_.N * S * S, S * S, S, 1}, true);
    return next_++;
  }
  // A virtual BF16 [B, N, S, S] view of scores transposed per head (the P^T, dS^T operands).
  int64_t TransposedScores() {
    const int64_t S = sh_.S;
    g_->Tensor(next_, kBf16, {sh_.B, sh_.N, S, S}, {sh_.N * S * S, S * S, 1, S}, true);
    return next_++;
  }
  // Any other virtual tensor.
  int64_t Virtual(cudnnDataType_t type, const Dims4& dims, const Dims4& strides) {
    g_->Tensor(next_, type, dims, strides, true);
    return next_++;
  }

 private:
  GraphBuilder* g_;
  AttentionShape sh_;
  int64_t next_ = 100;  // virtual uids start above SdpaUid
};

// scores -> scores with every column past its row set to kSdpaNegInf (top-left causal:
// query i sees keys 0..i).
int64_t CausalMask(GraphBuilder& g, SdpaTensors& t, int64_t scores) {
  const int64_t row = t.Scores(CUDNN_DATA_INT32), col = t.Scores(CUDNN_DATA_INT32);
  g.Pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, scores, 0, 0, row, /*axis=*/2);
  g.Pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, scores, 0, 0, col, /*axis=*/3);
  const int64_t keep = t.Scores(CUDNN_DATA_BOOLEAN);
  g.Pointwise(CUDNN_POINTWISE_CMP_GE, CUDNN_DATA_BOOLEAN, row, col, 0, keep);
  const int64_t masked = t.Scores();
  // BINARY_SELECT: y = t ? x : b.
  g.Pointwise(CUDNN_POINTWISE_BINARY_SELECT, kF32, scores, kSdpaNegInf, keep, masked);
  return masked;
}

// scale * Q K^T, the first step of both graphs.
int64_t ScaledScores(GraphBuilder& g, SdpaTensors& t) {
  const int64_t qk = t.Scores();
  g.Matmul(kSdpaQ, kSdpaK, qk);
  const int64_t scaled = t.Scores();
  g.Pointwise(CUDNN_POINTWISE_MUL, kF32, qk, kSdpaScale, 0, scaled);
  return scaled;
}

}  // namespace

void AddSdpaForwardGraph(GraphBuilder* gp, const AttentionShape& sh) {
  GraphBuilder& g = *gp;
  SdpaTensors t(gp, sh);
  t.Bnsd(kSdpaQ, sh.Dqk);
  t.Bnds(kSdpaK, sh.Dqk);  // K^T
  t.Bnsd(kSdpaV, sh.Dv);
  t.Bnsd(kSdpaO, sh.Dv);
  t.Rows(kSdpaStats);
  g.Scalar(kSdpaScale, kF32);
  g.Scalar(kSdpaNegInf, kF32);

  const int64_t s = CausalMask(g, t, ScaledScores(g, t));
  // Softmax with its log-sum-exp kept for backward.
  const int64_t m = t.VirtualRows();
  g.Reduction(CUDNN_REDUCE_TENSOR_MAX, s, m);
  const int64_t centred = t.Scores(), e = t.Scores();
  g.Pointwise(CUDNN_POINTWISE_SUB, kF32, s, m, 0, centred);
  g.Pointwise(CUDNN_POINTWISE_EXP, kF32, centred, 0, 0, e);
  const int64_t z = t.VirtualRows(), log_z = t.VirtualRows();
  g.Reduction(CUDNN_REDUCE_TENSOR_ADD, e, z);
  g.Pointwise(CUDNN_POINTWISE_LOG, kF32, z, 0, 0, log_z);
  g.Pointwise(CUDNN_POINTWISE_ADD, kF32, m, log_z, 0, kSdpaStats);
  // P in BF16: the second matmul's A operand takes the I/O type.
  const int64_t p = t.Scores(kBf16);
  g.Pointwise(CUDNN_POINTWISE_DIV, kF32, e, z, 0, p);
  g.Matmul(p, kSdpaV, kSdpaO);
}

void AddSdpaBackwardGraph(GraphBuilder* gp, const AttentionShape& sh) {
  const int64_t B = sh.B, N = sh.N, S = sh.S, Dqk = sh.Dqk, Dv = sh.Dv;
  GraphBuilder& g = *gp;
  SdpaTensors t(gp, sh);
  t.Bnsd(kSdpaQ, Dqk);
  t.Bnds(kSdpaK, Dqk);  // K^T
  t.Bnds(kSdpaV, Dv);   // V^T
  t.Bnsd(kSdpaO, Dv);
  t.Bnsd(kSdpaDO, Dv);
  t.Rows(kSdpaStats);
  t.Bnsd(kSdpaDQ, Dqk);
  t.Bnsd(kSdpaDK, Dqk);
  t.Bnsd(kSdpaDV, Dv);
  t.Rows(kSdpaRowSum);
  g.Tensor(kSdpaDQAccum, kF32, {B, N, S, Dqk}, {N * S * Dqk, S * Dqk, Dqk, 1}, false);
  g.Scalar(kSdpaScale, kF32);
  g.Scalar(kSdpaNegInf, kF32);
  g.Scalar(kSdpaOne, kF32);

  // rowsum(dO * O) = rowsum(P * dP): the softmax backward's subtrahend.
  const int64_t do_o = t.Virtual(kF32, {B, N, S, Dv}, {N * S * Dv, S * Dv, Dv, 1});
  g.Pointwise(CUDNN_POINTWISE_MUL, kF32, kSdpaDO, kSdpaO, 0, do_o);
  const int64_t row_sum = t.VirtualRows();
  g.Reduction(CUDNN_REDUCE_TENSOR_ADD, do_o, row_sum);
  g.Pointwise(CUDNN_POINTWISE_MUL, kF32, row_sum, kSdpaOne, 0, kSdpaRowSum);

  // P recomputed from Stats: exp(masked scores - log-sum-exp).
  const int64_t masked = CausalMask(g, t, ScaledScores(g, t));
  const int64_t centred = t.Scores(), p = t.Scores();
  g.Pointwise(CUDNN_POINTWISE_SUB, kF32, masked, kSdpaStats, 0, centred);
  g.Pointwise(CUDNN_POINTWISE_EXP, kF32, centred, 0, 0, p);

  // dV = P^T dO.
  const int64_t p_t = t.TransposedScores();
  g.Reshape(p, p_t);
  g.Matmul(p_t, kSdpaDO, kSdpaDV);

  // dS = scale * P * (dO V^T - rowsum).
  const int64_t dp = t.Scores(), dp_centred = t.Scores(), dp_p = t.Scores(), ds = t.Scores();
  g.Matmul(kSdpaDO, kSdpaV, dp);
  g.Pointwise(CUDNN_POINTWISE_SUB, kF32, dp, kSdpaRowSum, 0, dp_centred);
  g.Pointwise(CUDNN_POINTWISE_MUL, kF32, dp_centred, p, 0, dp_p);
  g.Pointwise(CUDNN_POINTWISE_MUL, kF32, dp_p, kSdpaScale, 0, ds);

  // dK = dS^T Q.
  const int64_t ds_t = t.TransposedScores();
  g.Reshape(ds, ds_t);
  g.Matmul(ds_t, kSdpaQ, kSdpaDK);

  // dQ = dS K, accumulated in FP32 across key blocks, then converted.
  const int64_t k = t.Virtual(kBf16, {B, N, S, Dqk}, {S * N * Dqk, Dqk, N * Dqk, 1});
  g.Reshape(kSdpaK, k);
  g.Matmul(ds, k, kSdpaDQAccum);
  g.Pointwise(CUDNN_POINTWISE_IDENTITY, kF32, kSdpaDQAccum, 0, 0, kSdpaDQ);
}

absl::StatusOr<CudnnPlan> BuildSdpaForwardPlan(cudnnHandle_t handle, const AttentionShape& sh) {
  GraphBuilder g;
  AddSdpaForwardGraph(&g, sh);
  return g.Finalize(handle, "SDPA forward graph");
}

absl::StatusOr<CudnnPlan> BuildSdpaBackwardPlan(cudnnHandle_t handle, const AttentionShape& sh) {
  GraphBuilder g;
  AddSdpaBackwardGraph(&g, sh);
  return g.Finalize(handle, "SDPA backward graph");
}

}  // namespace mt::cuda

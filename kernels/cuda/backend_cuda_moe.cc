// kernels/cuda/backend_cuda_moe.cc: CudaBackend's MoE ops (backend_cuda.h): the router
// (router.h), balance loss and router backward (moe_balance.h), the routing plan and the
// permutation / combine (moe_permute.h), and the grouped expert GEMMs (grouped_gemm.h).
#include "kernels/cuda/backend_cuda.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/grouped_gemm.h"
#include "kernels/cuda/moe_balance.h"
#include "kernels/cuda/moe_permute.h"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/cuda/router.h"
#include "kernels/status.h"

namespace mt::cuda {
namespace {

RouterShape RouterShapeOf(const RouteShape& s) {
  RouterShape r;
  r.tokens = s.tokens;
  r.experts = s.experts;
  r.top_k = s.top_k;
  r.n_group = s.n_group;
  r.topk_group = s.topk_group;
  r.norm_topk = s.norm_topk;
  r.scaling = s.scaling;
  r.seq_len = s.seq_len;
  r.valid = s.valid;
  return r;
}

// B = T / S sequences: the balance ops need whole sequences.
int64_t SequencesOf(const RouteShape& s) {
  MT_CHECK(s.seq_len > 0 && s.tokens % s.seq_len == 0, "MoE balance: ", s.tokens,
           " tokens are not whole sequences of length ", s.seq_len);
  return s.tokens / s.seq_len;
}

}  // namespace

void CudaBackend::RouterForward(const float* logits, const float* bias, float* scores,
                                int32_t* topk, float* weight, int64_t* load,
                                const RouteShape& shape) {
  cuda::RouterForward(logits, bias, scores, topk, weight, load, RouterShapeOf(shape), stream());
}

void CudaBackend::BalanceForward(const float* scores, const int32_t* topk, double* f, double* loss,
                                 const RouteShape& shape) {
  BalanceShape b;
  b.sequences = SequencesOf(shape);
  b.seq_len = shape.seq_len;
  b.experts = shape.experts;
  b.top_k = shape.top_k;
  b.valid = shape.valid;
  const size_t ws_bytes = BalanceWorkspaceBytes(b);
  Block ws = Scratch(ws_bytes);
  cuda::BalanceForward(scores, topk, f, loss, b, ws.get(), ws_bytes, stream());
}

void CudaBackend::RouterBackward(const float* scores, const int32_t* topk, const double* dweight,
                                 const double* f, double balance_scale, float* d_logits,
                                 const RouteShape& shape) {
  RouterBackwardShape r;
  r.sequences = SequencesOf(shape);
  r.seq_len = shape.seq_len;
  r.experts = shape.experts;
  r.top_k = shape.top_k;
  r.valid = shape.valid;
  r.norm_topk = shape.norm_topk;
  r.scaling = shape.scaling;
  r.balance_scale = balance_scale;
  cuda::RouterBackward(scores, topk, dweight, f, d_logits, r, stream());
}

void CudaBackend::MoePlanBuild(const int32_t* topk, int64_t T, int64_t K, int64_t E,
                               const MoeRoutingPlan& plan) {
  const size_t ws_bytes = MoePlanWorkspaceBytes(T * K, E);
  void* ws = Grow(&plan_workspace_, ws_bytes);
  MoePlan p;
  p.src_token = plan.src_token;
  p.slot_pos = plan.slot_pos;
  p.counts = static_cast<int32_t*>(Grow(&plan_counts_, static_cast<size_t>(E) * sizeof(int32_t)));
  p.offsets = plan.offsets;
  cuda::MoePlanBuild(topk, T, K, E, p, ws, ws_bytes, stream());
}

void CudaBackend::PermuteRows(const float* x, float* xp, const int32_t* src_token, int64_t P,
                              int64_t H) {
  cuda::PermuteRows(x, xp, src_token, P, H * static_cast<int64_t>(sizeof(float)), stream());
}

void CudaBackend::Combine(const float* ye, const float* weight, const int32_t* slot_pos, float* y,
                          int64_t T, int64_t K, int64_t H) {
  CombineAdd(ye, weight, slot_pos, y, T, K, H, stream());
}

void CudaBackend::CombineBackward(const float* dy, const float* ye, const float* weight,
                                  const int32_t* slot_pos, float* dye, double* dweight, int64_t T,
                                  int64_t K, int64_t H) {
  cuda::CombineBackward(dy, ye, weight, slot_pos, dye, dweight, T, K, H, stream());
}

void CudaBackend::UnpermuteAdd(const float* dxp, const int32_t* slot_pos, float* dx, int64_t T,
                               int64_t K, int64_t H) {
  cuda::UnpermuteAdd(dxp, slot_pos, dx, T, K, H, stream());
}

void CudaBackend::SegmentSumRows(const float* x, const int32_t* offsets, const int32_t* rows,
                                 float* y, int64_t segments, int64_t H) {
  cuda::SegmentSumRows(x, offsets, rows, y, segments, H, stream());
}

void CudaBackend::GatherRows(const void* x, void* y, const int32_t* src, int64_t n,
                             int64_t row_bytes) {
  cuda::PermuteRows(x, y, src, n, row_bytes, stream());
}

void CudaBackend::GroupedLinearForward(const float* x, const float* w, float* y,
                                       const int32_t* offsets, int64_t rows, int64_t E, int64_t K,
                                       int64_t N) {
  GroupedGemmForward(x, w, y, offsets, GroupedShapeOf(rows, E, K, N), stream());
}

void CudaBackend::GroupedDataGradInto(float* dx, int64_t rows, int64_t K, bool accumulate,
                                      absl::FunctionRef<void(float*)> data_grad) {
  if (!accumulate) {
    data_grad(dx);
    return;
  }
  // The grouped kernel stores its tile: accumulate through a zeroed [rows, K] temporary.
  // Rows past offsets[E] stay zero there, so dx keeps them (they are not the experts').
  if (rows == 0) return;
  const size_t bytes = static_cast<size_t>(rows * K) * sizeof(float);
  Block tmp = Scratch(bytes);
  float* t = static_cast<float*>(tmp.get());  // [rows, K]
  CUDA_CHECK(cudaMemsetAsync(t, 0, bytes, stream()));
  data_grad(t);
  cuda::Add(t, dx, rows * K, stream());
}

void CudaBackend::GroupedLinearBackwardInput(const float* dy, const float* w, float* dx,
                                             const int32_t* offsets, int64_t rows, int64_t E,
                                             int64_t K, int64_t N, bool accumulate) {
  const GroupedGemmShape shape = GroupedShapeOf(rows, E, K, N);
  GroupedDataGradInto(dx, rows, K, accumulate, [&](float* out) {
    GroupedGemmDataGrad(dy, w, out, offsets, shape, stream());
  });
}

void CudaBackend::GroupedLinearBackwardWeight(const float* dy, const float* x, float* dw,
                                              const int32_t* offsets, int64_t rows, int64_t E,
                                              int64_t K, int64_t N) {
  GroupedGemmWeightGrad(dy, x, dw, offsets, GroupedShapeOf(rows, E, K, N), stream());
}

}  // namespace mt::cuda

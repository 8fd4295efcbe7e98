// kernels/cuda/backend_cuda_fp8.cc: CudaBackend's FP8 primitives (backend_cuda.h), from
// which kernels/backend.cc composes the recipe's Fprop, Dgrad and Wgrad GEMMs.
//
// The quantisation kernels (fp8_quant.h) give the CPU's bytes. Fp8Gemm runs cuBLASLt's
// block-scaled FP8 GEMM (1x128 activation tiles, 128x128 weight blocks: the recipe's own
// scaling) on sm_90; elsewhere (sm_89, whose cuBLASLt has per-tensor scaling only, and
// Blackwell, whose has MXFP8's instead: gemm_plan_cache.h), or for a problem cuBLASLt
// refuses, grouped_gemm_fp8.cu's forward kernel as one expert: the same block scaling on
// tensor cores, the codes widened exactly to BF16. Either is the same sum of the same exact
// products (E4M3 x E4M3 is exact in FP32 and the scales are powers of two) as the CPU's, in
// another order. Fp8GemmTokenTiled, the Wgrad GEMM with both operands tiled along the
// tokens (DeepGEMM's 1D1D scaling), has no cuBLASLt mode: it runs grouped_gemm_fp8.cu's
// tensor-core weight-gradient kernel as one expert. The experts' three GEMMs run
// grouped_gemm_fp8.cu on the device offsets (one launch each, no host synchronisation), Wgrad
// after re-tiling its operands along each expert's tokens.
#include <cstdio>

#include "kernels/cuda/backend_cuda.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/fp8_quant.h"
#include "kernels/cuda/gemm_cublaslt.h"
#include "kernels/cuda/grouped_gemm.h"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/status.h"

namespace mt::cuda {
namespace {
constexpr bool kRoundScales = true;  // the recipe's power-of-two scales, as the CPU backend
int64_t Tiles(int64_t n) { return (n + 127) / 128; }
const uint8_t* Codes(const Tensor& t) { return static_cast<const uint8_t*>(t.raw()); }
uint8_t* Codes(Tensor& t) { return static_cast<uint8_t*>(t.raw()); }
}  // namespace

void CudaBackend::CopyToHost(const void* src, void* dst, size_t bytes) {
  if (bytes > 0)
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream()));
  CUDA_CHECK(cudaStreamSynchronize(stream()));
}

QuantizedActivation CudaBackend::QuantizeFp8(const float* x, int64_t M, int64_t K) {
  QuantizedActivation q;
  q.rows = M;
  q.cols = K;
  q.data = Uninitialized({M, K}, DType::kF8E4M3);
  q.scales = Uninitialized({Tiles(K), M}, DType::kF32);  // VEC128_32F
  cuda::QuantizeActivation(x, Codes(q.data), q.scales.data<float>(), M, K, kRoundScales,
                           stream());
  return q;
}

void CudaBackend::DequantizeFp8(const QuantizedActivation& q, float* x) {
  cuda::DequantizeActivation(Codes(q.data), q.scales.data<float>(), x, q.rows, q.cols, stream());
}

QuantizedActivation CudaBackend::RetileTransposedFp8(const QuantizedActivation& q) {
  QuantizedActivation t;  // X^T [K, M], tiles along M
  t.rows = q.cols;
  t.cols = q.rows;
  t.data = Uninitialized({t.rows, t.cols}, DType::kF8E4M3);
  t.scales = Uninitialized({Tiles(t.cols), t.rows}, DType::kF32);
  cuda::RetileTransposed(Codes(q.data), q.scales.data<float>(), Codes(t.data),
                         t.scales.data<float>(), q.rows, q.cols, kRoundScales, stream());
  return t;
}

QuantizedWeight CudaBackend::QuantizeWeightFp8(const float* w, int64_t N, int64_t K) {
  QuantizedWeight q;
  q.rows = N;
  q.cols = K;
  q.data = Uninitialized({N, K}, DType::kF8E4M3);
  q.scales = Uninitialized({Tiles(N), WeightScaleLd(K)}, DType::kF32);  // BLK128x128_32F
  cuda::QuantizeWeight(w, Codes(q.data), q.scales.data<float>(), N, K, kRoundScales, stream());
  return q;
}

QuantizedWeight CudaBackend::TransposeWeightFp8(const QuantizedWeight& w) {
  QuantizedWeight t;  // W^T [K, N]
  t.rows = w.cols;
  t.cols = w.rows;
  t.data = Uninitialized({t.rows, t.cols}, DType::kF8E4M3);
  t.scales = Uninitialized({Tiles(t.rows), WeightScaleLd(t.cols)}, DType::kF32);
  cuda::TransposeWeight(Codes(w.data), w.scales.data<float>(), Codes(t.data),
                        t.scales.data<float>(), w.rows, w.cols, stream());
  return t;
}

void CudaBackend::Fp8Gemm(const QuantizedActivation& a, const QuantizedWeight& w, float* y) {
  const int64_t M = a.rows, N = w.rows, K = a.cols;
  MT_CHECK(K == w.cols, "FP8 GEMM inner dimensions differ: ", K, " vs ", w.cols);
  if (M == 0 || N == 0) return;
  if (K == 0) {  // an empty sum: cuBLASLt rejects it, and it is not a fallback
    CUDA_CHECK(cudaMemsetAsync(y, 0, static_cast<size_t>(M * N) * sizeof(float), stream()));
    return;
  }
  if (lt_->has_block_scaling()) {
    // Into a fresh (aligned) block: y may be a row slice of a larger tensor.
    Tensor out = Uninitialized({M, N}, DType::kF32);
    const absl::Status s = lt_->Fp8Linear(Codes(a.data), a.scales.data<float>(), GemmScale::kVec128,
                                          Codes(w.data), w.scales.data<float>(),
                                          GemmScale::kBlock128, out.raw(), GemmDtype::kF32, M, N,
                                          K, stream());
    if (s.ok()) return Copy(out.raw(), y, out.nbytes());
    if (fp8_gemm_fallbacks_++ == 0)
      std::fprintf(stderr,
                   "[moetrain] FP8 GEMM %lldx%lldx%lld: cuBLASLt refused (%s); "
                   "running moetrain's block-scaled tensor-core kernel instead (said once)\n",
                   static_cast<long long>(M), static_cast<long long>(N), static_cast<long long>(K),
                   std::string(s.message()).c_str());
  } else {
    ++fp8_gemm_fallbacks_;
  }
  // The grouped FP8 forward (grouped_gemm_fp8.cu: the recipe's 1x128 x 128x128 scaling on
  // tensor cores) as one expert: a's VEC128 scales and w's BLK128x128 grid are its layouts.
  // So sm_89 trains with the recipe's numerics rather than per-tensor scales.
  Tensor offsets = Uninitialized({2}, DType::kI32);
  const int32_t host[2] = {0, static_cast<int32_t>(M)};
  CopyFromHost(host, offsets.raw(), sizeof(host));
  GroupedFp8GemmForward(Codes(a.data), a.scales.data<float>(), Codes(w.data),
                        w.scales.data<float>(), y, offsets.data<int32_t>(),
                        GroupedShapeOf(M, /*E=*/1, K, N), stream());
}

void CudaBackend::Fp8GemmTokenTiled(const QuantizedActivation& a, const QuantizedActivation& b,
                                    float* y) {
  const int64_t M = a.rows, N = b.rows, K = a.cols;
  MT_CHECK(K == b.cols, "FP8 GEMM inner dimensions differ: ", K, " vs ", b.cols);
  if (M == 0 || N == 0) return;
  CUDA_CHECK(cudaMemsetAsync(y, 0, static_cast<size_t>(M * N) * sizeof(float), stream()));
  if (K == 0) return;
  // One "expert" of the grouped weight gradient whose K rows are the whole reduction: its
  // chunk layout (grouped_gemm.h) is the operands' own, codes [M, K] and [N, K] with row
  // stride K, the VEC128 scales [ceil(K/128), M] and [.., N] its chunk scales; y += into
  // zeros.
  Tensor offsets = Uninitialized({2}, DType::kI32);
  const int32_t host[2] = {0, static_cast<int32_t>(K)};
  CopyFromHost(host, offsets.raw(), sizeof(host));
  GroupedFp8GemmWeightGrad(Codes(a.data), a.scales.data<float>(), Codes(b.data),
                           b.scales.data<float>(), /*ld=*/K, y, offsets.data<int32_t>(),
                           GroupedShapeOf(/*rows=*/K, /*E=*/1, /*K=*/N, /*N=*/M), stream());
}

QuantizedExperts CudaBackend::QuantizeExpertsFp8(const float* w, int64_t E, int64_t N, int64_t K) {
  const int64_t per_expert = WeightScaleCount(N, K);
  CUDA_HOST_CHECK(per_expert == GroupedFp8WeightScalesPerExpert(N, K) &&
                      WeightScaleLd(K) == GroupedFp8WeightScaleLd(K),
                  "grouped_gemm.h and fp8_quant.h disagree on the weight-scale layout");
  QuantizedExperts q;
  q.experts = E;
  q.all.rows = E * N;
  q.all.cols = K;
  q.all.data = Uninitialized({E * N, K}, DType::kF8E4M3);
  q.all.scales = Uninitialized({E * Tiles(N), WeightScaleLd(K)}, DType::kF32);
  float* scales = q.all.scales.data<float>();
  if (N % 128 == 0) {
    // The experts' 128x128 grids tile the stacked [E * N, K] matrix: one launch, same bytes
    // (scale rows of expert e are block rows e * N / 128 onwards).
    cuda::QuantizeWeight(w, Codes(q.all.data), scales, E * N, K, kRoundScales, stream());
    return q;
  }
  // A block of the stacked matrix would straddle two experts: one launch per expert (queued
  // on the stream, no synchronisation).
  for (int64_t e = 0; e < E; ++e) {
    cuda::QuantizeWeight(w + e * N * K, Codes(q.all.data) + e * N * K, scales + e * per_expert, N,
                         K, kRoundScales, stream());
  }
  return q;
}

void CudaBackend::GroupedFp8Forward(const QuantizedActivation& x, const QuantizedExperts& w,
                                    float* y, const int32_t* offsets) {
  const int64_t rows = x.rows, K = x.cols;  // x [rows, K], scales [ceil(K/128), rows]
  if (rows == 0) return;
  GroupedFp8GemmForward(Codes(x.data), x.scales.data<float>(), Codes(w.all.data),
                        w.all.scales.data<float>(), y, offsets,
                        GroupedShapeOf(rows, w.experts, K, w.rows()), stream());
}

void CudaBackend::GroupedFp8BackwardInput(const float* dy, const QuantizedExperts& w, float* dx,
                                          const int32_t* offsets, int64_t rows, bool accumulate) {
  if (rows == 0) return;
  const int64_t N = w.rows(), K = w.all.cols;
  // 1x128 tiles are per row, so quantising all rows at once gives each expert's rows the
  // bytes their own QuantizeFp8 would (rows past offsets[E] are quantised and never read).
  const QuantizedActivation qdy = QuantizeFp8(dy, rows, N);  // [rows, N]
  GroupedDataGradInto(dx, rows, K, accumulate, [&](float* out) {
    GroupedFp8GemmDataGrad(Codes(qdy.data), qdy.scales.data<float>(), Codes(w.all.data),
                           w.all.scales.data<float>(), out, offsets,
                           GroupedShapeOf(rows, w.experts, K, N), stream());
  });
}

void CudaBackend::GroupedFp8BackwardWeight(const float* dy, const QuantizedActivation* xq,
                                           const float* x, float* dw, const int32_t* offsets,
                                           int64_t rows, int64_t E, int64_t K, int64_t N) {
  if (rows == 0) return;
  // Both operands re-tiled 128x1 along each expert's tokens into the chunk layout
  // (grouped_gemm.h): the same runs the default's per-expert Transpose + QuantizeFp8 (or
  // RetileTransposedFp8 of the cached operand) quantises, without reading the offsets here.
  const GroupedGemmShape shape = GroupedShapeOf(rows, E, K, N);
  const int64_t chunks = GroupedFp8Chunks(rows, E), ld = chunks * kGroupedFp8Chunk;
  Tensor dy_t = Uninitialized({N, ld}, DType::kF8E4M3);  // dY^T chunks
  Tensor dy_scales = Uninitialized({chunks, N}, DType::kF32);
  Tensor x_t = Uninitialized({K, ld}, DType::kF8E4M3);  // X^T chunks
  Tensor x_scales = Uninitialized({chunks, K}, DType::kF32);
  GroupedFp8QuantizeChunks(dy, nullptr, nullptr, Codes(dy_t), dy_scales.data<float>(), ld, offsets,
                           shape, N, kRoundScales, stream());
  if (xq != nullptr) {
    GroupedFp8QuantizeChunks(nullptr, Codes(xq->data), xq->scales.data<float>(), Codes(x_t),
                             x_scales.data<float>(), ld, offsets, shape, K, kRoundScales, stream());
  } else {
    GroupedFp8QuantizeChunks(x, nullptr, nullptr, Codes(x_t), x_scales.data<float>(), ld, offsets,
                             shape, K, kRoundScales, stream());
  }
  GroupedFp8GemmWeightGrad(Codes(dy_t), dy_scales.data<float>(), Codes(x_t), x_scales.data<float>(),
                           ld, dw, offsets, shape, stream());
}

void CudaBackend::Transpose(const float* x, float* y, int64_t rows, int64_t cols) {
  cuda::Transpose(x, y, rows, cols, stream());
}

void CudaBackend::RoundE5M6(const float* x, float* y, int64_t M, int64_t K) {
  cuda::RoundE5M6Tiles(x, y, M, K, stream());
}

QuantizedActivation CudaBackend::RmsNormQuantizeFp8(const float* x, const float* w, float* rstd,
                                                    int64_t rows, int64_t C, double eps) {
  QuantizedActivation q;
  q.rows = rows;
  q.cols = C;
  q.data = Uninitialized({rows, C}, DType::kF8E4M3);
  q.scales = Uninitialized({Tiles(C), rows}, DType::kF32);  // VEC128_32F
  cuda::RmsNormQuantize(x, w, Codes(q.data), q.scales.data<float>(), rstd, rows, C, eps,
                        kRoundScales, stream());
  return q;
}

}  // namespace mt::cuda

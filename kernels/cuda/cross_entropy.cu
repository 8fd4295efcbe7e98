// kernels/cuda/cross_entropy.cu: one kBlock block per row of logits (cross_entropy.h).
//
// Three passes over the row (V up to ~130K floats, read from L2 after the first): the max,
// the sum of exp(x - max) in double (as the CPU sums), then the gradient. The loss is
// max + log(sum) - x[target] in double, as on the CPU.
#include <math_constants.h>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cross_entropy.h"
#include "kernels/cuda/cuda_check.h"

namespace mt::cuda {
namespace {

static_assert(kSumPartials % kBlock == 0, "the final pass folds partials kBlock at a time");

__device__ float BlockMaxSigned(float v) {
  __shared__ float warp_max[kWarps];
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(~0u, v, offset));
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = v;
  __syncthreads();
  float m = warp_max[0];
  for (int w = 1; w < kWarps; ++w) m = fmaxf(m, warp_max[w]);
  __syncthreads();
  return m;
}

__global__ void CrossEntropyKernel(float* logits, const int32_t* targets, int64_t V,
                                   float grad_scale, float* losses, uint16_t* dlogits_bf16) {
  const int64_t r = blockIdx.x;
  float* x = logits + r * V;
  uint16_t* xb = dlogits_bf16 ? dlogits_bf16 + r * V : nullptr;
  const int32_t t = targets[r];
  if (t < 0) {
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
      x[j] = 0.0f;
      if (xb) xb[j] = 0;
    }
    if (threadIdx.x == 0) losses[r] = 0.0f;
    return;
  }
  float mx = -CUDART_INF_F;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, x[j]);
  mx = BlockMaxSigned(mx);
  const double target_logit = x[t];  // read before any thread overwrites it
  __syncthreads();
  double sum = 0;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) sum += double(expf(x[j] - mx));
  sum = BlockSum(sum);
  const double gs = grad_scale;
  const float scale = float(gs / sum);
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
    float d = expf(x[j] - mx) * scale;
    if (j == t) d = float(double(d) - gs);
    x[j] = d;
    if (xb) xb[j] = FloatToBf16(d);
  }
  if (threadIdx.x == 0) losses[r] = float(double(mx) + log(sum) - target_logit);
}

__global__ void SumPartialKernel(const float* x, int64_t n, double* partials) {
  double s = 0;
  MT_GRID_STRIDE(i, n) { s += x[i]; }
  s = BlockSum(s);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

__global__ void FoldKernel(const double* partials, double* out) {
  double s = 0;
  for (int i = threadIdx.x; i < kSumPartials; i += blockDim.x) s += partials[i];
  s = BlockSum(s);
  if (threadIdx.x == 0) *out += s;
}

}  // namespace

void CrossEntropyForwardBackward(float* logits, const int32_t* targets, int64_t rows, int64_t V,
                                 float grad_scale, float* losses, uint16_t* dlogits_bf16,
                                 cudaStream_t stream) {
  CUDA_HOST_CHECK(rows >= 0 && rows <= INT32_MAX && V > 0, "cross-entropy: bad shape");
  if (rows == 0) return;
  CrossEntropyKernel<<<unsigned(rows), kBlock, 0, stream>>>(logits, targets, V, grad_scale, losses,
                                                            dlogits_bf16);
  CUDA_CHECK_LAUNCH();
}

void SumAccumulate(const float* x, int64_t n, double* partials, double* out, cudaStream_t stream) {
  CUDA_HOST_CHECK(n >= 0, "negative length");
  SumPartialKernel<<<kSumPartials, kBlock, 0, stream>>>(x, n, partials);
  CUDA_CHECK_LAUNCH();
  FoldKernel<<<1, kBlock, 0, stream>>>(partials, out);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mt::cuda

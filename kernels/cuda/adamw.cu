// kernels/cuda/adamw.cu: the fused AdamW update, sum of squares and scaling (adamw.h).
#include "kernels/cuda/adamw.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_check.h"

namespace mt::cuda {
namespace {

static_assert(kNormPartials % kBlock == 0, "the final pass folds partials kBlock at a time");

// Moment storage: fp32 or bf16 bits, read and written as double like the CPU's lambdas.
__device__ __forceinline__ double LoadMoment(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ double LoadMoment(const uint16_t* p, int64_t i) {
  return Bf16ToFloat(p[i]);
}
__device__ __forceinline__ void StoreMoment(float* p, int64_t i, double x) { p[i] = float(x); }
__device__ __forceinline__ void StoreMoment(uint16_t* p, int64_t i, double x) {
  p[i] = FloatToBf16(float(x));
}

template <typename M>
__global__ void AdamWKernel(float* w, const float* g, M* m, M* v, int64_t n, bool decay,
                            AdamWCoeffs c) {
  MT_GRID_STRIDE(i, n) {
    const double gi = g[i];
    const double mi = c.beta1 * LoadMoment(m, i) + (1 - c.beta1) * gi;
    const double vi = c.beta2 * LoadMoment(v, i) + (1 - c.beta2) * gi * gi;
    StoreMoment(m, i, mi);
    StoreMoment(v, i, vi);
    double p = w[i];
    if (decay) p *= 1 - c.lr * c.weight_decay;
    p -= c.lr * (mi / c.bias_correction1) / (sqrt(vi / c.bias_correction2) + c.eps);
    w[i] = float(p);
  }
}

// Pass 1: kNormPartials blocks, each a grid-stride sum in double. Pass 2: one block folds
// the partials in a fixed order. The grid never depends on the device, so neither does
// the result.
__global__ void SumSquaresPartialKernel(const float* g, int64_t n, double* partials) {
  double s = 0;
  MT_GRID_STRIDE(i, n) { s += double(g[i]) * double(g[i]); }
  s = BlockSum(s);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

__global__ void FoldPartialsKernel(const double* partials, double* out) {
  double s = 0;
  for (int i = threadIdx.x; i < kNormPartials; i += blockDim.x) s += partials[i];
  s = BlockSum(s);
  if (threadIdx.x == 0) *out += s;
}

__global__ void ScaleKernel(float* g, int64_t n, float scale) {
  MT_GRID_STRIDE(i, n) { g[i] *= scale; }
}

}  // namespace

void AdamWStep(float* w, const float* g, float* m, float* v, int64_t n, bool decay,
               const AdamWCoeffs& c, cudaStream_t stream) {
  if (n == 0) return;
  AdamWKernel<<<GridFor(n), kBlock, 0, stream>>>(w, g, m, v, n, decay, c);
  CUDA_CHECK_LAUNCH();
}

void AdamWStepBf16Moments(float* w, const float* g, uint16_t* m, uint16_t* v, int64_t n, bool decay,
                          const AdamWCoeffs& c, cudaStream_t stream) {
  if (n == 0) return;
  AdamWKernel<<<GridFor(n), kBlock, 0, stream>>>(w, g, m, v, n, decay, c);
  CUDA_CHECK_LAUNCH();
}

void SumSquaresAccumulate(const float* g, int64_t n, double* partials, double* sum_sq,
                          cudaStream_t stream) {
  CUDA_HOST_CHECK(n >= 0, "negative length");
  SumSquaresPartialKernel<<<kNormPartials, kBlock, 0, stream>>>(g, n, partials);
  CUDA_CHECK_LAUNCH();
  FoldPartialsKernel<<<1, kBlock, 0, stream>>>(partials, sum_sq);
  CUDA_CHECK_LAUNCH();
}

void Scale(float* g, int64_t n, float scale, cudaStream_t stream) {
  if (n == 0) return;
  ScaleKernel<<<GridFor(n), kBlock, 0, stream>>>(g, n, scale);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mt::cuda

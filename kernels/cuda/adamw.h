// kernels/cuda/adamw.h: AdamW fused over flat buffers, and the global gradient norm.
//
// The update is trainer/optimizer.cc's, element for element and in double:
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2   (stored as fp32 or bf16)
//   p = w (* (1 - lr wd) when the range decays);  p -= lr (m / bc1) / (sqrt(v / bc2) + eps)
// with bc1 = 1 - b1^step, bc2 = 1 - b2^step computed on the host as the CPU does. A flat
// buffer lays parameters out decayed ones first, so one call per decay class covers it.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace mt::cuda {

struct AdamWCoeffs {
  double lr = 0, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0;
  double bias_correction1 = 1, bias_correction2 = 1;  // 1 - beta^step
};

// The coefficients of optimizer step `step` (1-based), as trainer/optimizer.cc makes them.
AdamWCoeffs MakeAdamWCoeffs(double lr, double beta1, double beta2, double eps, double weight_decay,
                            int64_t step);

// w, g, m, v [n]; fp32 moments.
void AdamWStep(float* w, const float* g, float* m, float* v, int64_t n, bool decay,
               const AdamWCoeffs& c, cudaStream_t stream);
// bf16 moments (bit patterns), DeepSeek-V3's choice.
void AdamWStepBf16Moments(float* w, const float* g, uint16_t* m, uint16_t* v, int64_t n, bool decay,
                          const AdamWCoeffs& c, cudaStream_t stream);

// *sum_sq (device double) += sum of g[i]^2 over g [n] in double, in a fixed order; call once
// per gradient buffer, then norm = sqrt(*sum_sq). `partials` holds kNormPartials doubles.
constexpr int kNormPartials = 1024;
void SumSquaresAccumulate(const float* g, int64_t n, double* partials, double* sum_sq,
                          cudaStream_t stream);
// g [n] *= scale (gradient clipping).
void Scale(float* g, int64_t n, float scale, cudaStream_t stream);

namespace ref {
// Host arrays: the CPU reference of AdamWStep / AdamWStepBf16Moments.
void AdamWStep(float* w, const float* g, float* m, float* v, int64_t n, bool decay,
               const AdamWCoeffs& c);
void AdamWStepBf16Moments(float* w, const float* g, uint16_t* m, uint16_t* v, int64_t n, bool decay,
                          const AdamWCoeffs& c);
}  // namespace ref

}  // namespace mt::cuda

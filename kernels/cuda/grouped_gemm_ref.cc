// kernels/cuda/grouped_gemm_ref.cc: CPU references of grouped_gemm.h: one plain loop nest per
// expert over its rows [offsets[e], offsets[e + 1]), accumulated in double so the FP32
// kernel is measured against something more accurate than itself.
#include "kernels/cuda/grouped_gemm.h"

namespace mt::cuda::ref {

void GroupedGemmForward(const float* x, const float* w, float* y, const int32_t* offsets,
                        const GroupedGemmShape& shape) {
  const int64_t N = shape.n, K = shape.k;
  for (int64_t e = 0; e < shape.experts; ++e) {
    const float* w_e = w + e * N * K;  // [N, K]
    for (int64_t r = offsets[e]; r < offsets[e + 1]; ++r) {
      for (int64_t n = 0; n < N; ++n) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) s += double(x[r * K + k]) * w_e[n * K + k];
        y[r * N + n] = float(s);
      }
    }
  }
}

void GroupedGemmDataGrad(const float* dy, const float* w, float* dx, const int32_t* offsets,
                         const GroupedGemmShape& shape) {
  const int64_t N = shape.n, K = shape.k;
  for (int64_t e = 0; e < shape.experts; ++e) {
    const float* w_e = w + e * N * K;  // [N, K]
    for (int64_t r = offsets[e]; r < offsets[e + 1]; ++r) {
      for (int64_t k = 0; k < K; ++k) {
        double s = 0;
        for (int64_t n = 0; n < N; ++n) s += double(dy[r * N + n]) * w_e[n * K + k];
        dx[r * K + k] = float(s);
      }
    }
  }
}

void GroupedGemmWeightGrad(const float* dy, const float* x, float* dw, const int32_t* offsets,
                           const GroupedGemmShape& shape) {
  const int64_t N = shape.n, K = shape.k;
  for (int64_t e = 0; e < shape.experts; ++e) {
    float* dw_e = dw + e * N * K;                // [N, K]
    if (offsets[e + 1] <= offsets[e]) continue;  // the kernel leaves an empty expert untouched
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t k = 0; k < K; ++k) {
        double s = 0;
        for (int64_t r = offsets[e]; r < offsets[e + 1]; ++r)
          s += double(dy[r * N + n]) * x[r * K + k];
        dw_e[n * K + k] = float(double(dw_e[n * K + k]) + s);
      }
    }
  }
}

}  // namespace mt::cuda::ref

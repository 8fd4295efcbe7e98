// kernels/cuda/head_loss.cc: the chunk loop of head_loss.h.
#include "kernels/cuda/head_loss.h"

#include <algorithm>

#include "kernels/cuda/cross_entropy.h"
#include "kernels/status.h"

namespace mt::cuda {

absl::Status HeadLoss(CublasLtGemm& gemm, const uint16_t* h, const uint16_t* w,
                      const int32_t* labels, int64_t T, int64_t H, int64_t V, int64_t chunk,
                      float grad_scale, const HeadLossBuffers& buf, double* loss_sum, float* dh,
                      float* dw, cudaStream_t stream) {
  if (chunk <= 0) return absl::InvalidArgumentError("head loss: chunk must be positive");
  for (int64_t r0 = 0; r0 < T; r0 += chunk) {
    const int64_t rows = std::min(chunk, T - r0);
    const uint16_t* hr = h + r0 * H;  // [rows, H]
    // logits [rows, V] = hr [rows, H] w [V, H]^T
    RETURN_IF_ERROR(gemm.Bf16(false, true, rows, V, H, hr, H, w, H, buf.logits, GemmDtype::kF32, V,
                              1.0f, 0.0f, stream));
    CrossEntropyForwardBackward(buf.logits, labels + r0, rows, V, grad_scale, buf.losses + r0,
                                buf.dlogits, stream);
    if (dh == nullptr) continue;
    // dh [rows, H] = dlogits [rows, V] w [V, H]
    RETURN_IF_ERROR(gemm.Bf16(false, false, rows, H, V, buf.dlogits, V, w, H, dh + r0 * H,
                              GemmDtype::kF32, H, 1.0f, 0.0f, stream));
    // dw [V, H] += dlogits^T [V, rows] hr [rows, H]
    RETURN_IF_ERROR(gemm.Bf16(true, false, V, H, rows, buf.dlogits, V, hr, H, dw, GemmDtype::kF32,
                              H, 1.0f, 1.0f, stream));
  }
  SumAccumulate(buf.losses, T, buf.partials, loss_sum, stream);
  return absl::OkStatus();
}

}  // namespace mt::cuda

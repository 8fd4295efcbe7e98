// kernels/cuda/head_loss.h: cross-entropy through the output head in row chunks, so no
// [T, V] fp32 logits tensor is ever held (trainer/model.cc HeadLoss on the GPU).
//
// Per chunk of `chunk` rows: logits [rows, V] fp32 = h [rows, H] W [V, H]^T (BF16 GEMM),
// cross-entropy in place (dlogits, also as BF16), then dh [rows, H] = dlogits W and
// dW [V, H] += dlogits^T h (BF16 GEMMs, FP32 out). Only one chunk's logits exist at a time.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/gemm_cublaslt.h"

namespace mt::cuda {

struct HeadLossBuffers {
  float* logits = nullptr;      // [chunk, V] scratch
  uint16_t* dlogits = nullptr;  // [chunk, V] scratch (bf16)
  float* losses = nullptr;      // [T] per-row losses
  double* partials = nullptr;   // [kSumPartials] scratch
};

// h [T, H] bf16, w [V, H] bf16, labels [T] (< 0 = left out); *loss_sum (device double) +=
// the summed loss. With dh != nullptr: dh [T, H] fp32 is overwritten and dw [V, H] fp32
// accumulates, both for d(grad_scale * summed loss).
absl::Status HeadLoss(CublasLtGemm& gemm, const uint16_t* h, const uint16_t* w,
                      const int32_t* labels, int64_t T, int64_t H, int64_t V, int64_t chunk,
                      float grad_scale, const HeadLossBuffers& buf, double* loss_sum, float* dh,
                      float* dw, cudaStream_t stream);

}  // namespace mt::cuda

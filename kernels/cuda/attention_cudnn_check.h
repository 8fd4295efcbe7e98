// kernels/cuda/attention_cudnn_check.h: the first-use self-check of cuDNN SDPA for one
// shape. The fused graphs cannot be run before they ship, so attention.h trusts a shape's
// plans only after they reproduce the unfused path on the device itself: forward and
// backward on B = 1, S = min(S, 128) with the shape's N, Dqk, Dv and scale, from fixed
// pseudo-random BF16 inputs, against the unfused FP32 path on the same (BF16-exact) values.
#pragma once

#include <cublas_v2.h>

#include <string>

#include "absl/status/statusor.h"
#include "kernels/cuda/attention_cudnn.h"
#include "kernels/cuda/attention_unfused.h"

namespace mt::cuda {

// Largest |cuDNN - reference| allowed, as a fraction of the largest |reference| of each
// output (O, dQ, dK, dV). BF16 keeps 8 significant bits (0.4%) and P and dS are rounded to
// it before their matmuls, so honest results sit near 1%; a wrong mask, layout or scale
// moves whole rows and lands far above.
constexpr double kCudnnSdpaCheckTolerance = 0.05;

// The problem the self-check of `sh` runs.
inline AttentionShape CudnnSdpaCheckShape(const AttentionShape& sh) {
  AttentionShape small = sh;
  small.B = 1;
  small.S = sh.S < 128 ? sh.S : 128;
  return small;
}

// Prepares the check shape's plans on `sdpa`, runs both paths on a private stream and
// compares. OK: a one-line summary for the log ("self-check at S=128: max err O 0.004
// dQ ..."). Error: why the shape must not use cuDNN.
absl::StatusOr<std::string> CudnnSdpaSelfCheck(CudnnSdpa& sdpa, cublasHandle_t cublas,
                                               const AttentionShape& sh);

}  // namespace mt::cuda

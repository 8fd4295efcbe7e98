// kernels/cuda/attention_cudnn_check.h: the first-use self-check of cuDNN SDPA for one
// shape. The fused graphs cannot be run before they ship, so attention.h trusts a shape's
// plans only after they reproduce the unfused path on the device itself: forward and
// backward from fixed pseudo-random BF16 inputs, against the unfused FP32 path on the same
// (BF16-exact) values, with the shape's Dqk, Dv and scale on B = 1 and
//   S = min(S, 128) with all N heads (every head's layout), and, when S > 128,
//   the full S with min(N, 4) heads (the long-sequence tiling, at a few heads' cost: the
//   FP32 reference's P is N * S^2 floats);
// and then the shape itself once on zeros, compared with nothing, so that the plans training
// runs have run (a plan cuDNN builds but cannot execute is refused here, not mid-run).
#pragma once

#include <cublas_v2.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cuda/attention_cudnn.h"
#include "kernels/cuda/attention_unfused.h"

namespace mt::cuda {

// Largest |cuDNN - reference| allowed, as a fraction of the largest |reference| of each
// output (O, dQ, dK, dV). BF16 keeps 8 significant bits (0.4%) and P and dS are rounded to
// it before their matmuls, so honest results sit near 1%; a wrong mask, layout or scale
// moves whole rows and lands far above.
constexpr double kCudnnSdpaCheckTolerance = 0.05;

// The problems the self-check of `sh` runs (above).
inline std::vector<AttentionShape> CudnnSdpaCheckShapes(const AttentionShape& sh) {
  AttentionShape all_heads = sh;
  all_heads.B = 1;
  all_heads.S = sh.S < 128 ? sh.S : 128;
  std::vector<AttentionShape> shapes = {all_heads};
  if (sh.S > 128) {
    AttentionShape long_seq = sh;
    long_seq.B = 1;
    long_seq.N = sh.N < 4 ? sh.N : 4;
    shapes.push_back(long_seq);
  }
  return shapes;
}

// Prepares each check shape's plans on `sdpa`, runs both paths on a private stream and
// compares. OK: a one-line summary for the log ("self-check B=1 S=128 N=4: max err O
// 0.004 dQ ..."). Error: why the shape must not use cuDNN.
absl::StatusOr<std::string> CudnnSdpaSelfCheck(CudnnSdpa& sdpa, cublasHandle_t cublas,
                                               const AttentionShape& sh);

}  // namespace mt::cuda

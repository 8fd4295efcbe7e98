// kernels/cuda/attention_cudnn.h: cuDNN's fused scaled-dot-product attention (the cuDNN 9
// backend API's CUDNN_BACKEND_OPERATION_SDPA_FWD/BWD_DESCRIPTOR), the fast path of
// attention.h: what it accepts, as a host-only check on the device's capabilities.
//
// STATUS: the backend-API graph (tensor descriptors for Q/K/V/O/Stats in MLA's
// [B, S, N, D] strides, the SDPA forward and backward operation descriptors, the
// operation graph, engine heuristics, execution plans and variant packs) is NOT built
// yet. CudnnSdpaSupports therefore ends in Unimplemented for every shape, with that
// reason, and attention.h takes the unfused cuBLAS path (attention_unfused.h).
// What the next step must settle: in cudnn_graph.h 9.19 the SDPA_FWD operation has no
// causal attribute (Q/K/V/O/Stats/Scale, a block mask, page tables, sequence lengths) and
// SDPA_BWD has no mask attribute at all, so causal training may need the pattern graph the
// cudnn-frontend builds (matmul, pointwise, reduction and gen-index operations) instead of
// the single SDPA operations; that is to be decided on a GPU, not guessed here. The checks
// before that final refusal are the real constraints of cuDNN's SDPA support matrix
// (cuDNN docs, "Attention", support matrix for backend 9.18), so the reason logged for a
// shape cuDNN itself would refuse (FP32, Ampere with Dqk = 192, ...) is already the
// precise one.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "kernels/cuda/attention_unfused.h"

namespace mt::cuda {

// What the fused path depends on, gathered once per process (fake ones in tests).
struct CudnnSdpaCaps {
  bool built_with_cudnn = false;  // cudnn.h was found when this was compiled
  int cudnn_version = 0;          // 10000 * major + 100 * minor + patch (CUDNN_VERSION)
  int sm = 0;                     // 10 * major + minor of the device
};

// The capabilities of this build on a device of compute capability `sm`. The cuDNN
// version is the compiled headers' (CUDNN_VERSION): moetrain does not link libcudnn until
// the graph above exists, so there is no runtime cudnnGetVersion() to ask yet.
CudnnSdpaCaps CudnnSdpaCapsOfBuild(int sm);

// The oldest cuDNN whose backend headers declare the SDPA forward/backward operation
// descriptors that this path is written against (the headers moetrain is built with).
constexpr int kCudnnSdpaMinVersion = 91900;  // 9.19.0

// Whether moetrain's cuDNN backend SDPA graph exists. False: see STATUS above.
constexpr bool kCudnnSdpaGraphImplemented = false;

// OK when the fused forward and backward take causal self-attention of this shape and
// dtype; otherwise a Status whose message is the one-line reason attention.h logs
// (FailedPrecondition: the build or device lacks something; InvalidArgument: cuDNN's
// support matrix excludes the shape or dtype; Unimplemented: moetrain's side is missing).
absl::Status CudnnSdpaSupports(const AttentionShape& sh, AttentionDtype dtype,
                               const CudnnSdpaCaps& caps);

}  // namespace mt::cuda

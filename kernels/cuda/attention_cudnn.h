// kernels/cuda/attention_cudnn.h: cuDNN's fused scaled-dot-product attention, the fast path
// of attention.h for causal BF16 attention with MLA's head dims (Dqk 192, Dv 128): what it
// accepts (a host-only check on the device's capabilities) and CudnnSdpa, which builds,
// caches per shape and runs the backend-API plans of attention_cudnn_graph.h.
//
// STATUS: built, host-compiled and linked, but UNVERIFIED ON A GPU. The graphs are the
// matmul / pointwise / reduction / gen-index pattern that cudnn-frontend lowers causal SDPA
// to (cuDNN 9.19's single SDPA_FWD/BWD operations have no causal mask), so the runtime
// fusion engines decide on the device whether they take them. Nothing here is trusted
// until it has run: attention.h builds both plans at the first use of each shape and
// compares the fused path with the unfused one on a small problem of the same heads and
// dims (attention_cudnn_check.h); any refusal or mismatch is logged and that shape takes
// the unfused cuBLAS path (attention_unfused.h). libcudnn itself is loaded at run time
// (attention_cudnn_backend.h LoadCudnn); without it every shape logs why and runs unfused.
#pragma once

#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/attention_cudnn_graph.h"
#include "kernels/cuda/attention_unfused.h"

namespace mt::cuda {

// What the fused path depends on, gathered once per process (fake ones in tests).
struct CudnnSdpaCaps {
  bool built_with_cudnn = false;  // cudnn.h was found when this was built
  int cudnn_version = 0;          // 10000 * major + 100 * minor + patch, of the loaded library
  int sm = 0;                     // 10 * major + minor of the device
  std::string load_error;         // why libcudnn could not be loaded (empty when it was)
};

// The capabilities of this process on a device of compute capability `sm`: the cuDNN
// version is cudnnGetVersion() of the library actually loaded (attention_cudnn_backend.h
// LoadCudnn: whatever the machine's library path finds), not the headers'.
CudnnSdpaCaps CudnnSdpaCapsOfRuntime(int sm);

// The oldest cuDNN this path runs on (moetrain is built with 9.19's headers; the backend
// API's descriptors and attributes used here are 9.0's). By cudnn-frontend's history of
// the same pattern graphs: Dqk 192 with Dv 128 is there from 9.11 (9.10.0 and 9.10.1 have
// a forward bug), and up to 9.15 the backward needs a padding mask when S % 128 != 0, which
// this graph does not add; so 9.16. A GPU image's PyTorch may pin a cuDNN older than the
// newest, and the first-use self-check (attention_cudnn_check.h) still guards every shape.
constexpr int kCudnnSdpaMinVersion = 91600;  // 9.16.0

// OK when cuDNN's support matrix and moetrain's graph cover causal self-attention of this
// shape and dtype; otherwise a Status whose message is the one-line reason attention.h logs
// (FailedPrecondition: the build or device lacks something; InvalidArgument: the support
// matrix excludes the shape or dtype). OK is necessary, not sufficient: the plans must
// still build and pass the self-check on the device.
absl::Status CudnnSdpaSupports(const AttentionShape& sh, AttentionDtype dtype,
                               const CudnnSdpaCaps& caps);

// One cuDNN handle and the forward/backward plans of each shape it has prepared. BF16
// only (uint16_t holds the bits). Not thread-safe: one per rank, like attention.h's.
class CudnnSdpa {
 public:
  static absl::StatusOr<std::unique_ptr<CudnnSdpa>> Create();
  ~CudnnSdpa();
  CudnnSdpa(const CudnnSdpa&) = delete;
  CudnnSdpa& operator=(const CudnnSdpa&) = delete;

  // Builds (once per B, S, N, Dqk, Dv; the scale is passed at execution) both plans.
  absl::Status Prepare(const AttentionShape& sh);
  // Device scratch of one Forward or Backward call of a prepared shape (cuDNN's workspace
  // plus backward's FP32 row sums and dQ accumulator).
  size_t WorkspaceBytes(const AttentionShape& sh) const;

  // q, k [B, S, N, Dqk], v [B, S, N, Dv] -> out [B, S, N, Dv], stats [B, N, S] FP32.
  absl::Status Forward(const AttentionShape& sh, const uint16_t* q, const uint16_t* k,
                       const uint16_t* v, uint16_t* out, float* stats, void* workspace,
                       size_t workspace_bytes, cudaStream_t stream);
  // dout, out [B, S, N, Dv], forward's stats -> dq, dk [B, S, N, Dqk], dv [B, S, N, Dv].
  absl::Status Backward(const AttentionShape& sh, const uint16_t* dout, const uint16_t* q,
                        const uint16_t* k, const uint16_t* v, const uint16_t* out,
                        const float* stats, uint16_t* dq, uint16_t* dk, uint16_t* dv,
                        void* workspace, size_t workspace_bytes, cudaStream_t stream);

 private:
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>;
  struct Plans {
    CudnnPlan forward, backward;
  };
  explicit CudnnSdpa(cudnnHandle_t handle) : handle_(handle) {}
  static Key KeyOf(const AttentionShape& sh) { return {sh.B, sh.S, sh.N, sh.Dqk, sh.Dv}; }
  absl::StatusOr<const Plans*> Find(const AttentionShape& sh, size_t workspace_bytes) const;

  cudnnHandle_t handle_ = nullptr;
  std::map<Key, Plans> plans_;
};

}  // namespace mt::cuda

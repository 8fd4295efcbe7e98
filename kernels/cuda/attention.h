// kernels/cuda/attention.h: MLA's causal attention core on the GPU, choosing per shape
// between cuDNN's fused SDPA (attention_cudnn.h) and the unfused cuBLAS path
// (attention_unfused.h), and saying which once per shape:
//   attention: cuDNN SDPA [B=2 S=128 N=4 Dqk=192 Dv=128 bf16] self-check B=1 S=128 N=4: ...
//   attention: unfused cuBLAS (cuDNN: <reason>) [B=2 S=128 N=4 Dqk=192 Dv=128 fp32]
//
// A shape takes cuDNN only if CudnnSdpaCaps and the support matrix allow it AND, at its
// first use, both plans build and the self-check (attention_cudnn_check.h) matches the
// unfused path on the device; otherwise the reason is logged and the shape stays unfused.
// The capability part is a pure function and the rest is behind a verifier callback, so
// the choice is tested on the CPU with made-up capabilities and verifiers
// (tests/gpu/attention_choice_test.cc).
//
// Layouts as kernels/ops.h: q, k [B, S, N, Dqk], v, out, dout [B, S, N, Dv]. What forward
// saves for backward depends on the path (the unfused path: P [B, N, S, S] in the element
// type; cuDNN: the softmax Stats [B, N, S] FP32), so callers size it with SavedBytes and
// treat it as opaque.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>

#include "absl/status/statusor.h"
#include "kernels/cuda/attention_cudnn.h"
#include "kernels/cuda/attention_unfused.h"

namespace mt::cuda {

enum class AttentionPath { kCudnnSdpa, kUnfusedCublas };

struct AttentionChoice {
  AttentionPath path = AttentionPath::kUnfusedCublas;
  std::string cudnn_refusal;  // why cuDNN does not take it (empty when it does)
  std::string note;           // cuDNN: the self-check's summary, logged after the shape
};

// cuDNN when CudnnSdpaSupports accepts, else unfused with cuDNN's reason (the capability
// part of the choice only; AttentionChooser adds the verification).
AttentionChoice ChooseAttentionPath(const AttentionShape& sh, AttentionDtype dtype,
                                    const CudnnSdpaCaps& caps);

// Builds and checks the fused path for a shape the capabilities accept: a note for the
// log, or the reason to take the unfused path instead.
using CudnnVerifier =
    std::function<absl::StatusOr<std::string>(const AttentionShape&, AttentionDtype)>;

// The log line of a choice (the examples at the top of this file).
std::string AttentionChoiceLine(const AttentionShape& sh, AttentionDtype dtype,
                                const AttentionChoice& choice);

using LogSink = std::function<void(const std::string&)>;
// "[moetrain] <line>" on stderr.
void StderrLogSink(const std::string& line);

// Choices cached per (B, S, N, Dqk, Dv, dtype), each logged the first time it is made.
// `verify` runs once for each shape the capabilities give to cuDNN; without one (tests of
// the capability logic only) such shapes take cuDNN unverified.
// Not thread-safe: one per rank, used from the thread that enqueues the compute stream.
class AttentionChooser {
 public:
  AttentionChooser(const CudnnSdpaCaps& caps, LogSink sink, CudnnVerifier verify = nullptr);
  const AttentionChoice& Choose(const AttentionShape& sh, AttentionDtype dtype);
  size_t logged() const { return choices_.size(); }

 private:
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, AttentionDtype>;
  CudnnSdpaCaps caps_;
  LogSink sink_;
  CudnnVerifier verify_;
  std::map<Key, AttentionChoice> choices_;
};

// The attention core of one rank: owns a cuBLAS handle for the unfused path and, when
// the capabilities allow the fused one, a CudnnSdpa whose shapes are verified at first use.
class Attention {
 public:
  // `sm` = 10 * major + minor of the current device; the log goes to `sink`. A cuDNN
  // handle that cannot be created is not an error: every shape then logs why and runs
  // unfused.
  static absl::StatusOr<std::unique_ptr<Attention>> Create(int sm, LogSink sink = StderrLogSink);
  ~Attention();
  Attention(const Attention&) = delete;
  Attention& operator=(const Attention&) = delete;

  // The path this shape and dtype take (logged the first time it is asked).
  const AttentionChoice& Choose(const AttentionShape& sh, AttentionDtype dtype) {
    return chooser_.Choose(sh, dtype);
  }
  // Device scratch one Forward or Backward call of this shape needs.
  size_t WorkspaceBytes(const AttentionShape& sh, AttentionDtype dtype);
  // Bytes forward saves for backward (the `saved` argument of both).
  size_t SavedBytes(const AttentionShape& sh, AttentionDtype dtype);

  // T = float or uint16_t (BF16 bits); dtype follows from T. Only BF16 can take cuDNN.
  // q, k [B, S, N, Dqk], v [B, S, N, Dv] -> out [B, S, N, Dv], saved [SavedBytes].
  template <typename T>
  absl::Status Forward(const AttentionShape& sh, const T* q, const T* k, const T* v, T* out,
                       void* saved, void* workspace, size_t workspace_bytes, cudaStream_t stream);
  // dout [B, S, N, Dv] + forward's inputs, out and saved -> dq, dk [B, S, N, Dqk],
  // dv [B, S, N, Dv] (overwritten).
  template <typename T>
  absl::Status Backward(const AttentionShape& sh, const T* dout, const T* q, const T* k, const T* v,
                        const T* out, const void* saved, T* dq, T* dk, T* dv, void* workspace,
                        size_t workspace_bytes, cudaStream_t stream);

  const AttentionChooser& chooser() const { return chooser_; }

 private:
  Attention(const CudnnSdpaCaps& caps, LogSink sink, cublasHandle_t handle);
  // The verifier of chooser_: both plans of `sh`, then the self-check.
  absl::StatusOr<std::string> VerifyCudnn(const AttentionShape& sh);

  cublasHandle_t handle_;
  std::unique_ptr<CudnnSdpa> cudnn_;  // null when the handle could not be created
  std::string cudnn_missing_;         // why cudnn_ is null
  AttentionChooser chooser_;          // after the members its verifier uses
};

}  // namespace mt::cuda

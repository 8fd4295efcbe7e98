// kernels/cuda/attention.cc: the per-shape choice between cuDNN SDPA and the unfused path,
// and the dispatch (attention.h).
#include "kernels/cuda/attention.h"

#include <cstdio>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/attention_cudnn_check.h"
#include "kernels/cuda/cuda_check.h"

namespace mt::cuda {
namespace {

template <typename T>
constexpr AttentionDtype DtypeOf() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, uint16_t>, "float or BF16 bits");
  return std::is_same_v<T, float> ? AttentionDtype::kF32 : AttentionDtype::kBF16;
}

// The chooser hands a shape to cuDNN only in BF16 and only after CudnnSdpa prepared and
// checked it; reaching cuDNN otherwise is a bug in the dispatch, reported rather than
// silently rerouted, since forward and backward must agree on what `saved` holds.
absl::Status CudnnPathMisused(AttentionDtype dtype) {
  return absl::InternalError(absl::StrCat("attention: cuDNN SDPA chosen for ",
                                          AttentionDtypeName(dtype),
                                          " without a verified BF16 plan"));
}

}  // namespace

AttentionChoice ChooseAttentionPath(const AttentionShape& sh, AttentionDtype dtype,
                                    const CudnnSdpaCaps& caps) {
  const absl::Status s = CudnnSdpaSupports(sh, dtype, caps);
  if (s.ok()) return {AttentionPath::kCudnnSdpa, "", ""};
  return {AttentionPath::kUnfusedCublas, std::string(s.message()), ""};
}

std::string AttentionChoiceLine(const AttentionShape& sh, AttentionDtype dtype,
                                const AttentionChoice& choice) {
  const std::string shape = absl::StrCat("[B=", sh.B, " S=", sh.S, " N=", sh.N, " Dqk=", sh.Dqk,
                                         " Dv=", sh.Dv, " ", AttentionDtypeName(dtype), "]");
  if (choice.path == AttentionPath::kCudnnSdpa) {
    return absl::StrCat("attention: cuDNN SDPA ", shape, choice.note.empty() ? "" : " ",
                        choice.note);
  }
  return absl::StrCat("attention: unfused cuBLAS (cuDNN: ", choice.cudnn_refusal, ") ", shape);
}

void StderrLogSink(const std::string& line) {
  std::fprintf(stderr, "[moetrain] %s\n", line.c_str());
}

AttentionChooser::AttentionChooser(const CudnnSdpaCaps& caps, LogSink sink, CudnnVerifier verify)
    : caps_(caps), sink_(std::move(sink)), verify_(std::move(verify)) {}

const AttentionChoice& AttentionChooser::Choose(const AttentionShape& sh, AttentionDtype dtype) {
  const Key key{sh.B, sh.S, sh.N, sh.Dqk, sh.Dv, dtype};
  auto it = choices_.find(key);
  if (it != choices_.end()) return it->second;
  AttentionChoice choice = ChooseAttentionPath(sh, dtype, caps_);
  if (choice.path == AttentionPath::kCudnnSdpa && verify_) {
    absl::StatusOr<std::string> verified = verify_(sh, dtype);
    if (verified.ok()) {
      choice.note = *verified;
    } else {
      choice = {AttentionPath::kUnfusedCublas, std::string(verified.status().message()), ""};
    }
  }
  it = choices_.emplace(key, std::move(choice)).first;
  if (sink_) sink_(AttentionChoiceLine(sh, dtype, it->second));
  return it->second;
}

absl::StatusOr<std::unique_ptr<Attention>> Attention::Create(int sm, LogSink sink) {
  cublasHandle_t handle = nullptr;
  const cublasStatus_t st = cublasCreate(&handle);
  if (st != CUBLAS_STATUS_SUCCESS) {
    return absl::FailedPreconditionError(
        absl::StrCat("attention: cublasCreate failed: ", cublasGetStatusString(st)));
  }
  return std::unique_ptr<Attention>(
      new Attention(CudnnSdpaCapsOfRuntime(sm), std::move(sink), handle));
}

Attention::Attention(const CudnnSdpaCaps& caps, LogSink sink, cublasHandle_t handle)
    : handle_(handle),
      chooser_(caps, std::move(sink),
               [this](const AttentionShape& sh, AttentionDtype dtype) { return VerifyCudnn(sh); }) {
  // Only a process whose capabilities can ever choose cuDNN needs the handle.
  if (caps.built_with_cudnn && caps.cudnn_version >= kCudnnSdpaMinVersion && caps.sm >= 80) {
    absl::StatusOr<std::unique_ptr<CudnnSdpa>> cudnn = CudnnSdpa::Create();
    if (cudnn.ok()) {
      cudnn_ = std::move(*cudnn);
    } else {
      cudnn_missing_ = std::string(cudnn.status().message());
    }
  }
}

Attention::~Attention() {
  cudnn_.reset();
  cublasDestroy(handle_);
}

absl::StatusOr<std::string> Attention::VerifyCudnn(const AttentionShape& sh) {
  if (cudnn_ == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("no cuDNN handle: ", cudnn_missing_));
  }
  if (absl::Status s = cudnn_->Prepare(sh); !s.ok()) return s;
  return CudnnSdpaSelfCheck(*cudnn_, handle_, sh);
}

size_t Attention::WorkspaceBytes(const AttentionShape& sh, AttentionDtype dtype) {
  if (chooser_.Choose(sh, dtype).path == AttentionPath::kCudnnSdpa) {
    return cudnn_->WorkspaceBytes(sh);
  }
  return UnfusedAttentionWorkspaceBytes(sh, dtype);
}

size_t Attention::SavedBytes(const AttentionShape& sh, AttentionDtype dtype) {
  if (chooser_.Choose(sh, dtype).path == AttentionPath::kCudnnSdpa) {
    return static_cast<size_t>(SdpaStatsBytes(sh));
  }
  return size_t(UnfusedAttentionProbsCount(sh)) * AttentionElementBytes(dtype);
}

template <typename T>
absl::Status Attention::Forward(const AttentionShape& sh, const T* q, const T* k, const T* v,
                                T* out, void* saved, void* workspace, size_t workspace_bytes,
                                cudaStream_t stream) {
  if (chooser_.Choose(sh, DtypeOf<T>()).path == AttentionPath::kCudnnSdpa) {
    if constexpr (std::is_same_v<T, uint16_t>) {
      if (cudnn_ != nullptr) {
        return cudnn_->Forward(sh, q, k, v, out, static_cast<float*>(saved), workspace,
                               workspace_bytes, stream);
      }
    }
    return CudnnPathMisused(DtypeOf<T>());
  }
  UnfusedAttentionForward<T>(handle_, sh, q, k, v, out, static_cast<T*>(saved), workspace,
                             workspace_bytes, stream);
  return absl::OkStatus();
}

template <typename T>
absl::Status Attention::Backward(const AttentionShape& sh, const T* dout, const T* q, const T* k,
                                 const T* v, const T* out, const void* saved, T* dq, T* dk, T* dv,
                                 void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (chooser_.Choose(sh, DtypeOf<T>()).path == AttentionPath::kCudnnSdpa) {
    if constexpr (std::is_same_v<T, uint16_t>) {
      if (cudnn_ != nullptr) {
        return cudnn_->Backward(sh, dout, q, k, v, out, static_cast<const float*>(saved), dq, dk,
                                dv, workspace, workspace_bytes, stream);
      }
    }
    return CudnnPathMisused(DtypeOf<T>());
  }
  (void)out;  // the unfused backward recomputes nothing from O: P is saved
  UnfusedAttentionBackward<T>(handle_, sh, dout, q, k, v, static_cast<const T*>(saved), dq, dk, dv,
                              workspace, workspace_bytes, stream);
  return absl::OkStatus();
}

template absl::Status Attention::Forward<float>(const AttentionShape&, const float*, const float*,
                                                const float*, float*, void*, void*, size_t,
                                                cudaStream_t);
template absl::Status Attention::Forward<uint16_t>(const AttentionShape&, const uint16_t*,
                                                   const uint16_t*, const uint16_t*, uint16_t*,
                                                   void*, void*, size_t, cudaStream_t);
template absl::Status Attention::Backward<float>(const AttentionShape&, const float*, const float*,
                                                 const float*, const float*, const float*,
                                                 const void*, float*, float*, float*, void*, size_t,
                                                 cudaStream_t);
template absl::Status Attention::Backward<uint16_t>(const AttentionShape&, const uint16_t*,
                                                    const uint16_t*, const uint16_t*,
                                                    const uint16_t*, const uint16_t*, const void*,
                                                    uint16_t*, uint16_t*, uint16_t*, void*, size_t,
                                                    cudaStream_t);

}  // namespace mt::cuda

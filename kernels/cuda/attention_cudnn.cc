// kernels/cuda/attention_cudnn.cc: the support check of cuDNN's fused SDPA and CudnnSdpa,
// the per-shape plans and their execution (attention_cudnn.h).
#include "kernels/cuda/attention_cudnn.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"

namespace mt::cuda {
namespace {

std::string VersionString(int v) {
  return absl::StrCat(v / 10000, ".", (v / 100) % 100, ".", v % 100);
}

std::string ShapeString(const AttentionShape& sh) {
  return absl::StrCat("[B=", sh.B, " S=", sh.S, " N=", sh.N, " Dqk=", sh.Dqk, " Dv=", sh.Dv, "]");
}

// A pointer into the caller's workspace at `offset` bytes.
void* At(void* base, int64_t offset) { return static_cast<char*>(base) + offset; }

}  // namespace

CudnnSdpaCaps CudnnSdpaCapsOfRuntime(int sm) {
  CudnnSdpaCaps caps;
  caps.sm = sm;
  caps.built_with_cudnn = true;  // kernels/cuda/CMakeLists.txt requires cudnn.h
  const absl::StatusOr<const CudnnApi*> api = LoadCudnn();
  if (api.ok()) {
    caps.cudnn_version = static_cast<int>((*api)->GetVersion());
  } else {
    caps.load_error = std::string(api.status().message());
  }
  return caps;
}

absl::Status CudnnSdpaSupports(const AttentionShape& sh, AttentionDtype dtype,
                               const CudnnSdpaCaps& caps) {
  if (!caps.built_with_cudnn) {
    return absl::FailedPreconditionError("not built with cuDNN (cudnn.h not found)");
  }
  if (!caps.load_error.empty()) return absl::FailedPreconditionError(caps.load_error);
  if (caps.cudnn_version < kCudnnSdpaMinVersion) {
    return absl::FailedPreconditionError(absl::StrCat("cuDNN ", VersionString(caps.cudnn_version),
                                                      " < ", VersionString(kCudnnSdpaMinVersion),
                                                      " (the version this path is built for)"));
  }
  if (caps.sm < 80) {
    return absl::FailedPreconditionError(
        absl::StrCat("sm_", caps.sm, ": fused SDPA needs sm_80 or newer"));
  }
  // FP8 SDPA exists on Hopper but needs its own scale tensors; moetrain's attention core
  // is BF16 (docs/fp8.md), so only BF16 is offered here.
  if (dtype != AttentionDtype::kBF16) {
    return absl::InvalidArgumentError(
        absl::StrCat(AttentionDtypeName(dtype), " is not an SDPA dtype (fp16/bf16/fp8 only)"));
  }
  // 16-byte rows of BF16: the fused kernels' TMA / vector loads.
  if (sh.Dqk % 8 != 0 || sh.Dv % 8 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("head dims Dqk=", sh.Dqk, " Dv=", sh.Dv, " must be multiples of 8"));
  }
  // Training needs backward, whose limits are the tighter ones, and they are per
  // architecture family, not "from Hopper on" (cudnn-frontend's
  // validate_sdpa_backward_support_surface): Hopper (sm_9x) d <= 256; datacenter
  // Blackwell (sm_10x) d <= 128 except exactly Dqk 192 with Dv 128 (MLA; its 256/256
  // from 9.23 is an engine the frontend pins by knobs, which heuristics mode A here does
  // not); every other device (Ampere, Ada, sm_11x, sm_12x) d <= 128.
  const int major = caps.sm / 10;
  if (major == 10 && !(sh.Dqk == 192 && sh.Dv == 128) && (sh.Dqk > 128 || sh.Dv > 128)) {
    return absl::InvalidArgumentError(absl::StrCat("head dims Dqk=", sh.Dqk, " Dv=", sh.Dv,
                                                   " exceed SDPA backward's 128 on sm_", caps.sm,
                                                   " (only Dqk=192 Dv=128 goes above it)"));
  }
  const int64_t max_d = major == 9 ? 256 : 128;
  if (major != 10 && (sh.Dqk > max_d || sh.Dv > max_d)) {
    return absl::InvalidArgumentError(absl::StrCat("head dims Dqk=", sh.Dqk, " Dv=", sh.Dv,
                                                   " exceed SDPA backward's ", max_d, " on sm_",
                                                   caps.sm));
  }
  if (sh.B <= 0 || sh.S <= 0 || sh.N <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("empty shape ", ShapeString(sh)));
  }
  return absl::OkStatus();
}

// ---- CudnnSdpa ----

absl::StatusOr<std::unique_ptr<CudnnSdpa>> CudnnSdpa::Create() {
  if (absl::StatusOr<const CudnnApi*> api = LoadCudnn(); !api.ok()) return api.status();
  cudnnHandle_t handle = nullptr;
  MT_CUDNN_RETURN_IF_ERROR(Dnn().Create(&handle));
  return std::unique_ptr<CudnnSdpa>(new CudnnSdpa(handle));
}

CudnnSdpa::~CudnnSdpa() {
  plans_.clear();  // plans before the handle they were built on
  if (handle_ != nullptr) Dnn().Destroy(handle_);
}

absl::Status CudnnSdpa::Prepare(const AttentionShape& sh) {
  if (plans_.count(KeyOf(sh)) != 0) return absl::OkStatus();
  absl::StatusOr<CudnnPlan> fwd = BuildSdpaForwardPlan(handle_, sh);
  if (!fwd.ok()) return fwd.status();
  absl::StatusOr<CudnnPlan> bwd = BuildSdpaBackwardPlan(handle_, sh);
  if (!bwd.ok()) return bwd.status();
  plans_.emplace(KeyOf(sh), Plans{std::move(*fwd), std::move(*bwd)});
  return absl::OkStatus();
}

size_t CudnnSdpa::WorkspaceBytes(const AttentionShape& sh) const {
  const auto it = plans_.find(KeyOf(sh));
  if (it == plans_.end()) return 0;
  const int64_t fwd = it->second.forward.workspace_bytes;
  const int64_t bwd =
      SdpaRowSumBytes(sh) + SdpaDQAccumBytes(sh) + it->second.backward.workspace_bytes;
  return static_cast<size_t>(std::max(fwd, bwd));
}

absl::StatusOr<const CudnnSdpa::Plans*> CudnnSdpa::Find(const AttentionShape& sh,
                                                        size_t workspace_bytes) const {
  const auto it = plans_.find(KeyOf(sh));
  if (it == plans_.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cuDNN SDPA: shape ", ShapeString(sh), " was not prepared"));
  }
  if (workspace_bytes < WorkspaceBytes(sh)) {
    return absl::InvalidArgumentError(absl::StrCat("cuDNN SDPA: workspace ", workspace_bytes,
                                                   " bytes < ", WorkspaceBytes(sh), " for ",
                                                   ShapeString(sh)));
  }
  return &it->second;
}

absl::Status CudnnSdpa::Forward(const AttentionShape& sh, const uint16_t* q, const uint16_t* k,
                                const uint16_t* v, uint16_t* out, float* stats, void* workspace,
                                size_t workspace_bytes, cudaStream_t stream) {
  absl::StatusOr<const Plans*> plans = Find(sh, workspace_bytes);
  if (!plans.ok()) return plans.status();
  MT_CUDNN_RETURN_IF_ERROR(Dnn().SetStream(handle_, stream));
  // By-value scalars are read from host memory when the plan is enqueued.
  float scale = static_cast<float>(sh.scale);
  float neg_inf = std::numeric_limits<float>::lowest();
  const std::map<int64_t, void*> ptrs = {{kSdpaQ, const_cast<uint16_t*>(q)},
                                         {kSdpaK, const_cast<uint16_t*>(k)},
                                         {kSdpaV, const_cast<uint16_t*>(v)},
                                         {kSdpaO, out},
                                         {kSdpaStats, stats},
                                         {kSdpaScale, &scale},
                                         {kSdpaNegInf, &neg_inf}};
  return ExecutePlan(handle_, (*plans)->forward, ptrs, workspace);
}

absl::Status CudnnSdpa::Backward(const AttentionShape& sh, const uint16_t* dout, const uint16_t* q,
                                 const uint16_t* k, const uint16_t* v, const uint16_t* out,
                                 const float* stats, uint16_t* dq, uint16_t* dk, uint16_t* dv,
                                 void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  absl::StatusOr<const Plans*> plans = Find(sh, workspace_bytes);
  if (!plans.ok()) return plans.status();
  MT_CUDNN_RETURN_IF_ERROR(Dnn().SetStream(handle_, stream));
  // Workspace: [row sums | dQ accumulator | cuDNN's own].
  void* row_sum = workspace;
  void* dq_accum = At(workspace, SdpaRowSumBytes(sh));
  void* cudnn_ws = At(workspace, SdpaRowSumBytes(sh) + SdpaDQAccumBytes(sh));
  // dQ is accumulated over key blocks; cuDNN >= 9.6 clears it itself, zeroing it here
  // costs one memset and does not depend on that.
  CUDA_CHECK(cudaMemsetAsync(dq_accum, 0, SdpaDQAccumBytes(sh), stream));
  float scale = static_cast<float>(sh.scale);
  float neg_inf = std::numeric_limits<float>::lowest();
  float one = 1.0f;
  const std::map<int64_t, void*> ptrs = {{kSdpaQ, const_cast<uint16_t*>(q)},
                                         {kSdpaK, const_cast<uint16_t*>(k)},
                                         {kSdpaV, const_cast<uint16_t*>(v)},
                                         {kSdpaO, const_cast<uint16_t*>(out)},
                                         {kSdpaDO, const_cast<uint16_t*>(dout)},
                                         {kSdpaStats, const_cast<float*>(stats)},
                                         {kSdpaDQ, dq},
                                         {kSdpaDK, dk},
                                         {kSdpaDV, dv},
                                         {kSdpaRowSum, row_sum},
                                         {kSdpaDQAccum, dq_accum},
                                         {kSdpaScale, &scale},
                                         {kSdpaNegInf, &neg_inf},
                                         {kSdpaOne, &one}};
  return ExecutePlan(handle_, (*plans)->backward, ptrs, cudnn_ws);
}

}  // namespace mt::cuda

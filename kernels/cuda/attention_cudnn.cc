// kernels/cuda/attention_cudnn.cc: the support check of cuDNN's fused SDPA
// (attention_cudnn.h); the backend-API graph itself is not built yet (see the header).
#include "kernels/cuda/attention_cudnn.h"

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"  // MT_HAVE_CUDNN and cudnn.h when present

namespace mt::cuda {
namespace {

std::string VersionString(int v) {
  return absl::StrCat(v / 10000, ".", (v / 100) % 100, ".", v % 100);
}

}  // namespace

CudnnSdpaCaps CudnnSdpaCapsOfBuild(int sm) {
  CudnnSdpaCaps caps;
  caps.sm = sm;
#ifdef MT_HAVE_CUDNN
  caps.built_with_cudnn = true;
  caps.cudnn_version = CUDNN_VERSION;
#endif
  return caps;
}

absl::Status CudnnSdpaSupports(const AttentionShape& sh, AttentionDtype dtype,
                               const CudnnSdpaCaps& caps) {
  if (!caps.built_with_cudnn) {
    return absl::FailedPreconditionError("not built with cuDNN (cudnn.h not found)");
  }
  if (caps.cudnn_version < kCudnnSdpaMinVersion) {
    return absl::FailedPreconditionError(absl::StrCat("cuDNN ", VersionString(caps.cudnn_version),
                                                      " < ", VersionString(kCudnnSdpaMinVersion),
                                                      " (the SDPA operation descriptors)"));
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
  // Training needs backward, whose limit is the tighter one: d <= 128 before Hopper,
  // d <= 256 (Dqk = 192 with Dv = 128 listed) from Hopper on.
  const int64_t max_d = caps.sm >= 90 ? 256 : 128;
  if (sh.Dqk > max_d || sh.Dv > max_d) {
    return absl::InvalidArgumentError(absl::StrCat("head dims Dqk=", sh.Dqk, " Dv=", sh.Dv,
                                                   " exceed SDPA backward's ", max_d, " on sm_",
                                                   caps.sm));
  }
  if (!kCudnnSdpaGraphImplemented) {
    return absl::UnimplementedError(
        "moetrain's backend-API SDPA graph (OPERATION_SDPA_FWD/BWD) is not built yet");
  }
  return absl::OkStatus();
}

}  // namespace mt::cuda

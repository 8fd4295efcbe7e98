// kernels/cuda/attention_cudnn_check.cc: cuDNN SDPA against the unfused path on the device
// (attention_cudnn_check.h).
#include "kernels/cuda/attention_cudnn_check.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace mt::cuda {
namespace {

// Round to nearest even, as FloatToBf16 (fp8_quant.h); inputs are finite.
uint16_t ToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float FromBf16(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

absl::Status CudaStatus(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("self-check: ", what, ": ", cudaGetErrorString(e)));
}

// Device memory of the check, freed on every return path.
class DeviceBuffers {
 public:
  ~DeviceBuffers() {
    for (void* p : ptrs_) cudaFree(p);
  }
  absl::StatusOr<void*> Alloc(size_t bytes) {
    void* p = nullptr;
    const absl::Status s = CudaStatus(cudaMalloc(&p, std::max<size_t>(bytes, 256)), "cudaMalloc");
    if (!s.ok()) {
      cudaGetLastError();  // not sticky, but a later launch check would read it as its own
      return s;
    }
    ptrs_.push_back(p);
    return p;
  }

 private:
  std::vector<void*> ptrs_;
};

// The check's private stream, destroyed on every return path.
class OwnStream {
 public:
  ~OwnStream() {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  absl::Status Create() { return CudaStatus(cudaStreamCreate(&stream_), "stream"); }
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

// One input of the check: BF16 bits on the device, and the same values as FP32.
struct Input {
  uint16_t* bf16 = nullptr;
  float* f32 = nullptr;
};

absl::StatusOr<Input> MakeInput(DeviceBuffers& mem, int64_t n, uint32_t seed, cudaStream_t stream) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<uint16_t> bits(n);
  std::vector<float> values(n);
  for (int64_t i = 0; i < n; ++i) {
    bits[i] = ToBf16(dist(rng));
    values[i] = FromBf16(bits[i]);
  }
  Input in;
  absl::StatusOr<void*> b = mem.Alloc(n * sizeof(uint16_t));
  if (!b.ok()) return b.status();
  absl::StatusOr<void*> f = mem.Alloc(n * sizeof(float));
  if (!f.ok()) return f.status();
  in.bf16 = static_cast<uint16_t*>(*b);
  in.f32 = static_cast<float*>(*f);
  absl::Status s = CudaStatus(
      cudaMemcpyAsync(in.bf16, bits.data(), n * 2, cudaMemcpyHostToDevice, stream), "upload");
  if (s.ok()) {
    s = CudaStatus(cudaMemcpyAsync(in.f32, values.data(), n * 4, cudaMemcpyHostToDevice, stream),
                   "upload");
  }
  if (s.ok()) s = CudaStatus(cudaStreamSynchronize(stream), "upload");  // host vectors die here
  if (!s.ok()) return s;
  return in;
}

// max |got - want| / max |want| of one output; +inf when got has a non-finite value.
absl::StatusOr<double> RelativeError(const uint16_t* got_dev, const float* want_dev, int64_t n) {
  std::vector<uint16_t> got(n);
  std::vector<float> want(n);
  absl::Status s =
      CudaStatus(cudaMemcpy(got.data(), got_dev, n * 2, cudaMemcpyDeviceToHost), "download");
  if (s.ok()) {
    s = CudaStatus(cudaMemcpy(want.data(), want_dev, n * 4, cudaMemcpyDeviceToHost), "download");
  }
  if (!s.ok()) return s;
  double max_err = 0, max_ref = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double g = FromBf16(got[i]);
    if (!std::isfinite(g)) return INFINITY;
    max_err = std::max(max_err, std::fabs(g - want[i]));
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(want[i])));
  }
  return max_err / std::max(max_ref, 1e-30);
}

// One check problem: both paths, compared.
absl::StatusOr<std::string> CheckOne(CudnnSdpa& sdpa, cublasHandle_t cublas,
                                     const AttentionShape& sh) {
  const std::string where = absl::StrCat("self-check B=", sh.B, " S=", sh.S, " N=", sh.N);
  if (absl::Status s = sdpa.Prepare(sh); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(where, ": ", s.message()));
  }
  OwnStream own;
  if (absl::Status s = own.Create(); !s.ok()) return s;
  const cudaStream_t stream = own.get();

  const int64_t rows = sh.B * sh.S * sh.N;
  const int64_t n_qk = rows * sh.Dqk, n_v = rows * sh.Dv;
  DeviceBuffers mem;
  absl::StatusOr<Input> q = MakeInput(mem, n_qk, 1, stream), k = MakeInput(mem, n_qk, 2, stream),
                        v = MakeInput(mem, n_v, 3, stream), dout = MakeInput(mem, n_v, 4, stream);
  for (const absl::StatusOr<Input>* in : {&q, &k, &v, &dout}) {
    if (!in->ok()) return in->status();
  }
  // Outputs: cuDNN's in BF16, the reference's in FP32; one allocation each.
  bool out_of_memory = false;
  auto alloc = [&](size_t bytes) -> void* {
    absl::StatusOr<void*> p = mem.Alloc(bytes);
    out_of_memory |= !p.ok();
    return p.ok() ? *p : nullptr;
  };
  const size_t cudnn_ws = sdpa.WorkspaceBytes(sh);
  const size_t ref_ws = UnfusedAttentionWorkspaceBytes(sh, AttentionDtype::kF32);
  auto* o = static_cast<uint16_t*>(alloc(n_v * 2));
  auto* dq = static_cast<uint16_t*>(alloc(n_qk * 2));
  auto* dk = static_cast<uint16_t*>(alloc(n_qk * 2));
  auto* dv = static_cast<uint16_t*>(alloc(n_v * 2));
  auto* stats = static_cast<float*>(alloc(SdpaStatsBytes(sh)));
  void* ws = alloc(cudnn_ws);
  auto* ref_o = static_cast<float*>(alloc(n_v * 4));
  auto* ref_dq = static_cast<float*>(alloc(n_qk * 4));
  auto* ref_dk = static_cast<float*>(alloc(n_qk * 4));
  auto* ref_dv = static_cast<float*>(alloc(n_v * 4));
  auto* probs = static_cast<float*>(alloc(UnfusedAttentionProbsCount(sh) * 4));
  void* ref_workspace = alloc(ref_ws);
  if (out_of_memory) {
    return absl::ResourceExhaustedError(absl::StrCat(where, ": out of device memory"));
  }

  absl::Status s = sdpa.Forward(sh, q->bf16, k->bf16, v->bf16, o, stats, ws, cudnn_ws, stream);
  if (s.ok()) {
    s = sdpa.Backward(sh, dout->bf16, q->bf16, k->bf16, v->bf16, o, stats, dq, dk, dv, ws, cudnn_ws,
                      stream);
  }
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat(where, ": ", s.message()));
  UnfusedAttentionForward<float>(cublas, sh, q->f32, k->f32, v->f32, ref_o, probs, ref_workspace,
                                 ref_ws, stream);
  UnfusedAttentionBackward<float>(cublas, sh, dout->f32, q->f32, k->f32, v->f32, probs, ref_dq,
                                  ref_dk, ref_dv, ref_workspace, ref_ws, stream);
  if (absl::Status e = CudaStatus(cudaStreamSynchronize(stream), "run"); !e.ok()) return e;

  struct Output {
    const char* name;
    const uint16_t* got;
    const float* want;
    int64_t n;
  };
  std::string summary = where + ": max err";
  for (const Output& out : {Output{"O", o, ref_o, n_v}, Output{"dQ", dq, ref_dq, n_qk},
                            Output{"dK", dk, ref_dk, n_qk}, Output{"dV", dv, ref_dv, n_v}}) {
    absl::StatusOr<double> err = RelativeError(out.got, out.want, out.n);
    if (!err.ok()) return err.status();
    if (!(*err <= kCudnnSdpaCheckTolerance)) {
      return absl::InternalError(absl::StrFormat(
          "%s: %s differs from the unfused path by %.3g of its largest value (> %.3g)", where,
          out.name, *err, kCudnnSdpaCheckTolerance));
    }
    absl::StrAppend(&summary, absl::StrFormat(" %s %.2g", out.name, *err));
  }
  return summary;
}

// The shape itself, once forward and backward on zeros, compared with nothing: the check
// shapes are smaller, so the plans training will run are other plans, and one cuDNN builds
// but cannot execute must be refused here rather than end the run at its first step. OK
// with a note when the device cannot hold the shape's buffers beside the run's.
absl::StatusOr<std::string> RunShape(CudnnSdpa& sdpa, const AttentionShape& sh) {
  const std::string where = absl::StrCat("B=", sh.B, " S=", sh.S, " N=", sh.N);
  if (absl::Status s = sdpa.Prepare(sh); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("the shape ", where, ": ", s.message()));
  }
  OwnStream own;
  if (absl::Status s = own.Create(); !s.ok()) return s;
  const cudaStream_t stream = own.get();
  const int64_t rows = sh.B * sh.S * sh.N;
  const size_t qk = size_t(rows * sh.Dqk) * 2, vv = size_t(rows * sh.Dv) * 2;
  const size_t ws_bytes = sdpa.WorkspaceBytes(sh);
  DeviceBuffers mem;
  std::vector<void*> p;
  for (size_t bytes : {qk, qk, vv, vv, vv, qk, qk, vv, size_t(SdpaStatsBytes(sh)), ws_bytes}) {
    absl::StatusOr<void*> b = mem.Alloc(bytes);
    if (!b.ok()) return absl::StrCat("the shape ", where, " not run (no device memory for it)");
    if (absl::Status z = CudaStatus(cudaMemsetAsync(*b, 0, bytes, stream), "zero"); !z.ok()) {
      return z;
    }
    p.push_back(*b);
  }
  auto* q = static_cast<uint16_t*>(p[0]);
  auto* k = static_cast<uint16_t*>(p[1]);
  auto* v = static_cast<uint16_t*>(p[2]);
  auto* dout = static_cast<uint16_t*>(p[3]);
  auto* o = static_cast<uint16_t*>(p[4]);
  auto* stats = static_cast<float*>(p[8]);
  absl::Status s = sdpa.Forward(sh, q, k, v, o, stats, p[9], ws_bytes, stream);
  if (s.ok()) {
    s = sdpa.Backward(sh, dout, q, k, v, o, stats, static_cast<uint16_t*>(p[5]),
                      static_cast<uint16_t*>(p[6]), static_cast<uint16_t*>(p[7]), p[9], ws_bytes,
                      stream);
  }
  if (s.ok()) s = CudaStatus(cudaStreamSynchronize(stream), "run");
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat("the shape ", where, ": ", s.message()));
  return absl::StrCat("the shape ", where, " ran");
}

}  // namespace

absl::StatusOr<std::string> CudnnSdpaSelfCheck(CudnnSdpa& sdpa, cublasHandle_t cublas,
                                               const AttentionShape& sh) {
  std::string summary;
  for (const AttentionShape& check : CudnnSdpaCheckShapes(sh)) {
    absl::StatusOr<std::string> one = CheckOne(sdpa, cublas, check);
    if (!one.ok()) return one.status();
    absl::StrAppend(&summary, summary.empty() ? "" : "; ", *one);
  }
  absl::StrAppend(&summary, " (of max |unfused|)");
  const std::vector<AttentionShape> checked = CudnnSdpaCheckShapes(sh);
  const bool ran = std::any_of(checked.begin(), checked.end(), [&](const AttentionShape& c) {
    return c.B == sh.B && c.S == sh.S && c.N == sh.N;
  });
  if (ran) return summary;
  absl::StatusOr<std::string> full = RunShape(sdpa, sh);
  if (!full.ok()) return full.status();
  return absl::StrCat(summary, "; ", *full);
}

}  // namespace mt::cuda

// kernels/cuda/backend_cuda.cc: CudaBackend's creation, memory, dense ops and optimizer
// (backend_cuda.h); the MoE ops are in backend_cuda_moe.cc, the BF16 GEMMs in
// backend_cuda_bf16.cc.
#include "kernels/cuda/backend_cuda.h"

#include <algorithm>
#include <climits>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/adamw.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/cross_entropy.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/fp8_quant.h"  // FloatToBf16 / Bf16ToFloat
#include "kernels/cuda/gemm_cublaslt.h"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/status.h"

namespace mt::cuda {
namespace {

constexpr int kReductionPartials = kSumPartials > kNormPartials ? kSumPartials : kNormPartials;
// cuBLASLt's recommended workspace on Hopper (gemm_cublaslt.h).
constexpr size_t kLtWorkspaceBytes = size_t{32} << 20;

// Device-side failures the interface cannot return (it has no Status): abort with the
// message, as CUDA_CHECK does for a failed CUDA call.
void DieOnError(const absl::Status& s, const char* what) {
  if (!s.ok()) {
    const std::string message(s.message());
    CheckFailed(what, "status", __func__, __FILE__, __LINE__, message.c_str());
  }
}

int AsInt(int64_t v, const char* what) {
  MT_CHECK(v >= 0 && v <= INT_MAX, "cuBLAS GEMM: ", what, " = ", v, " does not fit an int");
  return static_cast<int>(v);
}

}  // namespace

void* DevicePool::AllocateOrDie(size_t bytes) {
  absl::StatusOr<void*> p = cache.Allocate(bytes);
  DieOnError(p.status(), "device allocation");
  return *p;
}

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(int local_rank) {
  ASSIGN_OR_RETURN(DeviceInfo info, SelectDevice(local_rank));
  auto pool = std::make_shared<DevicePool>();
  auto streams = std::make_unique<Streams>();
  cublasHandle_t cublas = nullptr;
  const cublasStatus_t st = cublasCreate(&cublas);
  if (st != CUBLAS_STATUS_SUCCESS) {
    return absl::FailedPreconditionError(
        absl::StrCat("CUDA backend: cublasCreate failed: ", cublasGetStatusString(st)));
  }
  CUBLAS_CHECK(cublasSetStream(cublas, streams->compute()));
  // Default math: FP32 GEMMs stay FP32 (TF32 only with CUBLAS_TF32_TENSOR_OP_MATH).
  CUBLAS_CHECK(cublasSetMathMode(cublas, CUBLAS_DEFAULT_MATH));
  // The BF16 GEMMs' cuBLASLt handle and its workspace (held for the backend's life).
  absl::StatusOr<void*> lt_workspace = pool->cache.Allocate(kLtWorkspaceBytes);
  if (!lt_workspace.ok()) {
    cublasDestroy(cublas);
    return lt_workspace.status();
  }
  absl::StatusOr<std::unique_ptr<CublasLtGemm>> lt =
      CublasLtGemm::Create(info.sm, *lt_workspace, kLtWorkspaceBytes);
  if (!lt.ok()) {
    pool->cache.Free(*lt_workspace);
    cublasDestroy(cublas);
    return lt.status();
  }
  absl::StatusOr<std::unique_ptr<Attention>> attention = Attention::Create(info.sm);
  if (!attention.ok()) {
    lt->reset();
    pool->cache.Free(*lt_workspace);
    cublasDestroy(cublas);
    return attention.status();
  }
  std::unique_ptr<CudaBackend> be(new CudaBackend(std::move(info), std::move(pool),
                                                  std::move(streams), cublas, *lt_workspace,
                                                  std::move(*lt), std::move(*attention)));
  // Without pinned memory uploads still work, from pageable memory (slower, not wrong).
  absl::StatusOr<std::unique_ptr<UploadStaging>> staging = UploadStaging::Create();
  if (staging.ok()) be->staging_ = std::move(*staging);
  return be;
}

CudaBackend::CudaBackend(DeviceInfo info, std::shared_ptr<DevicePool> pool,
                         std::unique_ptr<Streams> streams, cublasHandle_t cublas,
                         void* lt_workspace, std::unique_ptr<CublasLtGemm> lt,
                         std::unique_ptr<Attention> attention)
    : info_(std::move(info)),
      pool_(std::move(pool)),
      streams_(std::move(streams)),
      cublas_(cublas),
      lt_workspace_(lt_workspace),
      lt_(std::move(lt)),
      attention_(std::move(attention)) {}

CudaBackend::~CudaBackend() {
  // Queued kernels may still read the cached blocks and use the handles.
  cudaStreamSynchronize(streams_->compute());
  for (Cached* c : {&plan_workspace_, &plan_counts_, &partials_})
    if (c->ptr != nullptr) pool_->cache.Free(c->ptr);
  lt_.reset();  // its plans and handle before the workspace they were planned with
  pool_->cache.Free(lt_workspace_);
  cublasDestroy(cublas_);
}

// ---- scratch --------------------------------------------------------------------------

void* CudaBackend::Grow(Cached* c, size_t bytes) {
  if (c->ptr != nullptr && c->bytes >= bytes) return c->ptr;
  // The old block goes back to the cache; stream order keeps earlier users safe.
  if (c->ptr != nullptr) pool_->cache.Free(c->ptr);
  c->ptr = pool_->AllocateOrDie(std::max<size_t>(bytes, 1));
  c->bytes = bytes;
  return c->ptr;
}

CudaBackend::Block CudaBackend::Scratch(size_t bytes) {
  return Block(bytes == 0 ? nullptr : pool_->AllocateOrDie(bytes), BlockFree{pool_});
}

double* CudaBackend::Partials() {
  return static_cast<double*>(Grow(&partials_, kReductionPartials * sizeof(double)));
}

// ---- memory ---------------------------------------------------------------------------

Tensor CudaBackend::Uninitialized(std::vector<int64_t> shape, DType dtype) {
  const size_t bytes = static_cast<size_t>(NumElements(shape)) * DTypeSize(dtype);
  // At least one byte: a Tensor needs a non-null buffer, even an empty one.
  auto* p = static_cast<std::byte*>(pool_->AllocateOrDie(std::max<size_t>(bytes, 1)));
  std::shared_ptr<std::byte> buffer(p, [pool = pool_](std::byte* b) { pool->cache.Free(b); });
  return Tensor(std::move(shape), dtype, Device::kCUDA, std::move(buffer));
}

Tensor CudaBackend::Empty(std::vector<int64_t> shape, DType dtype) {
  Tensor t = Uninitialized(std::move(shape), dtype);
  if (t.nbytes() > 0) CUDA_CHECK(cudaMemsetAsync(t.raw(), 0, t.nbytes(), stream()));
  return t;
}

Tensor CudaBackend::ToDevice(const Tensor& host) {
  Tensor t = Uninitialized(host.shape(), host.dtype());
  if (t.nbytes() == 0) return t;
  if (host.device() == Device::kCUDA) {
    CUDA_CHECK(
        cudaMemcpyAsync(t.raw(), host.raw(), t.nbytes(), cudaMemcpyDeviceToDevice, stream()));
  } else {
    CopyFromHost(host.raw(), t.raw(), t.nbytes());
  }
  return t;
}

void CudaBackend::CopyFromHost(const void* src, void* dst, size_t bytes) {
  if (bytes == 0) return;
  // Small copies (token ids) through pinned slots, queued without waiting for the stream;
  // larger ones (parameters at start-up) from pageable memory, which returns once the
  // bytes are staged. Either way the caller may reuse `src` at once.
  if (staging_ && staging_->Upload(src, dst, bytes, stream())) return;
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream()));
}

Tensor CudaBackend::ToHost(const Tensor& t) {
  if (t.device() == Device::kCPU) return t.Clone();
  Tensor host(t.shape(), t.dtype());
  if (t.nbytes() > 0) {
    CUDA_CHECK(cudaMemcpyAsync(host.raw(), t.raw(), t.nbytes(), cudaMemcpyDeviceToHost, stream()));
  }
  CUDA_CHECK(cudaStreamSynchronize(stream()));
  return host;
}

void CudaBackend::Zero(Tensor* t) {
  if (t->device() == Device::kCPU) {
    t->Zero();
    return;
  }
  if (t->nbytes() > 0) CUDA_CHECK(cudaMemsetAsync(t->raw(), 0, t->nbytes(), stream()));
}

void CudaBackend::Copy(const void* src, void* dst, size_t bytes) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream()));
}

void CudaBackend::Copy2D(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t rows,
                         int64_t cols) {
  if (rows <= 0 || cols <= 0) return;
  // One row needs no pitch; cudaMemcpy2D insists on pitch >= width even then.
  const size_t width = static_cast<size_t>(cols) * sizeof(float);
  const size_t spitch = rows == 1 ? width : static_cast<size_t>(src_ld) * sizeof(float);
  const size_t dpitch = rows == 1 ? width : static_cast<size_t>(dst_ld) * sizeof(float);
  CUDA_CHECK(cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, static_cast<size_t>(rows),
                               cudaMemcpyDeviceToDevice, stream()));
}

void CudaBackend::CopyBytes2D(const void* src, int64_t src_pitch, void* dst, int64_t dst_pitch,
                              int64_t rows, int64_t width) {
  if (rows <= 0 || width <= 0) return;
  const size_t w = static_cast<size_t>(width);  // as Copy2D: one row needs no pitch
  const size_t spitch = rows == 1 ? w : static_cast<size_t>(src_pitch);
  const size_t dpitch = rows == 1 ? w : static_cast<size_t>(dst_pitch);
  CUDA_CHECK(cudaMemcpy2DAsync(dst, dpitch, src, spitch, w, static_cast<size_t>(rows),
                               cudaMemcpyDeviceToDevice, stream()));
}

void CudaBackend::Add2D(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t rows,
                        int64_t cols) {
  cuda::Add2D(src, src_ld, dst, dst_ld, rows, cols, stream());
}

void CudaBackend::Broadcast2D(const float* src, int64_t src_ld, float* dst, int64_t dst_ld,
                              int64_t stride, int64_t repeats, int64_t rows, int64_t cols) {
  cuda::Broadcast2D(src, src_ld, dst, dst_ld, stride, repeats, rows, cols, stream());
}

void CudaBackend::SumRepeats2D(const float* src, int64_t src_ld, int64_t stride, int64_t repeats,
                               float* dst, int64_t dst_ld, int64_t rows, int64_t cols) {
  cuda::SumRepeats2D(src, src_ld, stride, repeats, dst, dst_ld, rows, cols, stream());
}

std::string CudaBackend::MemorySummary() const {
  const CachingAllocator::Stats st = pool_->cache.stats();
  constexpr double kGiB = 1 << 30;
  return absl::StrCat("device memory: peak ", absl::SixDigits(st.peak_bytes / kGiB),
                      " GiB in use, ", absl::SixDigits(st.reserved_bytes / kGiB),
                      " GiB reserved; ", st.raw_allocs_after_warmup,
                      " cudaMalloc calls after warm-up (want 0)");
}

void CudaBackend::Synchronize() { CUDA_CHECK(cudaStreamSynchronize(stream())); }

// ---- dense ops ------------------------------------------------------------------------

void CudaBackend::Gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                       const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                       float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  const ColumnMajorGemm g = ColumnMajorFor(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc);
  CUBLAS_CHECK(cublasGemmEx(cublas_, g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                            g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, AsInt(g.m, "N"), AsInt(g.n, "M"),
                            AsInt(g.k, "K"), &alpha, g.a, CUDA_R_32F, AsInt(g.lda, "ldb"), g.b,
                            CUDA_R_32F, AsInt(g.ldb, "lda"), &beta, g.c, CUDA_R_32F,
                            AsInt(g.ldc, "ldc"), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void CudaBackend::RmsNormForward(const float* x, const float* w, float* y, float* rstd,
                                 int64_t rows, int64_t C, double eps) {
  cuda::RmsNormForward(x, w, y, rstd, rows, C, eps, stream());
}

void CudaBackend::RmsNormBackward(const float* dy, const float* x, const float* w,
                                  const float* rstd, float* dx, float* dw, int64_t rows,
                                  int64_t C) {
  cuda::RmsNormBackward(dy, x, w, rstd, dx, dw, rows, C, stream());
}

void CudaBackend::RopeForward(float* x, int64_t B, int64_t S, int64_t H, int64_t stride,
                              int64_t offset, int64_t dr, const double* cos, const double* sin) {
  cuda::RopeForward(x, B, S, H, stride, offset, dr, cos, sin, stream());
}

void CudaBackend::RopeBackward(float* dx, int64_t B, int64_t S, int64_t H, int64_t stride,
                               int64_t offset, int64_t dr, const double* cos, const double* sin) {
  cuda::RopeBackward(dx, B, S, H, stride, offset, dr, cos, sin, stream());
}

void CudaBackend::SwigluForward(const float* gate, const float* up, float* h, int64_t n) {
  cuda::SwigluForward(gate, up, h, n, stream());
}

void CudaBackend::SwigluBackward(const float* dh, const float* gate, const float* up, float* dgate,
                                 float* dup, int64_t n) {
  cuda::SwigluBackward(dh, gate, up, dgate, dup, n, stream());
}

void CudaBackend::AttentionForward(const float* q, const float* k, const float* v, float* out,
                                   Tensor* saved, int64_t B, int64_t S, int64_t N, int64_t Dqk,
                                   int64_t Dv, double scale) {
  const AttentionShape sh{B, S, N, Dqk, Dv, scale};
  const AttentionDtype dt = AttentionDtype::kF32;
  // The forward writes every saved byte (P is stored whole, zeros above the diagonal).
  *saved = Uninitialized({static_cast<int64_t>(attention_->SavedBytes(sh, dt))}, DType::kU8);
  const size_t ws_bytes = attention_->WorkspaceBytes(sh, dt);
  Block ws = Scratch(ws_bytes);
  DieOnError(
      attention_->Forward<float>(sh, q, k, v, out, saved->raw(), ws.get(), ws_bytes, stream()),
      "attention forward");
}

void CudaBackend::AttentionBackward(const float* dout, const float* q, const float* k,
                                    const float* v, const float* out, const Tensor& saved,
                                    float* dq, float* dk, float* dv, int64_t B, int64_t S,
                                    int64_t N, int64_t Dqk, int64_t Dv, double scale) {
  const AttentionShape sh{B, S, N, Dqk, Dv, scale};
  const AttentionDtype dt = AttentionDtype::kF32;
  MT_CHECK(saved.nbytes() >= attention_->SavedBytes(sh, dt),
           "attention backward: saved state smaller than this shape's forward saves");
  const size_t ws_bytes = attention_->WorkspaceBytes(sh, dt);
  Block ws = Scratch(ws_bytes);
  DieOnError(attention_->Backward<float>(sh, dout, q, k, v, out, saved.raw(), dq, dk, dv, ws.get(),
                                         ws_bytes, stream()),
             "attention backward");
}

void CudaBackend::AttentionForwardBf16(const float* q, const float* k, const float* v, float* out,
                                       Tensor* saved, int64_t B, int64_t S, int64_t N, int64_t Dqk,
                                       int64_t Dv, double scale) {
  const AttentionShape sh{B, S, N, Dqk, Dv, scale};
  const AttentionDtype dt = AttentionDtype::kBF16;
  if (attention_->Choose(sh, dt).path != AttentionPath::kCudnnSdpa) {
    AttentionForward(q, k, v, out, saved, B, S, N, Dqk, Dv, scale);
    return;
  }
  const int64_t n_qk = B * S * N * Dqk, n_v = B * S * N * Dv;
  const Block qb = Bf16Copy(q, n_qk), kb = Bf16Copy(k, n_qk), vb = Bf16Copy(v, n_v);
  Block ob = Scratch(static_cast<size_t>(n_v) * sizeof(uint16_t));  // [B, S, N, Dv] BF16
  *saved = Uninitialized({static_cast<int64_t>(attention_->SavedBytes(sh, dt))}, DType::kU8);
  const size_t ws_bytes = attention_->WorkspaceBytes(sh, dt);
  Block ws = Scratch(ws_bytes);
  auto* o16 = static_cast<uint16_t*>(ob.get());
  DieOnError(attention_->Forward<uint16_t>(sh, static_cast<const uint16_t*>(qb.get()),
                                           static_cast<const uint16_t*>(kb.get()),
                                           static_cast<const uint16_t*>(vb.get()), o16,
                                           saved->raw(), ws.get(), ws_bytes, stream()),
             "attention forward (bf16)");
  cuda::Bf16ToFloat(o16, out, n_v, stream());
}

void CudaBackend::AttentionBackwardBf16(const float* dout, const float* q, const float* k,
                                        const float* v, const float* out, const Tensor& saved,
                                        float* dq, float* dk, float* dv, int64_t B, int64_t S,
                                        int64_t N, int64_t Dqk, int64_t Dv, double scale) {
  const AttentionShape sh{B, S, N, Dqk, Dv, scale};
  const AttentionDtype dt = AttentionDtype::kBF16;
  if (attention_->Choose(sh, dt).path != AttentionPath::kCudnnSdpa) {
    AttentionBackward(dout, q, k, v, out, saved, dq, dk, dv, B, S, N, Dqk, Dv, scale);
    return;
  }
  MT_CHECK(saved.nbytes() >= attention_->SavedBytes(sh, dt),
           "attention backward (bf16): saved state smaller than this shape's forward saves");
  const int64_t n_qk = B * S * N * Dqk, n_v = B * S * N * Dv;
  // out is forward's BF16 output widened, so narrowing it again is exact.
  const Block dob = Bf16Copy(dout, n_v), qb = Bf16Copy(q, n_qk), kb = Bf16Copy(k, n_qk),
              vb = Bf16Copy(v, n_v), ob = Bf16Copy(out, n_v);
  Block dqb = Scratch(static_cast<size_t>(n_qk) * sizeof(uint16_t));
  Block dkb = Scratch(static_cast<size_t>(n_qk) * sizeof(uint16_t));
  Block dvb = Scratch(static_cast<size_t>(n_v) * sizeof(uint16_t));
  const size_t ws_bytes = attention_->WorkspaceBytes(sh, dt);
  Block ws = Scratch(ws_bytes);
  auto bits = [](const Block& b) { return static_cast<const uint16_t*>(b.get()); };
  auto* dq16 = static_cast<uint16_t*>(dqb.get());
  auto* dk16 = static_cast<uint16_t*>(dkb.get());
  auto* dv16 = static_cast<uint16_t*>(dvb.get());
  DieOnError(
      attention_->Backward<uint16_t>(sh, bits(dob), bits(qb), bits(kb), bits(vb), bits(ob),
                                     saved.raw(), dq16, dk16, dv16, ws.get(), ws_bytes, stream()),
      "attention backward (bf16)");
  cuda::Bf16ToFloat(dq16, dq, n_qk, stream());
  cuda::Bf16ToFloat(dk16, dk, n_qk, stream());
  cuda::Bf16ToFloat(dv16, dv, n_v, stream());
}

void CudaBackend::EmbeddingForward(const int32_t* ids, const float* table, float* out, int64_t n,
                                   int64_t C) {
  cuda::EmbeddingForward(ids, table, out, n, C, stream());
}

void CudaBackend::EmbeddingBackward(const int32_t* ids, const float* dout, float* dtable, int64_t n,
                                    int64_t C) {
  cuda::EmbeddingBackward(ids, dout, dtable, n, C, stream());
}

void CudaBackend::CrossEntropy(float* logits, const int32_t* targets, int64_t rows, int64_t V,
                               float grad_scale, double* loss_sum) {
  if (rows == 0) return;
  Block losses = Scratch(static_cast<size_t>(rows) * sizeof(float));  // [rows]
  float* l = static_cast<float*>(losses.get());
  CrossEntropyForwardBackward(logits, targets, rows, V, grad_scale, l, nullptr, stream());
  SumAccumulate(l, rows, Partials(), loss_sum, stream());
}

void CudaBackend::Add(const float* x, float* y, int64_t n) { cuda::Add(x, y, n, stream()); }

void CudaBackend::Axpy(float a, const float* x, float* y, int64_t n) {
  cuda::Axpy(a, x, y, n, stream());
}

// ---- optimizer ------------------------------------------------------------------------

void CudaBackend::SumSquares(const float* g, int64_t n, double* sum_sq) {
  SumSquaresAccumulate(g, n, Partials(), sum_sq, stream());
}

void CudaBackend::SumSquaresRanges(const float* g,
                                   const std::vector<std::pair<int64_t, int64_t>>& ranges,
                                   double* sum_sq) {
  // The device model's gradients are one flat buffer: its parameters' ranges tile it, so
  // they fold into one pass (two launches) instead of two launches per parameter.
  std::vector<std::pair<int64_t, int64_t>> spans(ranges);
  std::sort(spans.begin(), spans.end());
  int64_t begin = 0, end = -1;
  for (const auto& [offset, n] : spans) {
    if (offset == end) {
      end += n;
      continue;
    }
    if (end > begin) SumSquares(g + begin, end - begin, sum_sq);
    begin = offset;
    end = offset + n;
  }
  if (end > begin) SumSquares(g + begin, end - begin, sum_sq);
}

void CudaBackend::Scale(float* g, int64_t n, float scale) { cuda::Scale(g, n, scale, stream()); }

void CudaBackend::AdamW(float* w, const float* g, float* m, float* v, int64_t n, bool decay,
                        const AdamStepCoeffs& c) {
  const AdamWCoeffs coeffs{c.lr, c.b1, c.b2, c.eps, c.wd, c.bc1, c.bc2};
  AdamWStep(w, g, m, v, n, decay, coeffs, stream());
}

void CudaBackend::AdamWBf16Moments(float* w, const float* g, uint16_t* m, uint16_t* v, int64_t n,
                                   bool decay, const AdamStepCoeffs& c) {
  const AdamWCoeffs coeffs{c.lr, c.b1, c.b2, c.eps, c.wd, c.bc1, c.bc2};
  AdamWStepBf16Moments(w, g, m, v, n, decay, coeffs, stream());
}

}  // namespace mt::cuda

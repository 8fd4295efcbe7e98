// kernels/cuda/backend_cuda.h: the CUDA implementation of kernels/backend.h (FP32, and BF16
// GEMMs for training.precision bf16), so the device model (trainer/device_model.h) runs on
// one GPU with the ops of kernels/cuda/.
//
// One backend per rank: it selects the rank's device (runtime.h), owns the compute stream
// every op is enqueued on, a caching allocator (device_allocator.h) that device tensors
// borrow from and return to, a cuBLAS handle for the FP32 GEMMs (CUBLAS_COMPUTE_32F with
// the default math mode: no TF32, so results match the CPU at 1e-5), a cuBLASLt GEMM
// (gemm_cublaslt.h) for the BF16 GEMMs (backend_cuda_bf16.cc) and the attention core
// (attention.h). Scratch the ops need (plan workspaces, reduction partials) is held across
// calls and grown on demand, so a warmed-up step allocates nothing new.
//
// Device memory is stream-ordered to the compute stream (device_allocator.h): a tensor
// dropped on the host while kernels still use it goes back to the cache and is handed out
// only to work queued after those kernels. tests/gpu/backend_table_test.cc compares every op
// with CpuBackend (kernels/backend_cpu.h) on the same inputs.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/cuda/runtime.h"

namespace mt::cuda {

class Attention;
class CublasLtGemm;

// cuBLAS's column-major arguments for our row-major C[M, N] = op(A) op(B): cuBLAS computes
// C^T [N, M] = op(B)^T op(A)^T. A row-major [r, c] matrix with leading dimension ld is the
// column-major [c, r] matrix with the same ld (its transpose), so cuBLAS's A is our B with
// our trans_b as its op, and its B is our A with our trans_a. With K == 0 nothing is read
// and the leading dimensions are raised to 1, which cuBLAS requires (C = beta C then).
struct ColumnMajorGemm {
  bool trans_a = false, trans_b = false;  // cuBLAS's op(A), op(B)
  int64_t m = 0, n = 0, k = 0;            // cuBLAS's C is [m, n] column-major
  const float* a = nullptr;
  int64_t lda = 0;
  const float* b = nullptr;
  int64_t ldb = 0;
  float* c = nullptr;
  int64_t ldc = 0;
};

inline ColumnMajorGemm ColumnMajorFor(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                                      const float* A, int64_t lda, const float* B, int64_t ldb,
                                      float* C, int64_t ldc) {
  ColumnMajorGemm g;
  g.trans_a = trans_b;
  g.trans_b = trans_a;
  g.m = N;
  g.n = M;
  g.k = K;
  g.a = B;
  g.lda = K == 0 ? std::max<int64_t>(ldb, 1) : ldb;
  g.b = A;
  g.ldb = K == 0 ? std::max<int64_t>(lda, 1) : lda;
  g.c = C;
  g.ldc = ldc;
  return g;
}

// The device memory of one backend, shared with the deleters of the tensors it hands out
// (a tensor may outlive the backend; its block then returns to a cache nobody reuses).
struct DevicePool {
  CudaRawAllocator raw;
  CachingAllocator cache{&raw};
  // A block of at least `bytes`; aborts with the allocator's message when out of memory
  // (the Backend interface has no Status: an OOM mid-step is not recoverable anyway).
  void* AllocateOrDie(size_t bytes);
};

class CudaBackend : public Backend {
 public:
  // Selects the device of `local_rank` (runtime.h SelectDevice) and creates the stream,
  // allocator, cuBLAS and cuBLASLt handles and attention core on it.
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(int local_rank);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  Device device() const override { return Device::kCUDA; }
  const char* name() const override { return "cuda"; }
  const DeviceInfo& info() const { return info_; }
  cudaStream_t stream() const { return streams_->compute(); }
  Streams& streams() { return *streams_; }
  CachingAllocator& allocator() { return pool_->cache; }

  // ---- memory ----
  Tensor Empty(std::vector<int64_t> shape, DType dtype = DType::kF32) override;
  Tensor ToDevice(const Tensor& host) override;
  Tensor ToHost(const Tensor& t) override;
  void CopyToHost(const void* src, void* dst, size_t bytes) override;
  void CopyFromHost(const void* src, void* dst, size_t bytes) override;
  void Zero(Tensor* t) override;
  void Copy(const void* src, void* dst, size_t bytes) override;
  void Copy2D(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t rows,
              int64_t cols) override;
  void CopyBytes2D(const void* src, int64_t src_pitch, void* dst, int64_t dst_pitch, int64_t rows,
                   int64_t width) override;
  void Add2D(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t rows,
             int64_t cols) override;
  void Broadcast2D(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t stride,
                   int64_t repeats, int64_t rows, int64_t cols) override;
  void SumRepeats2D(const float* src, int64_t src_ld, int64_t stride, int64_t repeats, float* dst,
                    int64_t dst_ld, int64_t rows, int64_t cols) override;
  void Synchronize() override;
  void MarkWarmupDone() override { pool_->cache.MarkWarmupDone(); }
  // "device memory: peak 12.3 GiB in use, 14.0 GiB reserved; 0 cudaMalloc calls after
  // warm-up" (the caching allocator's Stats).
  std::string MemorySummary() const override;

  // ---- dense ops ----
  void Gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
            const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
            int64_t ldc) override;
  void RmsNormForward(const float* x, const float* w, float* y, float* rstd, int64_t rows,
                      int64_t C, double eps) override;
  void RmsNormBackward(const float* dy, const float* x, const float* w, const float* rstd,
                       float* dx, float* dw, int64_t rows, int64_t C) override;
  void RopeForward(float* x, int64_t B, int64_t S, int64_t H, int64_t stride, int64_t offset,
                   int64_t dr, const double* cos, const double* sin) override;
  void RopeBackward(float* dx, int64_t B, int64_t S, int64_t H, int64_t stride, int64_t offset,
                    int64_t dr, const double* cos, const double* sin) override;
  void SwigluForward(const float* gate, const float* up, float* h, int64_t n) override;
  void SwigluBackward(const float* dh, const float* gate, const float* up, float* dgate, float* dup,
                      int64_t n) override;
  // *saved: the attention core's opaque bytes ([SavedBytes] U8; the unfused path's P).
  void AttentionForward(const float* q, const float* k, const float* v, float* out, Tensor* saved,
                        int64_t B, int64_t S, int64_t N, int64_t Dqk, int64_t Dv,
                        double scale) override;
  void AttentionBackward(const float* dout, const float* q, const float* k, const float* v,
                         const float* out, const Tensor& saved, float* dq, float* dk, float* dv,
                         int64_t B, int64_t S, int64_t N, int64_t Dqk, int64_t Dv,
                         double scale) override;
  // BF16 operands through cuDNN's fused SDPA when attention.h chose it for the shape (saved:
  // the softmax Stats; out and the gradients BF16-rounded), else the FP32 ops above.
  void AttentionForwardBf16(const float* q, const float* k, const float* v, float* out,
                            Tensor* saved, int64_t B, int64_t S, int64_t N, int64_t Dqk, int64_t Dv,
                            double scale) override;
  void AttentionBackwardBf16(const float* dout, const float* q, const float* k, const float* v,
                             const float* out, const Tensor& saved, float* dq, float* dk, float* dv,
                             int64_t B, int64_t S, int64_t N, int64_t Dqk, int64_t Dv,
                             double scale) override;
  void EmbeddingForward(const int32_t* ids, const float* table, float* out, int64_t n,
                        int64_t C) override;
  void EmbeddingBackward(const int32_t* ids, const float* dout, float* dtable, int64_t n,
                         int64_t C) override;
  void CrossEntropy(float* logits, const int32_t* targets, int64_t rows, int64_t V,
                    float grad_scale, double* loss_sum) override;
  // ---- FP8 (backend_cuda_fp8.cc): fp8_quant.h's kernels, byte-identical to the CPU's;
  // Fp8Gemm on cuBLASLt's block-scaled FP8 GEMM (sm_90), else on grouped_gemm_fp8.cu's
  // block-scaled tensor-core kernel; Fp8GemmTokenTiled (Wgrad's 1D1D scaling) on
  // grouped_gemm_fp8.cu's tensor-core weight-gradient kernel.
  QuantizedActivation QuantizeFp8(const float* x, int64_t M, int64_t K) override;
  void DequantizeFp8(const QuantizedActivation& q, float* x) override;
  QuantizedActivation RetileTransposedFp8(const QuantizedActivation& q) override;
  QuantizedWeight QuantizeWeightFp8(const float* w, int64_t N, int64_t K) override;
  QuantizedWeight TransposeWeightFp8(const QuantizedWeight& w) override;
  void Fp8Gemm(const QuantizedActivation& a, const QuantizedWeight& w, float* y) override;
  void Fp8GemmTokenTiled(const QuantizedActivation& a, const QuantizedActivation& b,
                         float* y) override;
  // The experts' GEMMs in one grouped launch each on the device offsets (grouped_gemm_fp8.cu:
  // the recipe's block scaling, no host synchronisation); the stacked weights quantised in
  // one launch when N % 128 == 0.
  using Backend::GroupedFp8BackwardInput;
  using Backend::GroupedFp8Forward;
  QuantizedExperts QuantizeExpertsFp8(const float* w, int64_t E, int64_t N, int64_t K) override;
  void GroupedFp8Forward(const QuantizedActivation& x, const QuantizedExperts& w, float* y,
                         const int32_t* offsets) override;
  void GroupedFp8BackwardInput(const float* dy, const QuantizedExperts& w, float* dx,
                               const int32_t* offsets, int64_t rows, bool accumulate) override;
  void GroupedFp8BackwardWeight(const float* dy, const QuantizedActivation* xq, const float* x,
                                float* dw, const int32_t* offsets, int64_t rows, int64_t E,
                                int64_t K, int64_t N) override;
  void Transpose(const float* x, float* y, int64_t rows, int64_t cols) override;
  void RoundE5M6(const float* x, float* y, int64_t M, int64_t K) override;
  QuantizedActivation RmsNormQuantizeFp8(const float* x, const float* w, float* rstd, int64_t rows,
                                         int64_t C, double eps) override;
  void Add(const float* x, float* y, int64_t n) override;
  void Axpy(float a, const float* x, float* y, int64_t n) override;
  // About 256 MiB of logits, in whole 256-row tiles: 2048 rows at V = 32k, 512 at DeepSeek-V3's
  // 129k (each chunk is three GEMMs of M = rows over the whole vocabulary).
  int64_t HeadLossChunkRows(int64_t vocab) const override {
    const int64_t rows = (int64_t(256) << 20) / (4 * std::max<int64_t>(vocab, 1)) / 256 * 256;
    return std::clamp<int64_t>(rows, 256, 4096);
  }

  // ---- BF16 GEMMs (backend_cuda_bf16.cc) ----
  // Operands cast to BF16 bits (fp8_quant.h FloatToBf16, round to nearest even), products
  // summed in FP32, FP32 outputs: what the interface's defaults compute, without the FP32
  // GEMMs. GemmBf16 runs cuBLASLt's tensor-core BF16 GEMM and falls back to the default
  // (said once on stderr, counted in bf16_gemm_fallbacks) for a shape it has no algorithm
  // for; the grouped ones run grouped_gemm.h's BF16 launchers.
  void RoundBf16(const float* x, float* y, int64_t n) override;
  void ToBf16Bits(const float* x, uint16_t* y, int64_t n) override;
  void FromBf16Bits(const uint16_t* x, float* y, int64_t n) override;
  void GemmBf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
                int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                int64_t ldc) override;
  void GroupedLinearForwardBf16(const float* x, const float* w, float* y, const int32_t* offsets,
                                int64_t rows, int64_t E, int64_t K, int64_t N) override;
  void GroupedLinearBackwardInputBf16(const float* dy, const float* w, float* dx,
                                      const int32_t* offsets, int64_t rows, int64_t E, int64_t K,
                                      int64_t N, bool accumulate) override;
  // Kept weights are BF16 bits (kBF16), cast once.
  Tensor Bf16Weight(const float* w, int64_t n) override;
  void GemmBf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
                int64_t lda, const Tensor& b, int64_t ldb, float beta, float* C,
                int64_t ldc) override;
  void GroupedLinearForwardBf16(const float* x, const Tensor& wb, float* y, const int32_t* offsets,
                                int64_t rows, int64_t E, int64_t K, int64_t N) override;
  void GroupedLinearBackwardInputBf16(const float* dy, const Tensor& wb, float* dx,
                                      const int32_t* offsets, int64_t rows, int64_t E, int64_t K,
                                      int64_t N, bool accumulate) override;
  void GroupedLinearBackwardWeightBf16(const float* dy, const float* x, float* dw,
                                       const int32_t* offsets, int64_t rows, int64_t E, int64_t K,
                                       int64_t N) override;
  // GemmBf16 calls that took the default path because cuBLASLt refused the shape.
  int64_t bf16_gemm_fallbacks() const { return bf16_gemm_fallbacks_; }
  // Fp8Gemm calls that ran on grouped_gemm_fp8.cu's kernel, not cuBLASLt (no block-scaled
  // cuBLASLt before sm_90, or cuBLASLt refused the shape).
  int64_t fp8_gemm_fallbacks() const { return fp8_gemm_fallbacks_; }

  // ---- MoE (backend_cuda_moe.cc) ----
  void RouterForward(const float* logits, const float* bias, float* scores, int32_t* topk,
                     float* weight, int64_t* load, const RouteShape& shape) override;
  void BalanceForward(const float* scores, const int32_t* topk, double* f, double* loss,
                      const RouteShape& shape) override;
  void RouterBackward(const float* scores, const int32_t* topk, const double* dweight,
                      const double* f, double balance_scale, float* d_logits,
                      const RouteShape& shape) override;
  void MoePlanBuild(const int32_t* topk, int64_t T, int64_t K, int64_t E,
                    const MoeRoutingPlan& plan) override;
  void PermuteRows(const float* x, float* xp, const int32_t* src_token, int64_t P,
                   int64_t H) override;
  void Combine(const float* ye, const float* weight, const int32_t* slot_pos, float* y, int64_t T,
               int64_t K, int64_t H) override;
  void CombineBackward(const float* dy, const float* ye, const float* weight,
                       const int32_t* slot_pos, float* dye, double* dweight, int64_t T, int64_t K,
                       int64_t H) override;
  void UnpermuteAdd(const float* dxp, const int32_t* slot_pos, float* dx, int64_t T, int64_t K,
                    int64_t H) override;
  void SegmentSumRows(const float* x, const int32_t* offsets, const int32_t* rows, float* y,
                      int64_t segments, int64_t H) override;
  void GatherRows(const void* x, void* y, const int32_t* src, int64_t n,
                  int64_t row_bytes) override;
  void GroupedLinearForward(const float* x, const float* w, float* y, const int32_t* offsets,
                            int64_t rows, int64_t E, int64_t K, int64_t N) override;
  void GroupedLinearBackwardInput(const float* dy, const float* w, float* dx,
                                  const int32_t* offsets, int64_t rows, int64_t E, int64_t K,
                                  int64_t N, bool accumulate) override;
  void GroupedLinearBackwardWeight(const float* dy, const float* x, float* dw,
                                   const int32_t* offsets, int64_t rows, int64_t E, int64_t K,
                                   int64_t N) override;

  // ---- optimizer ----
  void SumSquares(const float* g, int64_t n, double* sum_sq) override;
  void SumSquaresRanges(const float* g, const std::vector<std::pair<int64_t, int64_t>>& ranges,
                        double* sum_sq) override;
  void Scale(float* g, int64_t n, float scale) override;
  void AdamW(float* w, const float* g, float* m, float* v, int64_t n, bool decay,
             const AdamStepCoeffs& c) override;
  void AdamWBf16Moments(float* w, const float* g, uint16_t* m, uint16_t* v, int64_t n, bool decay,
                        const AdamStepCoeffs& c) override;

 private:
  // A device block held across calls, grown (never shrunk) to the largest request.
  struct Cached {
    void* ptr = nullptr;
    size_t bytes = 0;
  };
  // A block for one call, back to the cache when it goes out of scope (safe while kernels
  // queued on the compute stream still use it: the allocator is stream-ordered).
  struct BlockFree {
    std::shared_ptr<DevicePool> pool;
    void operator()(void* p) const { pool->cache.Free(p); }
  };
  using Block = std::unique_ptr<void, BlockFree>;

  CudaBackend(DeviceInfo info, std::shared_ptr<DevicePool> pool, std::unique_ptr<Streams> streams,
              cublasHandle_t cublas, void* lt_workspace, std::unique_ptr<CublasLtGemm> lt,
              std::unique_ptr<Attention> attention);
  // A tensor whose bytes are left as the allocator hands them out (to be overwritten).
  Tensor Uninitialized(std::vector<int64_t> shape, DType dtype);
  void* Grow(Cached* c, size_t bytes);
  Block Scratch(size_t bytes);
  // kReductionPartials doubles for the two-pass sums (cross_entropy.h, adamw.h).
  double* Partials();
  // x [n] cast to BF16 bits in a scratch block (backend_cuda_bf16.cc).
  Block Bf16Copy(const float* x, int64_t n);
  // GemmBf16 on BF16 bits a (A's, cast) and b (B's, cast or kept); `fallback` runs the
  // interface's default when cuBLASLt has no algorithm for the shape.
  void GemmBf16Bits(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const uint16_t* a,
                    int64_t lda, const uint16_t* b, int64_t ldb, float beta, float* C, int64_t ldc,
                    absl::FunctionRef<void()> fallback);
  // dx [rows, K] = what `data_grad` stores into a [rows, K] buffer, or dx += it when
  // `accumulate` (backend_cuda_moe.cc): the grouped kernels store their tiles.
  void GroupedDataGradInto(float* dx, int64_t rows, int64_t K, bool accumulate,
                           absl::FunctionRef<void(float*)> data_grad);

  DeviceInfo info_;
  std::shared_ptr<DevicePool> pool_;
  std::unique_ptr<Streams> streams_;
  cublasHandle_t cublas_ = nullptr;
  void* lt_workspace_ = nullptr;  // 32 MiB from the pool, lt_'s (cuBLASLt's) workspace
  std::unique_ptr<CublasLtGemm> lt_;
  std::unique_ptr<Attention> attention_;
  std::unique_ptr<UploadStaging> staging_;  // null when pinned memory was refused
  Cached plan_workspace_, plan_counts_, partials_;
  int64_t bf16_gemm_fallbacks_ = 0;
  int64_t fp8_gemm_fallbacks_ = 0;
};

}  // namespace mt::cuda

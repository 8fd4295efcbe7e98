// kernels/backend.h: one interface over every op of a training step, so that one model
// (trainer/device_model.h) runs on the CPU and on a GPU (ggml's backend design).
//
// Two implementations: CpuBackend (backend_cpu.h: kernels/ops.h plus the MoE and router
// loops of trainer/moe.cc, in the same order of operations) and CudaBackend
// (kernels/cuda/backend_cuda.h). Every pointer argument is memory of the backend's device,
// allocated by Empty() or ToDevice(); the CPU backend's "device" is host memory, which is
// how CI runs the device model against the reference model (tests/trainer/
// device_model_test.cc) without a GPU, and tests/gpu/ runs the same model on CUDA.
//
// Calls are enqueued in order on one stream (the CPU runs them at once); only ToHost,
// CopyToHost and Synchronize wait (and the grouped FP8 ops, which read the expert offsets).
// Semantics are those of kernels/ops.h: "+=" outputs accumulate, all others overwrite.
// Shapes are in the comments as [dims]. Activations and weights are FP32 tensors: the BF16
// GEMMs round their FP32 operands (the CUDA backend casts them for cuBLASLt), and the FP8
// ones quantise them (kernels/quantize.h's QuantizedActivation / QuantizedWeight).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "kernels/quantize.h"
#include "kernels/tensor.h"

namespace mt {

// The MoE router's shape: T tokens of B sequences of length S over E experts, top-K.
struct RouteShape {
  int64_t tokens = 0;      // T = B * S
  int64_t experts = 0;     // E
  int64_t top_k = 0;       // K
  int64_t n_group = 1;     // expert groups (E % n_group == 0)
  int64_t topk_group = 1;  // groups kept per token
  bool norm_topk = true;
  double scaling = 1.0;  // routed_scaling_factor
  int64_t seq_len = 0;   // S
  int64_t valid = 0;     // positions s < valid (>= 1) of each sequence count for loads and
                         // the balance loss; tokens is a whole number of sequences
};

// The permutation of T * K routed slots (slot = t * K + k) by expert (MoePlanBuild).
struct MoeRoutingPlan {
  int32_t* src_token = nullptr;  // [T*K] permuted row p comes from token src_token[p]
  int32_t* slot_pos = nullptr;   // [T*K] slot s sits at permuted row slot_pos[s]
  int32_t* offsets = nullptr;    // [E+1] expert e owns rows [offsets[e], offsets[e+1])
};

// One AdamW step's coefficients (trainer/optimizer.h MakeAdamCoeffs).
struct AdamStepCoeffs {
  double lr = 0, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0;
  double bc1 = 1, bc2 = 1;  // 1 - beta^step
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual const char* name() const = 0;  // "cpu", "cuda"

  // ---- memory ---------------------------------------------------------------------------
  // A zero-filled tensor on this backend's device.
  virtual Tensor Empty(std::vector<int64_t> shape, DType dtype = DType::kF32) = 0;
  virtual Tensor ToDevice(const Tensor& host) = 0;
  // A host copy (waits for the work enqueued so far).
  virtual Tensor ToHost(const Tensor& t) = 0;
  // bytes from this device's src to host memory dst (waits, as ToHost).
  virtual void CopyToHost(const void* src, void* dst, size_t bytes) = 0;
  // bytes from host memory src to this device's dst; src may be freed once this returns.
  virtual void CopyFromHost(const void* src, void* dst, size_t bytes) = 0;
  virtual void Zero(Tensor* t) = 0;
  // dst = src, `bytes` bytes on the device; the ranges must not overlap.
  virtual void Copy(const void* src, void* dst, size_t bytes) = 0;
  // dst rows r < rows, columns c < cols: dst[r * dst_ld + c] = src[r * src_ld + c].
  virtual void Copy2D(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t rows,
                      int64_t cols) = 0;
  // The same in bytes, for rows of any layout (the expert dispatch packs FP8 codes and
  // their scales into one row): rows r < rows, dst + r * dst_pitch gets the `width` bytes
  // at src + r * src_pitch.
  virtual void CopyBytes2D(const void* src, int64_t src_pitch, void* dst, int64_t dst_pitch,
                           int64_t rows, int64_t width) = 0;
  // Copy2D with dst += src.
  virtual void Add2D(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t rows,
                     int64_t cols) = 0;
  // Copy2D of one block to `repeats` places `stride` apart: dst + h * stride for h < repeats
  // (MLA's shared rotary key into every head). The default is that loop of Copy2D; a GPU
  // backend does it in one launch.
  virtual void Broadcast2D(const float* src, int64_t src_ld, float* dst, int64_t dst_ld,
                           int64_t stride, int64_t repeats, int64_t rows, int64_t cols);
  // Add2D from `repeats` blocks `stride` apart into one, h = 0, 1, ... in order (the rotary
  // key's gradient summed over the heads): the same float additions as that loop of Add2D,
  // which is the default.
  virtual void SumRepeats2D(const float* src, int64_t src_ld, int64_t stride, int64_t repeats,
                            float* dst, int64_t dst_ld, int64_t rows, int64_t cols);
  virtual void Synchronize() = 0;
  // Memory bookkeeping for the run's log: from now on allocations that reach the device
  // (cudaMalloc) are counted (the step should not need any after the first); a one-line
  // summary, empty when the backend keeps none.
  virtual void MarkWarmupDone() {}
  virtual std::string MemorySummary() const { return ""; }

  // ---- dense ops (kernels/ops.h) --------------------------------------------------------
  // C[M,N] = alpha op(A) op(B) + beta C, row-major with leading dimensions.
  virtual void Gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                    const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                    int64_t ldc) = 0;
  // y[M,N] = x[M,K] W[N,K]^T
  void LinearForward(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N) {
    Gemm(false, true, M, N, K, 1.0f, x, K, w, K, 0.0f, y, N);
  }
  // dx[M,K] (+)= dy[M,N] W[N,K]
  void LinearBackwardInput(const float* dy, const float* w, float* dx, int64_t M, int64_t K,
                           int64_t N, bool accumulate) {
    Gemm(false, false, M, K, N, 1.0f, dy, N, w, K, accumulate ? 1.0f : 0.0f, dx, K);
  }
  // dW[N,K] += dy[M,N]^T x[M,K]
  void LinearBackwardWeight(const float* dy, const float* x, float* dw, int64_t M, int64_t K,
                            int64_t N) {
    Gemm(true, false, N, K, M, 1.0f, dy, N, x, K, 1.0f, dw, K);
  }
  virtual void RmsNormForward(const float* x, const float* w, float* y, float* rstd, int64_t rows,
                              int64_t C, double eps) = 0;
  virtual void RmsNormBackward(const float* dy, const float* x, const float* w, const float* rstd,
                               float* dx, float* dw, int64_t rows, int64_t C) = 0;
  // cos, sin: [S, dr/2] F64 tensors on this device.
  virtual void RopeForward(float* x, int64_t B, int64_t S, int64_t H, int64_t stride,
                           int64_t offset, int64_t dr, const double* cos, const double* sin) = 0;
  virtual void RopeBackward(float* dx, int64_t B, int64_t S, int64_t H, int64_t stride,
                            int64_t offset, int64_t dr, const double* cos, const double* sin) = 0;
  virtual void SwigluForward(const float* gate, const float* up, float* h, int64_t n) = 0;
  virtual void SwigluBackward(const float* dh, const float* gate, const float* up, float* dgate,
                              float* dup, int64_t n) = 0;
  // Causal attention, q,k [B,S,N,Dqk], v,out [B,S,N,Dv]. *saved is what backward needs
  // (allocated here; its layout is the backend's).
  virtual void AttentionForward(const float* q, const float* k, const float* v, float* out,
                                Tensor* saved, int64_t B, int64_t S, int64_t N, int64_t Dqk,
                                int64_t Dv, double scale) = 0;
  // dq,dk [B,S,N,Dqk], dv [B,S,N,Dv] overwritten.
  virtual void AttentionBackward(const float* dout, const float* q, const float* k, const float* v,
                                 const float* out, const Tensor& saved, float* dq, float* dk,
                                 float* dv, int64_t B, int64_t S, int64_t N, int64_t Dqk,
                                 int64_t Dv, double scale) = 0;
  // The attention core as a BF16 operator (training.precision bf16/fp8): q, k, v (and
  // dout) hold BF16-rounded values, and a backend may run it in BF16 (CUDA: cuDNN's fused
  // SDPA where attention.h chose it, so out and the gradients come back BF16-rounded and
  // *saved holds that path's state). Forward and backward must both be the BF16 variants.
  // Default: the FP32 ops above, which is what the CPU backend runs (bit-identical).
  virtual void AttentionForwardBf16(const float* q, const float* k, const float* v, float* out,
                                    Tensor* saved, int64_t B, int64_t S, int64_t N, int64_t Dqk,
                                    int64_t Dv, double scale);
  virtual void AttentionBackwardBf16(const float* dout, const float* q, const float* k,
                                     const float* v, const float* out, const Tensor& saved,
                                     float* dq, float* dk, float* dv, int64_t B, int64_t S,
                                     int64_t N, int64_t Dqk, int64_t Dv, double scale);
  virtual void EmbeddingForward(const int32_t* ids, const float* table, float* out, int64_t n,
                                int64_t C) = 0;
  virtual void EmbeddingBackward(const int32_t* ids, const float* dout, float* dtable, int64_t n,
                                 int64_t C) = 0;
  // Rows of FP32 logits [rows, V] a chunked head loss holds at a time. The CPU's 256 is
  // ModelChunk's (trainer/model_chunk.cc), whose head-gradient sums the bit-identity tests
  // compare; a GPU takes chunks big enough to fill it with the head's GEMMs.
  virtual int64_t HeadLossChunkRows(int64_t vocab) const { return 256; }
  // logits [R,V] become dlogits (ops::CrossEntropyForwardBackward); *loss_sum (one F64 on
  // the device) += the summed loss of the rows whose target >= 0.
  virtual void CrossEntropy(float* logits, const int32_t* targets, int64_t rows, int64_t V,
                            float grad_scale, double* loss_sum) = 0;
  virtual void Add(const float* x, float* y, int64_t n) = 0;           // y += x
  virtual void Axpy(float a, const float* x, float* y, int64_t n) = 0;  // y += a x

  // ---- BF16 GEMMs (training.precision bf16) ----------------------------------------------
  // What a BF16 GEMM with FP32 accumulation computes, on FP32 tensors: the operands are
  // rounded to BF16 (round to nearest even) first, the products summed in FP32. The
  // defaults (backend.cc) round copies and call the FP32 ops, which is the CPU's emulation
  // (trainer/precision.h); a GPU backend overrides them with tensor-core BF16 GEMMs.
  // y[n] = x[n] rounded to BF16, kept in FP32 (in place allowed).
  virtual void RoundBf16(const float* x, float* y, int64_t n) = 0;
  // x [n] FP32 -> y [n] BF16 bit patterns (RoundBf16's rounding), and back (exact): the BF16
  // wire format (expert parallelism's combine moves the fp8 recipe's expert outputs in it).
  virtual void ToBf16Bits(const float* x, uint16_t* y, int64_t n) = 0;
  virtual void FromBf16Bits(const uint16_t* x, float* y, int64_t n) = 0;
  // Gemm with alpha = 1 on BF16-rounded A [(trans_a ? K : M) x lda] and B.
  virtual void GemmBf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                        const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                        float* C, int64_t ldc);
  void LinearForwardBf16(const float* x, const float* w, float* y, int64_t M, int64_t K,
                         int64_t N) {
    GemmBf16(false, true, M, N, K, x, K, w, K, 0.0f, y, N);
  }
  void LinearBackwardInputBf16(const float* dy, const float* w, float* dx, int64_t M, int64_t K,
                               int64_t N, bool accumulate) {
    GemmBf16(false, false, M, K, N, dy, N, w, K, accumulate ? 1.0f : 0.0f, dx, K);
  }
  void LinearBackwardWeightBf16(const float* dy, const float* x, float* dw, int64_t M, int64_t K,
                                int64_t N) {
    GemmBf16(true, false, N, K, M, dy, N, x, K, 1.0f, dw, K);
  }
  // The grouped expert GEMMs below on BF16-rounded operands.
  virtual void GroupedLinearForwardBf16(const float* x, const float* w, float* y,
                                        const int32_t* offsets, int64_t rows, int64_t E, int64_t K,
                                        int64_t N);
  virtual void GroupedLinearBackwardInputBf16(const float* dy, const float* w, float* dx,
                                              const int32_t* offsets, int64_t rows, int64_t E,
                                              int64_t K, int64_t N, bool accumulate);

  // Weights kept in BF16 while they do not change (e.g. over an optimizer step's
  // micro-batches), so that the GEMMs above do not round them again on every call:
  // Bf16Weight(w [n]) is w rounded to BF16 as this backend's GEMMs read it (the default: the
  // rounded FP32 values; CUDA: BF16 bits), and each *Bf16 GEMM below takes such a copy `wb`
  // in place of w, with the same result.
  virtual Tensor Bf16Weight(const float* w, int64_t n);
  // GemmBf16 with B the kept copy `b` (its first element is B's).
  virtual void GemmBf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
                        int64_t lda, const Tensor& b, int64_t ldb, float beta, float* C,
                        int64_t ldc);
  void LinearForwardBf16(const float* x, const Tensor& wb, float* y, int64_t M, int64_t K,
                         int64_t N) {
    GemmBf16(false, true, M, N, K, x, K, wb, K, 0.0f, y, N);
  }
  void LinearBackwardInputBf16(const float* dy, const Tensor& wb, float* dx, int64_t M, int64_t K,
                               int64_t N, bool accumulate) {
    GemmBf16(false, false, M, K, N, dy, N, wb, K, accumulate ? 1.0f : 0.0f, dx, K);
  }
  virtual void GroupedLinearForwardBf16(const float* x, const Tensor& wb, float* y,
                                        const int32_t* offsets, int64_t rows, int64_t E, int64_t K,
                                        int64_t N);
  virtual void GroupedLinearBackwardInputBf16(const float* dy, const Tensor& wb, float* dx,
                                              const int32_t* offsets, int64_t rows, int64_t E,
                                              int64_t K, int64_t N, bool accumulate);
  virtual void GroupedLinearBackwardWeightBf16(const float* dy, const float* x, float* dw,
                                               const int32_t* offsets, int64_t rows, int64_t E,
                                               int64_t K, int64_t N);

  // ---- FP8 (training.precision fp8: DeepSeek-V3's recipe, trainer/precision.h) -----------
  // Primitives, each what kernels/quantize.h's function of the same name computes (the CPU
  // backend calls it; kernels/cuda/fp8_quant.h gives the same bytes). Every scale is rounded
  // up to a power of two, the recipe's round scaling. Tensors of the results live on this
  // device.
  // x [M, K] -> E4M3 codes with one scale per 1x128 tile along K.
  virtual QuantizedActivation QuantizeFp8(const float* x, int64_t M, int64_t K) = 0;
  virtual void DequantizeFp8(const QuantizedActivation& q, float* x) = 0;  // x [M, K]
  // The 1x128 tiles of X^T [K, M] from those of X (re-quantising the dequantised values).
  virtual QuantizedActivation RetileTransposedFp8(const QuantizedActivation& q) = 0;
  // w [N, K] -> E4M3 codes with one scale per 128x128 block; W^T's blocks (exact).
  virtual QuantizedWeight QuantizeWeightFp8(const float* w, int64_t N, int64_t K) = 0;
  virtual QuantizedWeight TransposeWeightFp8(const QuantizedWeight& w) = 0;
  // y [M, N] = a [M, K] w [N, K]^T with FP32 promotion per 128-wide chunk (Fp8Gemm), and the
  // same with both operands tiled along K (Fp8GemmTokenTiled, the Wgrad GEMM). Overwrite y.
  virtual void Fp8Gemm(const QuantizedActivation& a, const QuantizedWeight& w, float* y) = 0;
  virtual void Fp8GemmTokenTiled(const QuantizedActivation& a, const QuantizedActivation& b,
                                 float* y) = 0;
  // y [cols, rows] = x [rows, cols]^T
  virtual void Transpose(const float* x, float* y, int64_t rows, int64_t cols) = 0;
  // y [M, K] = x rounded to E5M6 with power-of-two 1x128 scales along K (RoundE5M6Tiles;
  // the recipe's cache of the attention output). In place allowed.
  virtual void RoundE5M6(const float* x, float* y, int64_t M, int64_t K) = 0;
  // The norm before an FP8 GEMM: QuantizeFp8 of RmsNormForward's y [rows, C] (same codes
  // and scales), with its rstd [rows]. The default runs the two; CUDA fuses them and never
  // writes y to memory.
  virtual QuantizedActivation RmsNormQuantizeFp8(const float* x, const float* w, float* rstd,
                                                 int64_t rows, int64_t C, double eps);

  // The FP8 Linear GEMMs, composed from the primitives in trainer/precision.cc's order
  // (backend.cc), so every backend runs the recipe's steps:
  // y [M, N] = x W^T, x quantised (the Fprop's E4M3 operand, kept for Wgrad).
  void Fp8LinearForward(const QuantizedActivation& x, const float* w, float* y, int64_t N);
  // The same with W already quantised (QuantizeWeightFp8): a copy a caller keeps while the
  // weights do not change, e.g. over an optimizer step's micro-batches.
  void Fp8LinearForward(const QuantizedActivation& x, const QuantizedWeight& w, float* y) {
    Fp8Gemm(x, w, y);
  }
  // dx [M, K] (+)= Q(dy) Q(W^T): dy tiled along N, W's 128x128 blocks transposed.
  void Fp8LinearBackwardInput(const float* dy, const float* w, float* dx, int64_t M, int64_t K,
                              int64_t N, bool accumulate);
  // The same with W^T's blocks wt [K, N] given (TransposeWeightFp8 of a kept copy).
  void Fp8LinearBackwardInput(const float* dy, const QuantizedWeight& wt, float* dx, int64_t M,
                              bool accumulate);
  // dW [N, K] += Q(dy^T) Q(x^T), both tiled along the M tokens; x^T re-tiled from the
  // cached E4M3 operand `xq`, or (xq null) quantised from the FP32 values x [M, K].
  void Fp8LinearBackwardWeight(const float* dy, const QuantizedActivation* xq, const float* x,
                               float* dw, int64_t M, int64_t K, int64_t N);
  // The same per expert over the permuted rows: rows [offsets[e], offsets[e+1]) of x (xq)
  // and dy with W_e of w [E, N, K]. Tiles along tokens restart at each expert's first row,
  // as each expert's own GEMM has them. The defaults read the offsets back to the host (one
  // synchronisation per call) and loop over the experts; a backend may override them with
  // grouped kernels on the device offsets (CUDA: grouped_gemm_fp8.cu, whose Wgrad re-tiles
  // its operands along each expert's tokens first).
  // The experts' weights w [E, N, K] quantised each on its own grid (QuantizedExperts), for
  // the two GEMMs that read them; a caller may keep the result while the weights do not
  // change. The default quantises expert by expert.
  virtual QuantizedExperts QuantizeExpertsFp8(const float* w, int64_t E, int64_t N, int64_t K);
  virtual void GroupedFp8Forward(const QuantizedActivation& x, const QuantizedExperts& w, float* y,
                                 const int32_t* offsets);
  // dx [rows, K] (+)= per expert Q(dy_e) Q(W_e^T).
  virtual void GroupedFp8BackwardInput(const float* dy, const QuantizedExperts& w, float* dx,
                                       const int32_t* offsets, int64_t rows, bool accumulate);
  void GroupedFp8Forward(const QuantizedActivation& x, const float* w, float* y,
                         const int32_t* offsets, int64_t E, int64_t N) {
    GroupedFp8Forward(x, QuantizeExpertsFp8(w, E, N, x.cols), y, offsets);
  }
  void GroupedFp8BackwardInput(const float* dy, const float* w, float* dx, const int32_t* offsets,
                               int64_t rows, int64_t E, int64_t K, int64_t N, bool accumulate) {
    GroupedFp8BackwardInput(dy, QuantizeExpertsFp8(w, E, N, K), dx, offsets, rows, accumulate);
  }
  virtual void GroupedFp8BackwardWeight(const float* dy, const QuantizedActivation* xq,
                                        const float* x, float* dw, const int32_t* offsets,
                                        int64_t rows, int64_t E, int64_t K, int64_t N);

  // ---- MoE ------------------------------------------------------------------------------
  // logits [T,E] -> scores [T,E] = sigmoid(logits) (in place allowed), topk [T,K] chosen on
  // score + bias (group-limited, ties to the lower index), weight [T,K] gate weights from
  // the unbiased scores, load [E] (I64) += the valid positions' choices.
  virtual void RouterForward(const float* logits, const float* bias, float* scores, int32_t* topk,
                             float* weight, int64_t* load, const RouteShape& shape) = 0;
  // The sequence-wise balance loss of eqs. 17-20 over the valid positions: f [B,E] (F64,
  // overwritten) = E/(K valid) x the choices per sequence; *loss (F64) += mean over the B
  // sequences of sum_e f_e P_e, P_e = mean over valid positions of score_e / sum of scores.
  virtual void BalanceForward(const float* scores, const int32_t* topk, double* f, double* loss,
                              const RouteShape& shape) = 0;
  // d_logits [T,E] (overwritten) from d loss / d gate weight dweight [T,K] (F64) through the
  // top-k normalisation and scaling, plus balance_scale x d(balance loss) (f from
  // BalanceForward), through the sigmoid.
  virtual void RouterBackward(const float* scores, const int32_t* topk, const double* dweight,
                              const double* f, double balance_scale, float* d_logits,
                              const RouteShape& shape) = 0;
  // topk [T,K] -> plan: slots ordered by expert, then by slot (stable).
  virtual void MoePlanBuild(const int32_t* topk, int64_t T, int64_t K, int64_t E,
                            const MoeRoutingPlan& plan) = 0;
  // xp [T*K, H] row p = x [T,H] row src_token[p].
  virtual void PermuteRows(const float* x, float* xp, const int32_t* src_token, int64_t P,
                           int64_t H) = 0;
  // y [T,H] += sum over k of weight[t,k] ye [T*K,H] row slot_pos[t*K+k], experts ascending.
  virtual void Combine(const float* ye, const float* weight, const int32_t* slot_pos, float* y,
                       int64_t T, int64_t K, int64_t H) = 0;
  // Per slot s of token t = s / K: dye row slot_pos[s] = weight[s] dy row t (overwritten),
  // dweight[s] (F64) = <dy row t, ye row slot_pos[s]>.
  virtual void CombineBackward(const float* dy, const float* ye, const float* weight,
                               const int32_t* slot_pos, float* dye, double* dweight, int64_t T,
                               int64_t K, int64_t H) = 0;
  // dx [T,H] += sum over k of dxp row slot_pos[t*K+k], experts ascending.
  virtual void UnpermuteAdd(const float* dxp, const int32_t* slot_pos, float* dx, int64_t T,
                            int64_t K, int64_t H) = 0;
  // y [segments,H] row s (overwritten) = sum over j in [offsets[s], offsets[s+1]) ascending
  // of x row rows[j], from zero. Expert parallelism's order of the same sums as UnpermuteAdd
  // takes two of these (trainer/device_moe_ep_plan.h): each expert rank sums a token's slots
  // in k order, the token's rank sums those over the ranks ascending, as the CPU path's
  // dispatcher does (parallel/expert_dispatch.h DispatchBackward).
  virtual void SegmentSumRows(const float* x, const int32_t* offsets, const int32_t* rows, float* y,
                              int64_t segments, int64_t H) = 0;
  // y [n, row_bytes] row i = x row src[i], rows of any dtype copied as bytes (row_bytes a
  // multiple of 4): PermuteRows for FP8 codes and FP32 rows alike.
  virtual void GatherRows(const void* x, void* y, const int32_t* src, int64_t n,
                          int64_t row_bytes) = 0;
  // Expert e's rows [offsets[e], offsets[e+1]) of the permuted x [rows,K] times its weight
  // W_e [N,K] (w [E,N,K] stacked): y [rows,N] = x_e W_e^T; offsets stay on the device.
  virtual void GroupedLinearForward(const float* x, const float* w, float* y,
                                    const int32_t* offsets, int64_t rows, int64_t E, int64_t K,
                                    int64_t N) = 0;
  // dx_e [rows_e, K] (+)= dy_e [rows_e, N] W_e.
  virtual void GroupedLinearBackwardInput(const float* dy, const float* w, float* dx,
                                          const int32_t* offsets, int64_t rows, int64_t E,
                                          int64_t K, int64_t N, bool accumulate) = 0;
  // dW_e [N,K] += dy_e^T x_e.
  virtual void GroupedLinearBackwardWeight(const float* dy, const float* x, float* dw,
                                           const int32_t* offsets, int64_t rows, int64_t E,
                                           int64_t K, int64_t N) = 0;

  // ---- optimizer ------------------------------------------------------------------------
  // *sum_sq (F64) += sum of g[i]^2 in double.
  virtual void SumSquares(const float* g, int64_t n, double* sum_sq) = 0;
  // The same over g[offset, offset + n) for each (offset, n) of `ranges`: the default sums
  // each range on its own and adds the sums in the ranges' order, which is AdamW::GradNorm's
  // order over its parameters (the CPU backend's bit-identity needs it); a GPU backend may
  // fold ranges that touch into one pass.
  virtual void SumSquaresRanges(const float* g,
                                const std::vector<std::pair<int64_t, int64_t>>& ranges,
                                double* sum_sq);
  virtual void Scale(float* g, int64_t n, float scale) = 0;
  // AdamW with fp32 moments m, v [n] (trainer/optimizer.cc's update, in double).
  virtual void AdamW(float* w, const float* g, float* m, float* v, int64_t n, bool decay,
                     const AdamStepCoeffs& c) = 0;
  // The same with the moments stored as BF16 bit patterns (optimizer.moment_dtype bf16,
  // DeepSeek-V3's choice): read widened, updated in double, rounded to nearest even.
  virtual void AdamWBf16Moments(float* w, const float* g, uint16_t* m, uint16_t* v, int64_t n,
                                bool decay, const AdamStepCoeffs& c) = 0;
};

}  // namespace mt

// trainer/precision.h: the compute precision of a run (training.precision) and what it means
// for every GEMM and for every activation the model keeps for backward.
//
// fp32  The CPU reference: every op in the model's element type, exactly as before.
// bf16  Every GEMM operand is rounded to BF16 (round to nearest even, CUDA's
//       __float2bfloat16_rn), products accumulate in FP32; activations kept for Wgrad and
//       the SwiGLU inputs are stored as BF16.
// fp8   DeepSeek-V3's recipe (mission.md 1.4, report 3.3). The Fprop (y = x W^T), Dgrad
//       (dx = dy W) and Wgrad (dW += dy^T x) GEMMs of every Linear (attention projections,
//       dense MLPs, shared and routed experts, MTP eh_proj) take E4M3 operands and accumulate
//       in FP32 with promotion every 128 products (kernels/quantize.h): activations and
//       output gradients scaled per 1x128 tile along the GEMM's inner dimension (for Wgrad
//       that is the token dimension, so dy^T and x^T are tiled along tokens: the "128x1"
//       tiles), weights per 128x128 block. Every scale is max-abs / 448 rounded up to a power
//       of two, the recipe's "round scaling", which makes the 1x128 -> 128x1 re-tiling of a
//       cached activation exact for every element that stays in E4M3's normal range.
//       The embedding, the head, the router and the attention core are the recipe's BF16
//       GEMMs: operands rounded to BF16, FP32 accumulation, FP32 softmax. Norms, SwiGLU,
//       RoPE and the residual stream compute in FP32 (as fused GPU kernels do in registers).
//
// Activations cached for backward (what a micro-batch holds between its forward and its
// backward; Model::activation_bytes() measures it):
//   * the input of every Linear, for its Wgrad: the Fprop's own E4M3 operand in fp8 (codes
//     plus 1x128 scales, re-tiled to 128x1 for Wgrad), BF16 in bf16;
//   * except the attention output (o_proj's input): the recipe keeps it in a custom E5M6
//     format with power-of-two 1x128 scales because its attention kernel's backward also
//     reads it; fp8 rounds it so (kernels/e5m6.h) and holds the values in BF16 storage,
//     where they are exact (16 bits for E5M6's 12: the values of E5M6, not its size). Its
//     Fprop still quantises the FP32 values to E4M3, and its Wgrad re-quantises the E5M6
//     values to E4M3 in 128x1 tiles;
//   * the SwiGLU inputs (gate and up outputs) of every SwiGLU block, routed and shared
//     experts as the recipe says and the dense MLP likewise: E4M3 in fp8, BF16 in bf16. The
//     SwiGLU output (down_proj's input) is not kept: backward recomputes it from the cached
//     inputs, as DeepSeek-V3 does;
//   * the router input, for the router's Wgrad: BF16 in bf16 and fp8 (the router is a BF16
//     GEMM).
// Everything else a Saved struct holds (norm inputs, q/k/v after RoPE and the attention
// probabilities, router scores, expert outputs for the combine backward) stays in the
// model's element type; on a GPU those would be BF16 tensors too.
//
// The emulation is float-only: the double build (MT_REAL_F64, gradient checks) accepts fp32
// alone.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_set>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/quantize.h"
#include "trainer/real.h"

namespace mt {
inline namespace MT_REAL_NS {

enum class Precision : uint8_t { kFp32, kBf16, kFp8 };

// "fp32" | "bf16" | "fp8" (training.precision).
absl::StatusOr<Precision> ParsePrecision(const std::string& name);
const char* PrecisionName(Precision p);

// An activation [rows, cols] held for backward in one of three storage formats.
class StoredActivation {
 public:
  enum class Format : uint8_t { kNone, kExact, kBf16, kE4M3 };

  StoredActivation() = default;
  // Shares x's buffer (no copy).
  static StoredActivation Exact(const Tensor& x);
  // x [rows, cols] rounded to BF16, stored as 16-bit codes.
  static StoredActivation Bf16(const Tensor& x);
  // x [rows, cols] as E4M3 with power-of-two 1x128 scales along cols (QuantizeActivation).
  static StoredActivation E4M3(const Tensor& x);
  // An activation quantised elsewhere, e.g. by another rank before the FP8 expert dispatch;
  // it must come from E4M3() (or hold exactly what E4M3() gives) to mean the same thing.
  static StoredActivation FromE4M3(QuantizedActivation q);
  // [rows, cols] kBF16 codes, as Bf16() stores them (e.g. received from the BF16 combine).
  static StoredActivation FromBf16Codes(Tensor codes);

  Format format() const { return format_; }
  bool defined() const { return format_ != Format::kNone; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  // [rows, cols] in the model's element type: the tensor itself for kExact, decoded (and
  // for kE4M3 dequantised) otherwise.
  Tensor Values() const;
  const QuantizedActivation& e4m3() const { return q_; }  // kE4M3 only
  const Tensor& bf16_codes() const { return data_; }      // kBf16 only: [rows, cols] kBF16
  // Bytes held: the tensor, or codes plus scales.
  int64_t bytes() const;
  // The buffer behind a kExact activation (so a buffer shared with a tensor is counted once).
  const void* buffer() const { return format_ == Format::kExact ? data_.raw() : nullptr; }

 private:
  Format format_ = Format::kNone;
  int64_t rows_ = 0, cols_ = 0;
  Tensor data_;            // kExact: [rows, cols] kRealDType; kBf16: [rows, cols] kBF16 codes
  QuantizedActivation q_;  // kE4M3
};

// The arithmetic of one precision mode. One instance per model; every Linear, the router,
// the head and the attention core consult it.
class PrecisionPolicy {
 public:
  explicit PrecisionPolicy(Precision p = Precision::kFp32);
  // The fp32 policy, for modules built without one.
  static const PrecisionPolicy& Exact();

  Precision precision() const { return p_; }
  bool exact() const { return p_ == Precision::kFp32; }

  // ---- What is kept for backward (see the header comment).
  // A Linear input for its Wgrad; in fp8 this is also the Fprop operand.
  StoredActivation StoreLinearInput(const Tensor& x) const;
  // The attention output (o_proj's input): BF16 in bf16, E5M6 values (in BF16 storage) in fp8.
  StoredActivation StoreAttentionOutput(const Tensor& x) const;
  // A SwiGLU input (gate or up output).
  StoredActivation StoreSwigluInput(const Tensor& x) const;
  // Whether backward recomputes the SwiGLU output instead of keeping it (bf16 and fp8).
  bool recompute_swiglu() const { return !exact(); }
  // An operand of a BF16 GEMM (router input): BF16 in bf16 and fp8.
  StoredActivation StoreBf16Operand(const Tensor& x) const;

  // ---- Expert parallelism (DeepSeek-V3 §3.3.2 "low-precision communication"; docs/fp8.md).
  // fp8: tokens cross the EP dispatch as the routed experts' gate/up operand (StoreLinearInput:
  // E4M3 codes plus 1x128 scales, quantised once per token by its own rank), and the experts
  // consume them without re-quantising. Other modes send the FP32 rows.
  bool quantized_dispatch() const { return p_ == Precision::kFp8; }
  // fp8: every routed expert's output is rounded to BF16, the combine's wire format, on every
  // layout (with EP it crosses the combine as BF16 codes), so a single process computes what
  // an EP layout computes. Other modes keep it in the model's element type.
  bool bf16_expert_outputs() const { return p_ == Precision::kFp8; }

  // ---- Linear GEMMs: E4M3 in fp8, BF16 operands in bf16, ops:: in fp32.
  // y[T,out] = x[T,in] W[out,in]^T
  void LinearForward(const StoredActivation& x, const Real* w, Real* y, int64_t T, int64_t in,
                     int64_t out) const;
  // dx[T,in] (+)= dy[T,out] W[out,in]
  void LinearBackwardInput(const Real* dy, const Real* w, Real* dx, int64_t T, int64_t in,
                           int64_t out, bool accumulate) const;
  // dW[out,in] += dy[T,out]^T x[T,in]
  void LinearBackwardWeight(const Real* dy, const StoredActivation& x, Real* dw, int64_t T,
                            int64_t in, int64_t out) const;

  // ---- The recipe's BF16 GEMMs (router, head): operands rounded to BF16 in bf16 and fp8.
  // Same shapes as the Linear GEMMs above.
  void Bf16LinearForward(const StoredActivation& x, const Real* w, Real* y, int64_t T, int64_t in,
                         int64_t out) const;
  void Bf16LinearBackwardInput(const Real* dy, const Real* w, Real* dx, int64_t T, int64_t in,
                               int64_t out, bool accumulate) const;
  void Bf16LinearBackwardWeight(const Real* dy, const StoredActivation& x, Real* dw, int64_t T,
                                int64_t in, int64_t out) const;
  // x itself in fp32; a BF16-rounded copy otherwise (for operands reused across GEMMs).
  Tensor Bf16Operand(const Tensor& x) const;
  // Rounds x[n] to BF16 in place in bf16 and fp8 (attention-core operands, the embedding's
  // output, the head's output gradient); nothing in fp32.
  void RoundToBf16(Real* x, int64_t n) const;
  void RoundToBf16(Tensor* x) const { RoundToBf16(x->data<Real>(), x->numel()); }

 private:
  Precision p_;
};

// Bytes held by a set of tensors and stored activations, each buffer counted once (a
// tensor and a view or an exact StoredActivation of it share one).
class ActivationCounter {
 public:
  void Add(const Tensor& t);
  void Add(const StoredActivation& a);
  template <typename T>
  void Add(const std::vector<T>& v) {
    total_ += static_cast<int64_t>(v.size() * sizeof(T));
  }
  template <typename T>
  void Add(const std::vector<std::vector<T>>& v) {
    for (const auto& x : v) Add(x);
  }
  int64_t total() const { return total_; }

 private:
  std::unordered_set<const void*> seen_;
  int64_t total_ = 0;
};


}  // namespace MT_REAL_NS
}  // namespace mt

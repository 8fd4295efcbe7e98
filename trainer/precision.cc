// trainer/precision.cc: the fp32 / bf16 / fp8 GEMM paths and activation storage formats.
//
// The low-precision paths are written for float. The double build compiles them as
// templates that are never instantiated for double: its policy refuses anything but fp32.
#include "trainer/precision.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/bf16.h"
#include "kernels/fp8.h"
#include "kernels/ops.h"
#include "kernels/status.h"

namespace mt {
inline namespace MT_REAL_NS {
namespace {

// The recipe's round scaling, for every operand (see precision.h).
constexpr QuantizeOptions kScales{/*pow2_scales=*/true};

template <typename T>
constexpr bool kFloat = std::is_same_v<T, float>;

[[noreturn]] void NoEmulation() {
  MT_CHECK(false, "bf16/fp8 emulation runs in the float build only");
  __builtin_unreachable();
}

// y [n] = BF16 rounding of x [n].
void RoundBf16(const float* x, float* y, int64_t n) {
  std::vector<uint16_t> codes(static_cast<size_t>(n));
  FloatsToBf16(x, codes.data(), n);
  Bf16ToFloats(codes.data(), y, n);
}

std::vector<float> Bf16Copy(const float* x, int64_t n) {
  std::vector<float> y(static_cast<size_t>(n));
  RoundBf16(x, y.data(), n);
  return y;
}

// y [cols, rows] = x [rows, cols]^T
std::vector<float> Transpose(const float* x, int64_t rows, int64_t cols) {
  std::vector<float> y(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) y[c * rows + r] = x[r * cols + c];
  return y;
}

// The values of x as BF16-rounded floats [rows * cols] (already exact for kBf16).
std::vector<float> Bf16Values(const StoredActivation& x) {
  const Tensor v = x.Values();
  const float* p = v.data<float>();
  if (x.format() == StoredActivation::Format::kBf16) return {p, p + v.numel()};
  return Bf16Copy(p, v.numel());
}

// y [n] (+)= t [n] (unused in the double build, whose templates never reach it)
[[maybe_unused]] void Store(const float* t, float* y, int64_t n, bool accumulate) {
  if (accumulate) {
    for (int64_t i = 0; i < n; ++i) y[i] += t[i];
  } else {
    std::memcpy(y, t, static_cast<size_t>(n) * sizeof(float));
  }
}

// ---- fp8 --------------------------------------------------------------------------------

template <typename T>
void Fp8Forward(const StoredActivation& x, const T* w, T* y, int64_t M, int64_t K, int64_t N) {
  if constexpr (!kFloat<T>) {
    NoEmulation();
  } else {
    const QuantizedWeight qw = QuantizeWeight(w, N, K, kScales);
    if (x.format() == StoredActivation::Format::kE4M3) {
      Fp8Gemm(x.e4m3(), qw, y);
    } else {
      const Tensor v = x.Values();
      Fp8Gemm(QuantizeActivation(v.data<float>(), M, K, kScales), qw, y);
    }
  }
}

// dx [M, K] (+)= dy [M, N] W [N, K]: dy tiled along N, W^T's 128x128 blocks (exact transpose).
template <typename T>
void Fp8BackwardInput(const T* dy, const T* w, T* dx, int64_t M, int64_t K, int64_t N,
                      bool accumulate) {
  if constexpr (!kFloat<T>) {
    NoEmulation();
  } else {
    const QuantizedActivation qdy = QuantizeActivation(dy, M, N, kScales);
    const QuantizedWeight qwt = TransposeWeight(QuantizeWeight(w, N, K, kScales));  // [K, N]
    std::vector<float> t(static_cast<size_t>(M * K));
    Fp8Gemm(qdy, qwt, t.data());
    Store(t.data(), dx, M * K, accumulate);
  }
}

// dW [N, K] += dy [M, N]^T x [M, K]: both operands tiled along the M tokens.
template <typename T>
void Fp8BackwardWeight(const T* dy, const StoredActivation& x, T* dw, int64_t M, int64_t K,
                       int64_t N) {
  if constexpr (!kFloat<T>) {
    NoEmulation();
  } else {
    const std::vector<float> dyt = Transpose(dy, M, N);  // [N, M]
    const QuantizedActivation qa = QuantizeActivation(dyt.data(), N, M, kScales);
    QuantizedActivation qb;  // x^T [K, M]
    if (x.format() == StoredActivation::Format::kE4M3) {
      qb = RetileTransposed(x.e4m3(), kScales);  // the cached FP8 copy, 1x128 -> 128x1
    } else {
      const Tensor v = x.Values();
      const std::vector<float> xt = Transpose(v.data<float>(), M, K);
      qb = QuantizeActivation(xt.data(), K, M, kScales);
    }
    std::vector<float> t(static_cast<size_t>(N * K));
    Fp8GemmTokenTiled(qa, qb, t.data());
    Store(t.data(), dw, N * K, /*accumulate=*/true);
  }
}

// ---- bf16 -------------------------------------------------------------------------------

template <typename T>
void Bf16Forward(const StoredActivation& x, const T* w, T* y, int64_t M, int64_t K, int64_t N) {
  if constexpr (!kFloat<T>) {
    NoEmulation();
  } else {
    const std::vector<float> xb = Bf16Values(x), wb = Bf16Copy(w, N * K);
    ops::LinearForward(xb.data(), wb.data(), y, M, K, N);
  }
}

template <typename T>
void Bf16BackwardInput(const T* dy, const T* w, T* dx, int64_t M, int64_t K, int64_t N,
                       bool accumulate) {
  if constexpr (!kFloat<T>) {
    NoEmulation();
  } else {
    const std::vector<float> dyb = Bf16Copy(dy, M * N), wb = Bf16Copy(w, N * K);
    ops::LinearBackwardInput(dyb.data(), wb.data(), dx, M, K, N, accumulate);
  }
}

template <typename T>
void Bf16BackwardWeight(const T* dy, const StoredActivation& x, T* dw, int64_t M, int64_t K,
                        int64_t N) {
  if constexpr (!kFloat<T>) {
    NoEmulation();
  } else {
    const std::vector<float> dyb = Bf16Copy(dy, M * N), xb = Bf16Values(x);
    ops::LinearBackwardWeight(dyb.data(), xb.data(), dw, M, K, N);
  }
}

template <typename T>
void RoundInPlace(T* x, int64_t n) {
  if constexpr (!kFloat<T>) {
    NoEmulation();
  } else {
    RoundBf16(x, x, n);
  }
}

}  // namespace

absl::StatusOr<Precision> ParsePrecision(const std::string& name) {
  if (name == "fp32") return Precision::kFp32;
  if (name == "bf16") return Precision::kBf16;
  if (name == "fp8") return Precision::kFp8;
  return absl::InvalidArgumentError(
      absl::StrCat("training.precision: expected fp32, bf16 or fp8, got '", name, "'"));
}

const char* PrecisionName(Precision p) {
  switch (p) {
    case Precision::kFp32:
      return "fp32";
    case Precision::kBf16:
      return "bf16";
    case Precision::kFp8:
      return "fp8";
  }
  return "?";
}

// ---- StoredActivation -------------------------------------------------------------------

namespace {
// The width of x seen as [rows, cols]; taken from the shape, so that an empty [0, H] matrix
// (a rank with no tokens for an expert) keeps its width.
int64_t Cols(const Tensor& x) {
  return x.ndim() == 2 ? x.dim(1) : x.numel() / std::max<int64_t>(x.dim(0), 1);
}
}  // namespace

StoredActivation StoredActivation::Exact(const Tensor& x) {
  StoredActivation a;
  a.format_ = Format::kExact;
  a.rows_ = x.dim(0);
  a.cols_ = Cols(x);
  a.data_ = x;
  return a;
}

StoredActivation StoredActivation::Bf16(const Tensor& x) {
  StoredActivation a;
  a.format_ = Format::kBf16;
  a.rows_ = x.dim(0);
  a.cols_ = Cols(x);
  a.data_ = Tensor({a.rows_, a.cols_}, DType::kBF16);
  FloatsToBf16(x.data<float>(), static_cast<uint16_t*>(a.data_.raw()), x.numel());
  return a;
}

StoredActivation StoredActivation::E4M3(const Tensor& x) {
  StoredActivation a;
  a.format_ = Format::kE4M3;
  a.rows_ = x.dim(0);
  a.cols_ = Cols(x);
  a.q_ = QuantizeActivation(x.data<float>(), a.rows_, a.cols_, kScales);
  return a;
}

StoredActivation StoredActivation::FromE4M3(QuantizedActivation q) {
  StoredActivation a;
  a.format_ = Format::kE4M3;
  a.rows_ = q.rows;
  a.cols_ = q.cols;
  a.q_ = std::move(q);
  return a;
}

StoredActivation StoredActivation::FromBf16Codes(Tensor codes) {
  MT_CHECK(codes.dtype() == DType::kBF16 && codes.ndim() == 2,
           "StoredActivation::FromBf16Codes: expected BF16 [rows, cols], got ",
           ShapeString(codes.shape()), " ", DTypeName(codes.dtype()));
  StoredActivation a;
  a.format_ = Format::kBf16;
  a.rows_ = codes.dim(0);
  a.cols_ = codes.dim(1);
  a.data_ = std::move(codes);
  return a;
}

Tensor StoredActivation::Values() const {
  switch (format_) {
    case Format::kNone:
      break;
    case Format::kExact:
      return data_;
    case Format::kBf16: {
      Tensor v({rows_, cols_}, DType::kF32);
      Bf16ToFloats(static_cast<const uint16_t*>(data_.raw()), v.data<float>(), v.numel());
      return v.dtype() == kRealDType ? v : v.To(kRealDType);
    }
    case Format::kE4M3: {
      Tensor v({rows_, cols_}, DType::kF32);
      DequantizeActivation(q_, v.data<float>());
      return v.dtype() == kRealDType ? v : v.To(kRealDType);
    }
  }
  MT_CHECK(false, "StoredActivation::Values on an empty activation");
  return Tensor();
}

int64_t StoredActivation::bytes() const {
  switch (format_) {
    case Format::kNone:
      return 0;
    case Format::kExact:
    case Format::kBf16:
      return static_cast<int64_t>(data_.nbytes());
    case Format::kE4M3:
      return static_cast<int64_t>(q_.data.nbytes() + q_.scales.nbytes());
  }
  return 0;
}

// ---- PrecisionPolicy --------------------------------------------------------------------

PrecisionPolicy::PrecisionPolicy(Precision p) : p_(p) {
  MT_CHECK(kFloat<Real> || p == Precision::kFp32,
           "bf16/fp8 emulation runs in the float build only, not with MT_REAL_F64");
}

const PrecisionPolicy& PrecisionPolicy::Exact() {
  static const PrecisionPolicy exact(Precision::kFp32);
  return exact;
}

StoredActivation PrecisionPolicy::StoreLinearInput(const Tensor& x) const {
  switch (p_) {
    case Precision::kFp32:
      return StoredActivation::Exact(x);
    case Precision::kBf16:
      return StoredActivation::Bf16(x);
    case Precision::kFp8:
      return StoredActivation::E4M3(x);
  }
  return {};
}

StoredActivation PrecisionPolicy::StoreAttentionOutput(const Tensor& x) const {
  if (p_ != Precision::kFp8) return StoreBf16Operand(x);
  // E5M6 with power-of-two 1x128 scales: exact in BF16, so BF16 storage keeps it unchanged.
  Tensor r(x.shape(), DType::kF32);
  RoundE5M6Tiles(x.data<float>(), r.data<float>(), x.numel() / x.shape().back(), x.shape().back());
  return StoredActivation::Bf16(r);
}

StoredActivation PrecisionPolicy::StoreSwigluInput(const Tensor& x) const {
  return StoreLinearInput(x);
}

StoredActivation PrecisionPolicy::StoreBf16Operand(const Tensor& x) const {
  return exact() ? StoredActivation::Exact(x) : StoredActivation::Bf16(x);
}

void PrecisionPolicy::LinearForward(const StoredActivation& x, const Real* w, Real* y, int64_t T,
                                    int64_t in, int64_t out) const {
  switch (p_) {
    case Precision::kFp32:
      ops::LinearForward(x.Values().data<Real>(), w, y, T, in, out);
      return;
    case Precision::kBf16:
      return Bf16Forward(x, w, y, T, in, out);
    case Precision::kFp8:
      return Fp8Forward(x, w, y, T, in, out);
  }
}

void PrecisionPolicy::LinearBackwardInput(const Real* dy, const Real* w, Real* dx, int64_t T,
                                          int64_t in, int64_t out, bool accumulate) const {
  switch (p_) {
    case Precision::kFp32:
      ops::LinearBackwardInput(dy, w, dx, T, in, out, accumulate);
      return;
    case Precision::kBf16:
      return Bf16BackwardInput(dy, w, dx, T, in, out, accumulate);
    case Precision::kFp8:
      return Fp8BackwardInput(dy, w, dx, T, in, out, accumulate);
  }
}

void PrecisionPolicy::LinearBackwardWeight(const Real* dy, const StoredActivation& x, Real* dw,
                                           int64_t T, int64_t in, int64_t out) const {
  switch (p_) {
    case Precision::kFp32:
      ops::LinearBackwardWeight(dy, x.Values().data<Real>(), dw, T, in, out);
      return;
    case Precision::kBf16:
      return Bf16BackwardWeight(dy, x, dw, T, in, out);
    case Precision::kFp8:
      return Fp8BackwardWeight(dy, x, dw, T, in, out);
  }
}

void PrecisionPolicy::Bf16LinearForward(const StoredActivation& x, const Real* w, Real* y,
                                        int64_t T, int64_t in, int64_t out) const {
  if (exact()) return ops::LinearForward(x.Values().data<Real>(), w, y, T, in, out);
  Bf16Forward(x, w, y, T, in, out);
}

void PrecisionPolicy::Bf16LinearBackwardInput(const Real* dy, const Real* w, Real* dx, int64_t T,
                                              int64_t in, int64_t out, bool accumulate) const {
  if (exact()) return ops::LinearBackwardInput(dy, w, dx, T, in, out, accumulate);
  Bf16BackwardInput(dy, w, dx, T, in, out, accumulate);
}

void PrecisionPolicy::Bf16LinearBackwardWeight(const Real* dy, const StoredActivation& x, Real* dw,
                                               int64_t T, int64_t in, int64_t out) const {
  if (exact()) return ops::LinearBackwardWeight(dy, x.Values().data<Real>(), dw, T, in, out);
  Bf16BackwardWeight(dy, x, dw, T, in, out);
}

Tensor PrecisionPolicy::Bf16Operand(const Tensor& x) const {
  if (exact()) return x;
  Tensor y = x.Clone();
  RoundToBf16(&y);
  return y;
}

void PrecisionPolicy::RoundToBf16(Real* x, int64_t n) const {
  if (!exact()) RoundInPlace(x, n);
}

// ---- ActivationCounter ------------------------------------------------------------------

void ActivationCounter::Add(const Tensor& t) {
  if (!t.defined() || !seen_.insert(t.raw()).second) return;
  total_ += static_cast<int64_t>(t.nbytes());
}

void ActivationCounter::Add(const StoredActivation& a) {
  if (!a.defined()) return;
  if (a.buffer() != nullptr && !seen_.insert(a.buffer()).second) return;
  total_ += a.bytes();
}

}  // namespace MT_REAL_NS
}  // namespace mt

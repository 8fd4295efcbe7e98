// trainer/layers.h: the two building blocks every module is made of: a bias-free Linear
// and an RMSNorm, each a thin owner of its parameters over the ops in kernels/ops.h.
//
// Backward is split the way zero-bubble schedules and DualPipe need it: BackwardInput
// gives dX now, BackwardWeight accumulates dW later from the (x, dy) pair the caller kept.
#pragma once

#include <string>

#include "kernels/ops.h"
#include "trainer/params.h"

namespace mt {
inline namespace MT_REAL_NS {

inline Tensor NewMatrix(int64_t rows, int64_t cols) { return Tensor({rows, cols}, kRealDType); }

class Linear {
 public:
  Linear() = default;
  Linear(ParamStore& ps, const std::string& name, int64_t in, int64_t out, bool expert = false)
      : w_(ps.Add(name, {out, in}, Init::kNormal, expert)), in_(in), out_(out) {}

  int64_t in() const { return in_; }
  int64_t out() const { return out_; }
  Param* weight() const { return w_; }

  // y[T,out] = x[T,in] W^T
  void Forward(const Real* x, Real* y, int64_t T) const {
    ops::LinearForward(x, w_->value.data<Real>(), y, T, in_, out_);
  }
  Tensor Forward(const Tensor& x) const {
    Tensor y = NewMatrix(x.dim(0), out_);
    Forward(x.data<Real>(), y.data<Real>(), x.dim(0));
    return y;
  }
  // dx[T,in] (+)= dy[T,out] W
  void BackwardInput(const Real* dy, Real* dx, int64_t T, bool accumulate) const {
    ops::LinearBackwardInput(dy, w_->value.data<Real>(), dx, T, in_, out_, accumulate);
  }
  Tensor BackwardInput(const Tensor& dy) const {
    Tensor dx = NewMatrix(dy.dim(0), in_);
    BackwardInput(dy.data<Real>(), dx.data<Real>(), dy.dim(0), false);
    return dx;
  }
  // dW[out,in] += dy[T,out]^T x[T,in]
  void BackwardWeight(const Real* dy, const Real* x, int64_t T) const {
    ops::LinearBackwardWeight(dy, x, w_->grad.data<Real>(), T, in_, out_);
  }
  void BackwardWeight(const Tensor& dy, const Tensor& x) const {
    BackwardWeight(dy.data<Real>(), x.data<Real>(), dy.dim(0));
  }

 private:
  Param* w_ = nullptr;
  int64_t in_ = 0, out_ = 0;
};

class RmsNorm {
 public:
  RmsNorm() = default;
  RmsNorm(ParamStore& ps, const std::string& name, int64_t dim, double eps)
      : w_(ps.Add(name, {dim}, Init::kOnes)), dim_(dim), eps_(eps) {}

  // y[T,C]; rstd[T] is kept for backward.
  Tensor Forward(const Tensor& x, Tensor* rstd) const {
    const int64_t T = x.numel() / dim_;
    Tensor y(x.shape(), kRealDType);
    *rstd = Tensor({T}, kRealDType);
    ops::RmsNormForward(x.data<Real>(), w_->value.data<Real>(), y.data<Real>(),
                        rstd->data<Real>(), T, dim_, eps_);
    return y;
  }
  // dx[T,C]; the weight gradient (a reduction, no GEMM) accumulates here too.
  Tensor Backward(const Tensor& dy, const Tensor& x, const Tensor& rstd) const {
    const int64_t T = x.numel() / dim_;
    Tensor dx(x.shape(), kRealDType);
    ops::RmsNormBackward(dy.data<Real>(), x.data<Real>(), w_->value.data<Real>(),
                         rstd.data<Real>(), dx.data<Real>(), w_->grad.data<Real>(), T, dim_);
    return dx;
  }

 private:
  Param* w_ = nullptr;
  int64_t dim_ = 0;
  double eps_ = 1e-6;
};

}  // namespace MT_REAL_NS
}  // namespace mt

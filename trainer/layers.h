// trainer/layers.h: the two building blocks every module is made of: a bias-free Linear
// and an RMSNorm, each a thin owner of its parameters over the ops in kernels/ops.h.
//
// Backward is split the way zero-bubble schedules and DualPipe need it: BackwardInput
// gives dX now, BackwardWeight accumulates dW later from the (x, dy) pair the caller kept.
// A Linear's three GEMMs run at the model's precision (trainer/precision.h); the input the
// caller keeps for BackwardWeight is a StoredActivation from Store(), which in fp8 is the
// Fprop's own E4M3 operand.
#pragma once

#include <string>

#include "kernels/ops.h"
#include "trainer/params.h"
#include "trainer/precision.h"

namespace mt {
inline namespace MT_REAL_NS {

inline Tensor NewMatrix(int64_t rows, int64_t cols) { return Tensor({rows, cols}, kRealDType); }

class Linear {
 public:
  Linear() = default;
  // Runs at the precision of `ps` (ParamStore::precision()).
  Linear(ParamStore& ps, const std::string& name, int64_t in, int64_t out, bool expert = false)
      : w_(ps.Add(name, {out, in}, Init::kNormal, expert)),
        in_(in),
        out_(out),
        precision_(&ps.precision()) {}

  int64_t in() const { return in_; }
  int64_t out() const { return out_; }
  Param* weight() const { return w_; }
  const PrecisionPolicy& precision() const { return *precision_; }

  // x [T, in] as this layer keeps its input for Wgrad (and, in fp8, the Fprop operand).
  StoredActivation Store(const Tensor& x) const { return precision_->StoreLinearInput(x); }
  // y[T,out] = x[T,in] W^T
  Tensor Forward(const StoredActivation& x) const {
    Tensor y = NewMatrix(x.rows(), out_);
    precision_->LinearForward(x, w_->value.data<Real>(), y.data<Real>(), x.rows(), in_, out_);
    return y;
  }
  Tensor Forward(const Tensor& x) const { return Forward(Store(x)); }
  // dx[T,in] (+)= dy[T,out] W
  void BackwardInput(const Real* dy, Real* dx, int64_t T, bool accumulate) const {
    precision_->LinearBackwardInput(dy, w_->value.data<Real>(), dx, T, in_, out_, accumulate);
  }
  Tensor BackwardInput(const Tensor& dy) const {
    Tensor dx = NewMatrix(dy.dim(0), in_);
    BackwardInput(dy.data<Real>(), dx.data<Real>(), dy.dim(0), false);
    return dx;
  }
  // dW[out,in] += dy[T,out]^T x[T,in], x as Store kept it.
  void BackwardWeight(const Tensor& dy, const StoredActivation& x) const {
    precision_->LinearBackwardWeight(dy.data<Real>(), x, w_->grad.data<Real>(), dy.dim(0), in_,
                                     out_);
  }
  void BackwardWeight(const Tensor& dy, const Tensor& x) const {
    BackwardWeight(dy, StoredActivation::Exact(x));
  }

 private:
  Param* w_ = nullptr;
  int64_t in_ = 0, out_ = 0;
  const PrecisionPolicy* precision_ = &PrecisionPolicy::Exact();
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
    ops::RmsNormForward(x.data<Real>(), w_->value.data<Real>(), y.data<Real>(), rstd->data<Real>(),
                        T, dim_, eps_);
    return y;
  }
  // dx[T,C]; the weight gradient (a reduction, no GEMM) accumulates here too.
  Tensor Backward(const Tensor& dy, const Tensor& x, const Tensor& rstd) const {
    const int64_t T = x.numel() / dim_;
    Tensor dx(x.shape(), kRealDType);
    ops::RmsNormBackward(dy.data<Real>(), x.data<Real>(), w_->value.data<Real>(), rstd.data<Real>(),
                         dx.data<Real>(), w_->grad.data<Real>(), T, dim_);
    return dx;
  }

 private:
  Param* w_ = nullptr;
  int64_t dim_ = 0;
  double eps_ = 1e-6;
};

}  // namespace MT_REAL_NS
}  // namespace mt

// kernels/cuda/adamw_ref.cc: the CPU reference of adamw.h, the loop of trainer/optimizer.cc
// (UpdateTensor) over raw arrays; tests/gpu/adamw_ref_test.cc holds it to AdamW::Step.
#include <cmath>

#include "kernels/bf16.h"
#include "kernels/cuda/adamw.h"

namespace mt::cuda {

AdamWCoeffs MakeAdamWCoeffs(double lr, double beta1, double beta2, double eps, double weight_decay,
                            int64_t step) {
  AdamWCoeffs c;
  c.lr = lr;
  c.beta1 = beta1;
  c.beta2 = beta2;
  c.eps = eps;
  c.weight_decay = weight_decay;
  c.bias_correction1 = 1 - std::pow(beta1, static_cast<double>(step));
  c.bias_correction2 = 1 - std::pow(beta2, static_cast<double>(step));
  return c;
}

namespace ref {
namespace {
template <typename Load, typename Store>
void Update(float* w, const float* g, int64_t n, bool decay, const AdamWCoeffs& c, Load load,
            Store store) {
  for (int64_t i = 0; i < n; ++i) {
    const double m = c.beta1 * load(0, i) + (1 - c.beta1) * g[i];
    const double v = c.beta2 * load(1, i) + (1 - c.beta2) * static_cast<double>(g[i]) * g[i];
    store(0, i, m);
    store(1, i, v);
    double p = w[i];
    if (decay) p *= 1 - c.lr * c.weight_decay;
    p -= c.lr * (m / c.bias_correction1) / (std::sqrt(v / c.bias_correction2) + c.eps);
    w[i] = static_cast<float>(p);
  }
}
}  // namespace

void AdamWStep(float* w, const float* g, float* m, float* v, int64_t n, bool decay,
               const AdamWCoeffs& c) {
  float* mv[2] = {m, v};
  Update(
      w, g, n, decay, c, [&](int k, int64_t i) -> double { return mv[k][i]; },
      [&](int k, int64_t i, double x) { mv[k][i] = static_cast<float>(x); });
}

void AdamWStepBf16Moments(float* w, const float* g, uint16_t* m, uint16_t* v, int64_t n, bool decay,
                          const AdamWCoeffs& c) {
  uint16_t* mv[2] = {m, v};
  Update(
      w, g, n, decay, c, [&](int k, int64_t i) -> double { return Bf16ToFloat(mv[k][i]); },
      [&](int k, int64_t i, double x) { mv[k][i] = FloatToBf16(static_cast<float>(x)); });
}

}  // namespace ref
}  // namespace mt::cuda

#include "trainer/optimizer.h"

#include <cmath>

#include "kernels/bf16.h"

namespace mt {
inline namespace MT_REAL_NS {

AdamW::AdamW(ParamStore& params, const OptimizerConfig& config) : config_(config) {
  const DType dt = config.moment_dtype == "bf16" ? DType::kBF16 : DType::kF32;
  for (const auto& p : params.all()) {
    if (!p->trainable) continue;
    moments_.push_back({p.get(), Tensor(p->value.shape(), dt), Tensor(p->value.shape(), dt)});
  }
}

double AdamW::GradNorm() const {
  double sum = 0;
  for (const auto& m : moments_)
    sum += ops::SumSquares(m.param->grad.data<Real>(), m.param->grad.numel());
  return std::sqrt(sum);
}

void AdamW::ClipGradients(double norm, double max_norm) {
  for (auto& m : moments_)
    ClipScale(m.param->grad.data<Real>(), m.param->grad.numel(), norm, max_norm);
}

void ClipScale(Real* g, int64_t n, double norm, double max_norm) {
  if (max_norm <= 0 || norm <= max_norm) return;
  const Real scale = static_cast<Real>(max_norm / (norm + 1e-6));
  for (int64_t i = 0; i < n; ++i) g[i] *= scale;
}

namespace {

template <typename Load, typename Store>
void UpdateTensor(Real* w, const Real* g, int64_t n, bool decay, const AdamCoeffs& c, Load load,
                  Store store) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    double m = c.b1 * load(0, i) + (1 - c.b1) * g[i];
    double v = c.b2 * load(1, i) + (1 - c.b2) * static_cast<double>(g[i]) * g[i];
    store(0, i, m);
    store(1, i, v);
    double p = w[i];
    if (decay) p *= 1 - c.lr * c.wd;  // decoupled (torch.optim.AdamW order)
    p -= c.lr * (m / c.bc1) / (std::sqrt(v / c.bc2) + c.eps);
    w[i] = static_cast<Real>(p);
  }
}

}  // namespace

AdamCoeffs MakeAdamCoeffs(const OptimizerConfig& config, double lr, int64_t step) {
  return {lr,
          config.beta1,
          config.beta2,
          config.eps,
          config.weight_decay,
          1 - std::pow(config.beta1, static_cast<double>(step)),
          1 - std::pow(config.beta2, static_cast<double>(step))};
}

void AdamUpdate(Real* w, const Real* g, int64_t n, bool decay, const AdamCoeffs& c, Tensor& m,
                Tensor& v, int64_t offset) {
  if (m.dtype() == DType::kBF16) {
    // bf16 bit patterns (data<uint16_t>() would insist on a U16 tensor).
    uint16_t* mv[2] = {static_cast<uint16_t*>(m.raw()) + offset,
                       static_cast<uint16_t*>(v.raw()) + offset};
    UpdateTensor(
        w, g, n, decay, c, [&](int k, int64_t i) -> double { return Bf16ToFloat(mv[k][i]); },
        [&](int k, int64_t i, double x) { mv[k][i] = FloatToBf16(static_cast<float>(x)); });
  } else {
    float* mv[2] = {m.data<float>() + offset, v.data<float>() + offset};
    UpdateTensor(
        w, g, n, decay, c, [&](int k, int64_t i) -> double { return mv[k][i]; },
        [&](int k, int64_t i, double x) { mv[k][i] = static_cast<float>(x); });
  }
}

void AdamW::Step(double lr) {
  ++step_;
  const AdamCoeffs c = MakeAdamCoeffs(config_, lr, step_);
  for (auto& mo : moments_) {
    Param* p = mo.param;
    AdamUpdate(p->value.data<Real>(), p->grad.data<Real>(), p->value.numel(), p->decay, c,
               mo.exp_avg, mo.exp_avg_sq, 0);
  }
}

void UpdateExpertBiases(const std::vector<Moe*>& moe_layers,
                        const std::vector<std::vector<int64_t>>& loads, double gamma) {
  if (gamma == 0) return;
  for (size_t l = 0; l < moe_layers.size(); ++l) {
    if (!moe_layers[l]) continue;
    const std::vector<int64_t>& load = loads[l];
    double mean = 0;
    for (int64_t x : load) mean += static_cast<double>(x);
    mean /= static_cast<double>(load.size());
    Real* bias = moe_layers[l]->bias()->value.data<Real>();
    for (size_t e = 0; e < load.size(); ++e) {
      const double diff = mean - static_cast<double>(load[e]);
      bias[e] += static_cast<Real>(gamma * ((diff > 0) - (diff < 0)));
    }
  }
}

}  // namespace MT_REAL_NS
}  // namespace mt

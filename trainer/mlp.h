// trainer/mlp.h: the SwiGLU feed-forward block, down(silu(gate(x)) * up(x)): the dense MLP
// of the first layers, each routed expert, and the fused shared experts.
#pragma once

#include <string>

#include "trainer/layers.h"

namespace mt {
inline namespace MT_REAL_NS {

class SwigluMlp {
 public:
  struct Saved {
    Tensor x;         // [T, H]
    Tensor g, u, h;   // [T, F] gate, up, silu(gate)*up
    Tensor dy, dg, du;  // kept by BackwardInput for BackwardWeight
  };

  SwigluMlp() = default;
  // prefix ends with '.', e.g. "model.layers.0.mlp."
  SwigluMlp(ParamStore& ps, const std::string& prefix, int64_t hidden, int64_t inter,
            bool expert = false)
      : gate_(ps, prefix + "gate_proj.weight", hidden, inter, expert),
        up_(ps, prefix + "up_proj.weight", hidden, inter, expert),
        down_(ps, prefix + "down_proj.weight", inter, hidden, expert) {}

  // x [T, H] -> [T, H]
  Tensor Forward(const Tensor& x, Saved* s) const {
    s->x = x;
    s->g = gate_.Forward(x);
    s->u = up_.Forward(x);
    s->h = Tensor(s->g.shape(), kRealDType);
    ops::SwigluForward(s->g.data<Real>(), s->u.data<Real>(), s->h.data<Real>(), s->h.numel());
    return down_.Forward(s->h);
  }
  // dy [T, H] -> dx [T, H]
  Tensor BackwardInput(const Tensor& dy, Saved* s) const {
    s->dy = dy;
    Tensor dh = down_.BackwardInput(dy);
    s->dg = Tensor(dh.shape(), kRealDType);
    s->du = Tensor(dh.shape(), kRealDType);
    ops::SwigluBackward(dh.data<Real>(), s->g.data<Real>(), s->u.data<Real>(),
                        s->dg.data<Real>(), s->du.data<Real>(), dh.numel());
    Tensor dx = gate_.BackwardInput(s->dg);
    up_.BackwardInput(s->du.data<Real>(), dx.data<Real>(), dx.dim(0), /*accumulate=*/true);
    return dx;
  }
  void BackwardWeight(Saved* s) const {
    down_.BackwardWeight(s->dy, s->h);
    gate_.BackwardWeight(s->dg, s->x);
    up_.BackwardWeight(s->du, s->x);
    *s = Saved{};
  }

 private:
  Linear gate_, up_, down_;
};

}  // namespace MT_REAL_NS
}  // namespace mt

// trainer/mlp.h: the SwiGLU feed-forward block, down(silu(gate(x)) * up(x)): the dense MLP
// of the first layers, each routed expert, and the fused shared experts.
#pragma once

#include <string>

#include "kernels/status.h"
#include "trainer/layers.h"

namespace mt {
inline namespace MT_REAL_NS {

class SwigluMlp {
 public:
  struct Saved {
    StoredActivation x;     // [T, H] input of gate/up (Linear::Store)
    StoredActivation g, u;  // [T, F] gate, up: the SwiGLU inputs (precision.h)
    StoredActivation h;     // [T, F] silu(gate)*up, down's input: kept in fp32, else rebuilt
                            // from g, u by BackwardInput
    Tensor dy, dg, du;      // kept by BackwardInput for BackwardWeight
  };

  SwigluMlp() = default;
  // prefix ends with '.', e.g. "model.layers.0.mlp."
  SwigluMlp(ParamStore& ps, const std::string& prefix, int64_t hidden, int64_t inter,
            bool expert = false)
      : gate_(ps, prefix + "gate_proj.weight", hidden, inter, expert),
        up_(ps, prefix + "up_proj.weight", hidden, inter, expert),
        down_(ps, prefix + "down_proj.weight", inter, hidden, expert) {}

  // x [T, H] -> [T, H]
  Tensor Forward(const Tensor& x, Saved* s) const { return Forward(Store(x), s); }
  // x as Store() keeps it. The FP8 expert dispatch quantises a token once on its own rank
  // and hands the received E4M3 operand straight to the expert, so gate and up see the same
  // codes and scales they would have quantised themselves (no dequantise-requantise).
  StoredActivation Store(const Tensor& x) const { return gate_.Store(x); }
  Tensor Forward(const StoredActivation& x, Saved* s) const {
    const PrecisionPolicy& p = gate_.precision();
    using F = StoredActivation::Format;
    const F want = p.precision() == Precision::kFp8    ? F::kE4M3
                   : p.precision() == Precision::kBf16 ? F::kBf16
                                                       : F::kExact;
    MT_CHECK(x.format() == want, "SwigluMlp: a ", PrecisionName(p.precision()),
             " block given an input in another storage format than Store() gives");
    s->x = x;
    const Tensor g = gate_.Forward(s->x), u = up_.Forward(s->x);
    Tensor h(g.shape(), kRealDType);
    ops::SwigluForward(g.data<Real>(), u.data<Real>(), h.data<Real>(), h.numel());
    s->g = p.StoreSwigluInput(g);
    s->u = p.StoreSwigluInput(u);
    if (p.recompute_swiglu()) return down_.Forward(h);
    s->h = down_.Store(h);
    return down_.Forward(s->h);
  }
  // dy [T, H] -> dx [T, H]
  Tensor BackwardInput(const Tensor& dy, Saved* s) const {
    s->dy = dy;
    Tensor dh = down_.BackwardInput(dy);
    s->dg = Tensor(dh.shape(), kRealDType);
    s->du = Tensor(dh.shape(), kRealDType);
    const Tensor g = s->g.Values(), u = s->u.Values();
    ops::SwigluBackward(dh.data<Real>(), g.data<Real>(), u.data<Real>(), s->dg.data<Real>(),
                        s->du.data<Real>(), dh.numel());
    if (!s->h.defined()) {  // recompute down's input from the cached SwiGLU inputs
      Tensor h(g.shape(), kRealDType);
      ops::SwigluForward(g.data<Real>(), u.data<Real>(), h.data<Real>(), h.numel());
      s->h = StoredActivation::Exact(h);
    }
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

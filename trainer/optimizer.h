// trainer/optimizer.h: AdamW with decoupled weight decay, global-norm clipping, and the
// aux-loss-free bias update; what one optimizer step does to the parameters.
//
// Moments are kept per parameter under the parameter's name (that is how checkpoints store
// them), in fp32 or, as DeepSeek-V3 does, bf16 (optimizer.moment_dtype). Master weights
// stay in the model's precision (fp32 in training).
#pragma once

#include <string>
#include <vector>

#include "trainer/config.h"
#include "trainer/moe.h"
#include "trainer/params.h"

namespace mt {
inline namespace MT_REAL_NS {

class AdamW {
 public:
  AdamW(ParamStore& params, const OptimizerConfig& config);

  // sqrt(sum of squared gradients) over every trainable parameter.
  double GradNorm() const;
  // Scales all gradients by min(1, max_norm / (norm + 1e-6)); no-op when max_norm <= 0.
  void ClipGradients(double norm, double max_norm);
  // One update at learning rate lr; the step counter for bias correction advances.
  void Step(double lr);

  int64_t step() const { return step_; }
  void set_step(int64_t s) { step_ = s; }
  // Moments, parallel to the trainable parameters (fp32 or bf16 tensors).
  struct Moments {
    Param* param;
    Tensor exp_avg;     // m
    Tensor exp_avg_sq;  // v
  };
  std::vector<Moments>& moments() { return moments_; }

 private:
  OptimizerConfig config_;
  std::vector<Moments> moments_;
  int64_t step_ = 0;
};

// The elementwise AdamW update, shared by AdamW and the ZeRO-1 optimizer (zero_optimizer.h)
// so that every layout updates a parameter with the same operations.
struct AdamCoeffs {
  double lr, b1, b2, eps, wd, bc1, bc2;
};
AdamCoeffs MakeAdamCoeffs(const OptimizerConfig& config, double lr, int64_t step);
// w[n] -= the update from g[n]; the moments are elements [offset, offset + n) of m and v
// (fp32 or bf16 tensors).
void AdamUpdate(Real* w, const Real* g, int64_t n, bool decay, const AdamCoeffs& c, Tensor& m,
                Tensor& v, int64_t offset);
// Scales g[n] by min(1, max_norm / (norm + 1e-6)), as AdamW::ClipGradients does.
void ClipScale(Real* g, int64_t n, double norm, double max_norm);

// DeepSeek-V3's aux-loss-free balancing: bias_i += gamma * sign(mean_load - load_i), with
// loads counted over the whole global batch (loads[layer][expert], identical on all ranks).
// A null entry of moe_layers (a layer another pipeline stage holds) is skipped.
void UpdateExpertBiases(const std::vector<Moe*>& moe_layers,
                        const std::vector<std::vector<int64_t>>& loads, double gamma);

}  // namespace MT_REAL_NS
}  // namespace mt

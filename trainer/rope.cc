#include "trainer/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace mt {
namespace {

// HF modeling_rope_utils: get_mscale(scale, mscale) = 0.1 * mscale * ln(scale) + 1.
double YarnMscale(double scale, double mscale) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

double YarnAttentionFactor(const RopeScaling& r) {
  if (r.mscale != 0 && r.mscale_all_dim != 0)
    return YarnMscale(r.factor, r.mscale) / YarnMscale(r.factor, r.mscale_all_dim);
  return YarnMscale(r.factor, 1.0);
}

}  // namespace

std::vector<double> RopeInverseFrequencies(const ModelConfig& m) {
  const int64_t dim = m.qk_rope_head_dim;
  const double base = m.rope_theta;
  std::vector<double> inv(dim / 2);
  for (int64_t i = 0; i < dim / 2; ++i) inv[i] = std::pow(base, -2.0 * i / dim);
  if (!m.rope_scaling) return inv;
  // YaRN (HF _compute_yarn_parameters): interpolate the low frequencies by 1/factor,
  // keep the high ones, and ramp linearly between the two correction dimensions.
  const RopeScaling& r = *m.rope_scaling;
  const double L0 = static_cast<double>(r.original_max_position_embeddings);
  auto correction_dim = [&](double num_rotations) {
    return dim * std::log(L0 / (num_rotations * 2 * std::numbers::pi)) / (2 * std::log(base));
  };
  double low = std::max(std::floor(correction_dim(r.beta_fast)), 0.0);
  double high = std::min(std::ceil(correction_dim(r.beta_slow)), static_cast<double>(dim - 1));
  if (low == high) high += 0.001;  // avoid a zero-width ramp
  for (int64_t i = 0; i < dim / 2; ++i) {
    double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
    double extrapolation_factor = 1.0 - ramp;
    inv[i] = inv[i] / r.factor * (1.0 - extrapolation_factor) + inv[i] * extrapolation_factor;
  }
  return inv;
}

RopeTables MakeRopeTables(const ModelConfig& m, int64_t seq_len) {
  RopeTables t;
  t.seq_len = seq_len;
  t.half = m.qk_rope_head_dim / 2;
  const std::vector<double> inv = RopeInverseFrequencies(m);
  const double factor = m.rope_scaling ? YarnAttentionFactor(*m.rope_scaling) : 1.0;
  t.cos.resize(seq_len * t.half);
  t.sin.resize(seq_len * t.half);
  for (int64_t s = 0; s < seq_len; ++s) {
    for (int64_t i = 0; i < t.half; ++i) {
      double angle = static_cast<double>(s) * inv[i];
      t.cos[s * t.half + i] = std::cos(angle) * factor;
      t.sin[s * t.half + i] = std::sin(angle) * factor;
    }
  }
  return t;
}

double AttentionSoftmaxScale(const ModelConfig& m) {
  double scale = 1.0 / std::sqrt(static_cast<double>(m.qk_head_dim()));
  if (m.rope_scaling && m.rope_scaling->mscale_all_dim != 0) {
    double ms = YarnMscale(m.rope_scaling->factor, m.rope_scaling->mscale_all_dim);
    scale *= ms * ms;
  }
  return scale;
}

}  // namespace mt

#include "trainer/model.h"

namespace mt {
inline namespace MT_REAL_NS {

Model::Model(const ModelConfig& m, uint64_t seed, Precision precision)
    : m_(m),
      precision_(std::make_unique<PrecisionPolicy>(precision)),
      params_(std::make_unique<ParamStore>(seed, m.initializer_range)) {
  params_->set_precision(precision_.get());
  chunk_ = std::make_unique<ModelChunk>(*params_, m, MakeStageSpec(m, 0, 1));
}

Model::~Model() = default;

Losses Model::Run(const int32_t* tokens, int64_t B, int64_t S, const ObjectiveWeights& w,
                  double grad_scale, bool backward, std::vector<std::vector<int64_t>>* loads) {
  if (loads) loads->resize(chunk_->moe_layers().size());
  Losses out;
  chunk_->Forward(/*id=*/0, MicroBatch{tokens, B, S}, Tensor(), w, grad_scale, backward, &out,
                  loads);
  if (backward) {
    chunk_->BackwardInput(0, Tensor());
    chunk_->BackwardWeight(0);
  }
  const double mtp_coeff = out.mtp.empty() ? 0.0 : w.mtp_lambda / out.mtp.size();
  out.total = out.main + w.balance_alpha * out.balance;
  for (double l : out.mtp) out.total += mtp_coeff * l;
  return out;
}

Losses Model::ForwardBackward(const int32_t* tokens, int64_t B, int64_t S,
                              const ObjectiveWeights& w, double grad_scale,
                              std::vector<std::vector<int64_t>>* loads) {
  return Run(tokens, B, S, w, grad_scale, /*backward=*/true, loads);
}

Losses Model::Evaluate(const int32_t* tokens, int64_t B, int64_t S, const ObjectiveWeights& w) {
  return Run(tokens, B, S, w, 0.0, /*backward=*/false, nullptr);
}

int64_t Model::MeasureActivationBytes(int64_t B, int64_t S) {
  const std::vector<int32_t> tokens(static_cast<size_t>(B * (S + 1)), 0);
  Evaluate(tokens.data(), B, S, ObjectiveWeights{});
  return activation_bytes();
}

std::vector<float> Model::NextTokenLogits(const int32_t* tokens, int64_t S) {
  return chunk_->NextTokenLogits(tokens, S);
}

}  // namespace MT_REAL_NS
}  // namespace mt

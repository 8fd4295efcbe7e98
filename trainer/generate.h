// trainer/generate.h: text generation from a trained model (temperature + nucleus
// sampling), for `moetrain generate` and the sample printed at the end of `train`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "trainer/model.h"

namespace mt {
inline namespace MT_REAL_NS {

struct SamplingOptions {
  int64_t max_tokens = 64;
  double temperature = 0.8;  // 0 = greedy
  double top_p = 0.95;
  uint64_t seed = 0;
  int32_t stop_token = -1;   // stop after emitting this id (EOD); -1 = never
  int64_t context = 0;       // longest context fed to the model (0 = unlimited)
  // Sample only ids below this (the tokenizer's vocabulary, when the model's is padded
  // beyond it); 0 = every id the model has.
  int64_t vocab_limit = 0;
};

// Continues `prompt` (token ids, at least one) and returns only the new ids.
std::vector<int32_t> Generate(Model& model, const std::vector<int32_t>& prompt,
                              const SamplingOptions& opts);
// The same from a chunk that holds every pipeline stage (a single-stage training run).
std::vector<int32_t> Generate(ModelChunk& model, const std::vector<int32_t>& prompt,
                              const SamplingOptions& opts);

// Picks a token from logits[V] with temperature and top-p, using uniform u in (0, 1).
int32_t SampleToken(const std::vector<float>& logits, double temperature, double top_p, double u);

}  // namespace MT_REAL_NS
}  // namespace mt

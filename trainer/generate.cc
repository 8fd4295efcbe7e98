#include "trainer/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "trainer/rng.h"

namespace mt {
inline namespace MT_REAL_NS {

int32_t SampleToken(const std::vector<float>& logits, double temperature, double top_p, double u) {
  const int64_t V = static_cast<int64_t>(logits.size());
  if (temperature <= 0)
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  const double mx = *std::max_element(logits.begin(), logits.end());
  std::vector<std::pair<double, int32_t>> p(V);
  double sum = 0;
  for (int64_t i = 0; i < V; ++i) {
    p[i] = {std::exp((logits[i] - mx) / temperature), static_cast<int32_t>(i)};
    sum += p[i].first;
  }
  std::sort(p.begin(), p.end(), [](auto& a, auto& b) { return a.first > b.first; });
  // Keep the smallest prefix whose mass reaches top_p, then sample within it.
  double kept = 0;
  size_t n = 0;
  while (n < p.size() && (kept < top_p * sum || n == 0)) kept += p[n++].first;
  double r = u * kept;
  for (size_t i = 0; i < n; ++i) {
    r -= p[i].first;
    if (r <= 0) return p[i].second;
  }
  return p[n - 1].second;
}

namespace {

template <typename M>
std::vector<int32_t> GenerateFrom(M& model, const std::vector<int32_t>& prompt,
                                  const SamplingOptions& opts) {
  std::vector<int32_t> seq = prompt, out;
  const uint64_t stream = HashName("generate");
  for (int64_t i = 0; i < opts.max_tokens; ++i) {
    const int64_t start = opts.context > 0 && static_cast<int64_t>(seq.size()) > opts.context
                              ? static_cast<int64_t>(seq.size()) - opts.context
                              : 0;
    std::vector<float> logits =
        model.NextTokenLogits(seq.data() + start, static_cast<int64_t>(seq.size()) - start);
    if (opts.vocab_limit > 0 && opts.vocab_limit < static_cast<int64_t>(logits.size()))
      logits.resize(opts.vocab_limit);
    int32_t tok = SampleToken(logits, opts.temperature, opts.top_p,
                              RandomUniform(opts.seed, stream, static_cast<uint64_t>(i)));
    seq.push_back(tok);
    out.push_back(tok);
    if (tok == opts.stop_token) break;
  }
  return out;
}

}  // namespace

std::vector<int32_t> Generate(Model& model, const std::vector<int32_t>& prompt,
                              const SamplingOptions& opts) {
  return GenerateFrom(model, prompt, opts);
}

std::vector<int32_t> Generate(ModelChunk& model, const std::vector<int32_t>& prompt,
                              const SamplingOptions& opts) {
  return GenerateFrom(model, prompt, opts);
}

}  // namespace MT_REAL_NS
}  // namespace mt

// tests/gpu/backend_table_attention.cc: the BF16 attention core of kernels/backend.h
// (AttentionForwardBf16 / AttentionBackwardBf16) on MLA's head dims. The CPU backend runs
// the FP32 ops on the BF16-rounded operands; the CUDA backend runs cuDNN's fused SDPA for
// each shape whose plans built and passed the self-check (else the same FP32 path), so
// outputs are compared at a BF16 operator's tolerance.
#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tests/gpu/backend_table.h"
#include "tests/gpu/gpu_test_util.h"

namespace mt::test {
namespace {

// P and dS are BF16 inside the fused kernels and the results come back BF16-rounded:
// normwise errors near 5e-3 are expected; a wrong mask or layout is O(1).
constexpr double kBf16AttentionTolerance = 2e-2;

// A BF16-rounded random tensor (as trainer/device_mla.cc hands the core its operands).
Tensor Bf16Input(Backend& be, std::vector<int64_t> shape, uint32_t seed) {
  Tensor h(shape, DType::kF32);
  const std::vector<float> v = cuda::test::Random(h.numel(), seed);
  std::copy(v.begin(), v.end(), h.data<float>());
  Tensor d = be.ToDevice(h);
  be.RoundBf16(d.data<float>(), d.data<float>(), d.numel());
  return d;
}

std::vector<BackendOutput> AttentionBf16(Backend& be, int64_t B, int64_t S, int64_t N, int64_t Dqk,
                                         int64_t Dv, double scale) {
  Tensor q = Bf16Input(be, {B, S, N, Dqk}, 300), k = Bf16Input(be, {B, S, N, Dqk}, 301);
  Tensor v = Bf16Input(be, {B, S, N, Dv}, 302), dout = Bf16Input(be, {B, S, N, Dv}, 303);
  Tensor out = be.Empty({B, S, N, Dv}), saved;
  // Random: the gradients are overwritten, not added to.
  Tensor dq = Bf16Input(be, {B, S, N, Dqk}, 304), dk = Bf16Input(be, {B, S, N, Dqk}, 305);
  Tensor dv = Bf16Input(be, {B, S, N, Dv}, 306);
  auto F = [](Tensor& t) { return t.data<float>(); };
  be.AttentionForwardBf16(F(q), F(k), F(v), F(out), &saved, B, S, N, Dqk, Dv, scale);
  be.AttentionBackwardBf16(F(dout), F(q), F(k), F(v), F(out), saved, F(dq), F(dk), F(dv), B, S, N,
                           Dqk, Dv, scale);
  std::vector<BackendOutput> outs;
  for (auto [name, t] :
       {std::pair<const char*, Tensor*>{"out", &out}, {"dq", &dq}, {"dk", &dk}, {"dv", &dv}}) {
    outs.push_back({name, be.ToHost(*t), false, false, kBf16AttentionTolerance});
  }
  return outs;
}

}  // namespace

std::vector<BackendOp> AttentionBf16BackendOps() {
  return {
      // DeepSeek-V3's head dims (Q/K 128 nope + 64 rope, V 128) at a small head count.
      {"attention_bf16_mla",
       [](Backend& be) { return AttentionBf16(be, 2, 128, 4, 192, 128, 0.1); }},
      // A sequence length that is no multiple of any tile, one sequence.
      {"attention_bf16_ragged",
       [](Backend& be) { return AttentionBf16(be, 1, 77, 3, 192, 128, 0.12); }},
  };
}

}  // namespace mt::test

// kernels/cuda/router.cu: one warp per token (router.h).
//
// The warp writes score + bias for its token into shared memory (double, [E]), lanes take
// one group each for the group scores (sum of the top two), then topk_group rounds of a
// warp arg-max pick the groups and K rounds pick the experts among them. The arg-max order
// (value descending, index ascending) is the CPU's partial_sort order, so the picks match.
#include <math_constants.h>
#include <cfloat>
#include <climits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/router.h"

namespace mt::cuda {
namespace {

constexpr int kRouterWarps = 4;  // tokens per block
constexpr int kMaxExperts = 1024;
constexpr int kMaxGroups = 64;

struct Pick {
  double value;
  int index;
};

__device__ __forceinline__ bool Better(const Pick& a, const Pick& b) {
  return a.value > b.value || (a.value == b.value && a.index < b.index);
}

__device__ __forceinline__ Pick WarpArgMax(Pick p) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    Pick o;
    o.value = __shfl_xor_sync(0xffffffffu, p.value, offset);
    o.index = __shfl_xor_sync(0xffffffffu, p.index, offset);
    if (Better(o, p)) p = o;
  }
  return p;
}

// Dynamic shared memory per warp: c [E] double, then group scores [n_group] double, then
// flags [E] (expert taken) and [n_group] (group kept) as bytes.
__global__ void RouterKernel(const float* logits, const float* bias, float* scores, int32_t* topk,
                             float* weight, int64_t* load, RouterShape sh) {
  extern __shared__ double smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t t = int64_t(blockIdx.x) * kRouterWarps + warp;
  const int E = int(sh.experts), G = int(sh.n_group), K = int(sh.top_k);
  const int group_size = E / G;
  const size_t per_warp_doubles = size_t(E + G) + (size_t(E + G) + 7) / 8;
  double* c = smem + warp * per_warp_doubles;
  double* gscore = c + E;
  uint8_t* taken = reinterpret_cast<uint8_t*>(gscore + G);
  uint8_t* kept = taken + E;
  if (t >= sh.tokens) return;  // whole warps only: no block-wide barrier follows

  for (int e = lane; e < E; e += 32) {
    const float s = 1.0f / (1.0f + expf(-logits[t * E + e]));
    scores[t * E + e] = s;
    // A NaN never wins Better(), so a token of NaN logits (a diverged forward, which the
    // trainer skips) would leave every pick at index INT_MAX and index taken[] out of bounds;
    // as -inf the picks are the lowest indices instead. Finite values are unchanged.
    const double ce = double(s) + double(bias[e]);
    c[e] = isnan(ce) ? -CUDART_INF : ce;
    taken[e] = 0;
  }
  __syncwarp();
  for (int g = lane; g < G; g += 32) {
    double best = -CUDART_INF, second = -CUDART_INF;
    for (int e = g * group_size; e < (g + 1) * group_size; ++e) {
      if (c[e] > best) {
        second = best;
        best = c[e];
      } else if (c[e] > second) {
        second = c[e];
      }
    }
    gscore[g] = group_size >= 2 ? best + second : best;
    kept[g] = 0;
  }
  __syncwarp();
  for (int i = 0; i < sh.topk_group; ++i) {
    Pick p{-CUDART_INF, INT_MAX};
    for (int g = lane; g < G; g += 32) {
      const Pick q{gscore[g], g};
      if (!kept[g] && Better(q, p)) p = q;
    }
    p = WarpArgMax(p);
    if (lane == 0) kept[p.index] = 1;
    __syncwarp();
  }
  int chosen = -1;  // lane k < K keeps the k-th pick
  for (int k = 0; k < K; ++k) {
    Pick p{-CUDART_INF, INT_MAX};
    for (int e = lane; e < E; e += 32) {
      const Pick q{c[e], e};
      if (kept[e / group_size] && !taken[e] && Better(q, p)) p = q;
    }
    p = WarpArgMax(p);
    if (lane == 0) taken[p.index] = 1;
    if (lane == k) chosen = p.index;
    __syncwarp();
  }
  // Weights: the CPU's double arithmetic, in pick order.
  double sum = 0;
  for (int k = 0; k < K; ++k) sum += double(scores[t * E + __shfl_sync(0xffffffffu, chosen, k)]);
  if (lane < K) {
    double w = double(scores[t * E + chosen]);
    if (sh.norm_topk) w /= sum + 1e-20;
    topk[t * K + lane] = chosen;
    weight[t * K + lane] = float(w * sh.scaling);
    if (sh.seq_len == 0 || t % sh.seq_len < sh.valid)
      atomicAdd(reinterpret_cast<unsigned long long*>(load + chosen), 1ull);
  }
}

}  // namespace

void RouterForward(const float* logits, const float* bias, float* scores, int32_t* topk,
                   float* weight, int64_t* load, const RouterShape& sh, cudaStream_t stream) {
  CUDA_HOST_CHECK(sh.experts > 0 && sh.experts <= kMaxExperts, "router: E must be in [1, 1024]");
  CUDA_HOST_CHECK(sh.n_group > 0 && sh.n_group <= kMaxGroups && sh.experts % sh.n_group == 0,
                  "router: n_group must divide E (and be at most 64)");
  CUDA_HOST_CHECK(sh.topk_group >= 1 && sh.topk_group <= sh.n_group,
                  "router: topk_group must be in [1, n_group]");
  CUDA_HOST_CHECK(
      sh.top_k >= 1 && sh.top_k <= 32 && sh.top_k <= sh.topk_group * (sh.experts / sh.n_group),
      "router: top_k must be at most 32 and at most the experts of the kept groups");
  CUDA_HOST_CHECK(sh.tokens >= 0, "router: negative token count");
  if (sh.tokens == 0) return;
  const size_t per_warp =
      (size_t(sh.experts + sh.n_group) + (size_t(sh.experts + sh.n_group) + 7) / 8) *
      sizeof(double);
  const unsigned blocks = unsigned(CeilDiv(sh.tokens, kRouterWarps));
  RouterKernel<<<blocks, kRouterWarps * 32, kRouterWarps * per_warp, stream>>>(
      logits, bias, scores, topk, weight, load, sh);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mt::cuda

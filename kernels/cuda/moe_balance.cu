// kernels/cuda/moe_balance.cu: the balance loss and the router's backward (moe_balance.h).
//
// BalanceForward is three launches: one warp per token sums its scores (sigma), one block
// per sequence owns f and P of every expert (threads over experts, positions in order, as
// the CPU's loop), and one thread folds the per-sequence losses in sequence order.
// RouterBackward is one block per token, threads over experts.
#include <climits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/moe_balance.h"

namespace mt::cuda {
namespace {

constexpr int kMaxTopK = 32;

size_t Align256(size_t b) { return (b + 255) / 256 * 256; }

// sigma [T]: one warp per token, lanes over experts, then a fixed-order warp tree.
__global__ void TokenScoreSumKernel(const float* scores, int64_t T, int64_t E, double* sigma) {
  const int64_t t = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (t >= T) return;  // whole warps only: no block barrier follows
  const int lane = threadIdx.x % 32;
  double s = 0;
  for (int64_t e = lane; e < E; e += 32) s += double(scores[t * E + e]);
  s = WarpSum(s);
  if (lane == 0) sigma[t] = s;
}

// One block per sequence b: f [b, E] and the sequence's loss sum_e f_e P_e into bal [b].
__global__ void BalanceSequenceKernel(const float* scores, const int32_t* topk, const double* sigma,
                                      double* f, double* bal, BalanceShape sh) {
  const int64_t b = blockIdx.x, E = sh.experts, K = sh.top_k, valid = sh.valid;
  const double f_scale = double(E) / double(K * valid);
  double part = 0;
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    double count = 0, P = 0;
    for (int64_t pos = 0; pos < valid; ++pos) {
      const int64_t t = b * sh.seq_len + pos;
      for (int64_t k = 0; k < K; ++k) count += topk[t * K + k] == e ? 1.0 : 0.0;
      P += double(scores[t * E + e]) / sigma[t];
    }
    const double fe = count * f_scale;
    f[b * E + e] = fe;
    part += fe * P / double(valid);
  }
  part = BlockSum(part);
  if (threadIdx.x == 0) bal[b] = part;
}

// *loss += (sum over b in order of bal[b]) / B, as the CPU adds it.
__global__ void BalanceFoldKernel(const double* bal, int64_t B, double* loss) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  double s = 0;
  for (int64_t b = 0; b < B; ++b) s += bal[b];
  *loss += s / double(B);
}

__global__ void RouterBackwardKernel(const float* scores, const int32_t* topk,
                                     const double* dweight, const double* f, float* d_logits,
                                     RouterBackwardShape sh) {
  __shared__ double norm_sum, norm_dot;
  const int64_t t = blockIdx.x, E = sh.experts, K = sh.top_k;
  const float* sc = scores + t * E;    // [E]
  const int32_t* idx = topk + t * K;   // [K]
  const double* dw = dweight + t * K;  // [K]
  if (threadIdx.x == 0) {              // K <= 32: the CPU's sequential sums, in pick order
    double sum = 1e-20, dot = 0;
    for (int64_t k = 0; k < K; ++k) sum += double(sc[idx[k]]);
    for (int64_t k = 0; k < K; ++k) dot += dw[k] * double(sc[idx[k]]);
    norm_sum = sum;
    norm_dot = dot;
  }
  __syncthreads();
  const int64_t b = t / sh.seq_len, pos = t % sh.seq_len;
  // Uniform over the block (depends on t only), so the block sums below are safe.
  const bool balance = sh.balance_scale != 0 && pos < sh.valid;
  const double* fb = balance ? f + b * E : nullptr;  // [E]; f may be null without balance
  double sigma = 1, a = 0, c = 0;
  if (balance) {
    double ps = 0, pa = 0;
    for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
      ps += double(sc[e]);
      pa += fb[e] * double(sc[e]);
    }
    sigma = BlockSum(ps);
    a = BlockSum(pa);
    c = sh.balance_scale / (double(sh.sequences) * double(sh.valid));
  }
  const double sum = norm_sum, dot = norm_dot;
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    double ds = 0;
    for (int64_t k = 0; k < K; ++k) {
      if (idx[k] != e) continue;
      ds += sh.norm_topk ? sh.scaling * (dw[k] / sum - dot / (sum * sum)) : sh.scaling * dw[k];
    }
    if (balance) ds += c * (fb[e] / sigma - a / (sigma * sigma));
    const float s = sc[e];
    // The CPU's ds * s * (1 - s): (1 - s) is a float expression there.
    d_logits[t * E + e] = float(ds * double(s) * double(1.0f - s));
  }
}

void CheckShape(int64_t B, int64_t S, int64_t E, int64_t K, int64_t valid) {
  CUDA_HOST_CHECK(B >= 0 && S > 0 && E > 0 && K >= 1 && K <= kMaxTopK && K <= E,
                  "MoE balance: bad shape (need S > 0, 1 <= K <= min(E, 32))");
  CUDA_HOST_CHECK(valid >= 0 && valid <= S, "MoE balance: valid must be in [0, S]");
  CUDA_HOST_CHECK(B * S <= INT_MAX, "MoE balance: tokens must fit grid.x");
}

}  // namespace

size_t BalanceWorkspaceBytes(const BalanceShape& sh) {
  return Align256(size_t(sh.sequences * sh.seq_len) * sizeof(double)) +
         Align256(size_t(sh.sequences) * sizeof(double));
}

void BalanceForward(const float* scores, const int32_t* topk, double* f, double* loss,
                    const BalanceShape& sh, void* workspace, size_t workspace_bytes,
                    cudaStream_t stream) {
  CheckShape(sh.sequences, sh.seq_len, sh.experts, sh.top_k, sh.valid);
  CUDA_HOST_CHECK(workspace_bytes >= BalanceWorkspaceBytes(sh),
                  "BalanceForward: workspace smaller than BalanceWorkspaceBytes");
  const int64_t B = sh.sequences, T = B * sh.seq_len;
  if (B == 0) return;
  if (sh.valid == 0) {
    CUDA_CHECK(cudaMemsetAsync(f, 0, size_t(B * sh.experts) * sizeof(double), stream));
    return;
  }
  double* sigma = static_cast<double*>(workspace);  // [T]
  double* bal = reinterpret_cast<double*>(static_cast<char*>(workspace) +
                                          Align256(size_t(T) * sizeof(double)));  // [B]
  TokenScoreSumKernel<<<unsigned(CeilDiv(T, kWarps)), kBlock, 0, stream>>>(scores, T, sh.experts,
                                                                           sigma);
  CUDA_CHECK_LAUNCH();
  BalanceSequenceKernel<<<unsigned(B), kBlock, 0, stream>>>(scores, topk, sigma, f, bal, sh);
  CUDA_CHECK_LAUNCH();
  BalanceFoldKernel<<<1, 1, 0, stream>>>(bal, B, loss);
  CUDA_CHECK_LAUNCH();
}

void RouterBackward(const float* scores, const int32_t* topk, const double* dweight,
                    const double* f, float* d_logits, const RouterBackwardShape& sh,
                    cudaStream_t stream) {
  CheckShape(sh.sequences, sh.seq_len, sh.experts, sh.top_k, sh.valid);
  const int64_t T = sh.sequences * sh.seq_len;
  if (T == 0) return;
  // BlockSum assumes kBlock threads.
  RouterBackwardKernel<<<unsigned(T), kBlock, 0, stream>>>(scores, topk, dweight, f, d_logits, sh);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mt::cuda

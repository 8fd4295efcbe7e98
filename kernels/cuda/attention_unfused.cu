// kernels/cuda/attention_unfused.cu: the unfused causal attention of attention_unfused.h.
#include "kernels/cuda/attention_unfused.h"

#include <climits>
#include <cmath>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_check.h"

namespace mt::cuda {
namespace {

// ---- element access -------------------------------------------------------------------
// uint16_t is a BF16 bit pattern; rounding to it is common.cuh's, bit-exact with the CPU.
__device__ __forceinline__ float ToF32(float x) { return x; }
__device__ __forceinline__ float ToF32(uint16_t x) { return Bf16ToFloat(x); }
template <typename T>
__device__ __forceinline__ T FromF32(float x);
template <>
__device__ __forceinline__ float FromF32<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ uint16_t FromF32<uint16_t>(float x) {
  return FloatToBf16(x);
}

template <typename T>
constexpr cudaDataType CudaType() {
  return std::is_same<T, float>::value ? CUDA_R_32F : CUDA_R_16BF;
}

// Max over a kBlock-thread block starting from -inf (common.cuh's BlockMax is a max-abs
// that starts at 0, which would clip a row of negative scores).
__device__ float BlockMaxSigned(float v) {
  __shared__ float warp_max[kWarps];
  v = WarpMax(v);
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = v;
  __syncthreads();
  float m = -INFINITY;
  for (int w = 0; w < kWarps; ++w) m = MaxNoNan(m, warp_max[w]);
  __syncthreads();
  return m;
}

// ---- kernels: one block per score row (head n, query i), rows = heads x S ----------------

// scores [rows, S] fp32 (already scaled) -> probs [rows, S]: softmax over keys j <= i,
// zero above the diagonal. Row i always keeps j = 0, so the sum is >= 1.
template <typename T>
__global__ void CausalSoftmaxKernel(const float* __restrict__ scores, T* __restrict__ probs,
                                    int64_t S) {
  const int64_t row = blockIdx.x;
  const int64_t i = row % S;
  const float* s = scores + row * S;
  T* p = probs + row * S;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) mx = MaxNoNan(mx, s[j]);
  mx = BlockMaxSigned(mx);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) sum += expf(s[j] - mx);
  sum = BlockSum(sum);
  const float inv = 1.0f / sum;
  for (int64_t j = threadIdx.x; j < S; j += blockDim.x)
    p[j] = FromF32<T>(j <= i ? expf(s[j] - mx) * inv : 0.0f);
}

// probs [rows, S], dp [rows, S] fp32 -> ds [rows, S] = P (dP - sum_j dP P), zero above the
// diagonal (as P is).
template <typename T>
__global__ void CausalSoftmaxBackwardKernel(const T* __restrict__ probs,
                                            const float* __restrict__ dp, T* __restrict__ ds,
                                            int64_t S) {
  const int64_t row = blockIdx.x;
  const int64_t i = row % S;
  const T* p = probs + row * S;
  const float* d = dp + row * S;
  T* out = ds + row * S;
  float dot = 0.0f;
  for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) dot += ToF32(p[j]) * d[j];
  dot = BlockSum(dot);
  for (int64_t j = threadIdx.x; j < S; j += blockDim.x)
    out[j] = FromF32<T>(j <= i ? ToF32(p[j]) * (d[j] - dot) : 0.0f);
}

// ---- plans ------------------------------------------------------------------------------

// One row-major operand: base pointer, leading dimension, batch (head) stride.
struct Mat {
  const void* p;
  int64_t ld;
  int64_t stride;
};

// Row-major C[M, N] = alpha op(A) op(B) over `batch` matrices, as a cuBLAS step. cuBLAS is
// column-major: a row-major X is its transpose there, so the step computes
// C^T = op(B)^T op(A)^T, i.e. B is cuBLAS's first operand and A its second, with the
// transposes unchanged.
UnfusedAttentionStep GemmRowMajor(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                                  const Mat& A, const Mat& B, cudaDataType ab_type, void* C,
                                  cudaDataType c_type, int64_t ldc, int64_t c_stride,
                                  int64_t batch) {
  CUDA_HOST_CHECK(M <= INT_MAX && N <= INT_MAX && K <= INT_MAX && batch <= INT_MAX,
                  "attention GEMM dims exceed cuBLAS's int");
  CUDA_HOST_CHECK(A.ld <= INT_MAX && B.ld <= INT_MAX && ldc <= INT_MAX,
                  "attention GEMM leading dims exceed cuBLAS's int");
  UnfusedAttentionStep st;
  st.kind = UnfusedAttentionStep::Kind::kGemm;
  st.op_a = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  st.op_b = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  st.m = int(N);
  st.n = int(M);
  st.k = int(K);
  st.alpha = alpha;
  st.a = B.p;
  st.lda = int(B.ld);
  st.stride_a = B.stride;
  st.b = A.p;
  st.ldb = int(A.ld);
  st.stride_b = A.stride;
  st.ab_type = ab_type;
  st.c = C;
  st.c_type = c_type;
  st.ldc = int(ldc);
  st.stride_c = c_stride;
  st.batch = int(batch);
  return st;
}

UnfusedAttentionStep RowStep(UnfusedAttentionStep::Kind kind, const float* f32, const void* probs,
                             void* out, int64_t rows, int64_t S) {
  UnfusedAttentionStep st;
  st.kind = kind;
  st.f32 = f32;
  st.probs = probs;
  st.out = out;
  st.rows = rows;
  st.S = S;
  return st;
}

// Bytes of scratch per head: FP32 scores/dP [S, S] plus dS [S, S] in the element type.
size_t PerHeadBytes(const AttentionShape& sh, size_t elem) {
  return size_t(sh.S * sh.S) * (sizeof(float) + elem);
}

// Heads per GEMM batch that fit the caller's workspace (at least one head must).
int64_t HeadsPerChunk(const AttentionShape& sh, size_t elem, size_t workspace_bytes) {
  const size_t per_head = PerHeadBytes(sh, elem);
  CUDA_HOST_CHECK(workspace_bytes >= per_head,
                  "attention workspace smaller than one head's scores (S * S * (4 + elem))");
  return MinI64(sh.N, int64_t(workspace_bytes / per_head));
}

void CheckShape(const AttentionShape& sh) {
  CUDA_HOST_CHECK(sh.B > 0 && sh.S > 0 && sh.N > 0 && sh.Dqk > 0 && sh.Dv > 0,
                  "attention shape must be positive");
  CUDA_HOST_CHECK(std::isfinite(sh.scale) && sh.scale > 0, "attention scale must be > 0");
  CUDA_HOST_CHECK(sh.S * sh.S <= INT_MAX, "attention rows S * S exceed cuBLAS's int strides");
}

// ---- execution ----------------------------------------------------------------------------

template <typename T>
void Run(cublasHandle_t handle, const std::vector<UnfusedAttentionStep>& steps,
         cudaStream_t stream) {
  CUBLAS_CHECK(cublasSetStream(handle, stream));
  const float beta = 0.0f;
  for (const UnfusedAttentionStep& st : steps) {
    switch (st.kind) {
      case UnfusedAttentionStep::Kind::kGemm:
        // FP32 accumulation for both dtypes; with FP32 operands this is true FP32 (no TF32:
        // the handle keeps CUBLAS_DEFAULT_MATH), which the 1e-5 comparison with the CPU needs.
        CUBLAS_CHECK(cublasGemmStridedBatchedEx(
            handle, st.op_a, st.op_b, st.m, st.n, st.k, &st.alpha, st.a, st.ab_type, st.lda,
            st.stride_a, st.b, st.ab_type, st.ldb, st.stride_b, &beta, st.c, st.c_type, st.ldc,
            st.stride_c, st.batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        break;
      case UnfusedAttentionStep::Kind::kSoftmax:
        CausalSoftmaxKernel<T>
            <<<unsigned(st.rows), kBlock, 0, stream>>>(st.f32, static_cast<T*>(st.out), st.S);
        CUDA_CHECK_LAUNCH();
        break;
      case UnfusedAttentionStep::Kind::kSoftmaxBackward:
        CausalSoftmaxBackwardKernel<T><<<unsigned(st.rows), kBlock, 0, stream>>>(
            static_cast<const T*>(st.probs), st.f32, static_cast<T*>(st.out), st.S);
        CUDA_CHECK_LAUNCH();
        break;
    }
  }
}

}  // namespace

size_t UnfusedAttentionWorkspaceBytes(const AttentionShape& sh, AttentionDtype dtype) {
  return size_t(sh.N) * PerHeadBytes(sh, AttentionElementBytes(dtype));
}

template <typename T>
std::vector<UnfusedAttentionStep> UnfusedAttentionForwardPlan(const AttentionShape& sh, const T* q,
                                                              const T* k, const T* v, T* out,
                                                              T* probs, void* workspace,
                                                              size_t workspace_bytes) {
  static_assert(std::is_same<T, float>::value || std::is_same<T, uint16_t>::value,
                "float or BF16 bits");
  CheckShape(sh);
  const int64_t S = sh.S, N = sh.N, Dqk = sh.Dqk, Dv = sh.Dv;
  const int64_t ldqk = N * Dqk, ldv = N * Dv;  // row strides of [B, S, N, D]
  const int64_t hc = HeadsPerChunk(sh, sizeof(T), workspace_bytes);
  const cudaDataType t = CudaType<T>();
  float* scores = static_cast<float*>(workspace);  // [hc, S, S]
  std::vector<UnfusedAttentionStep> steps;
  for (int64_t b = 0; b < sh.B; ++b) {
    for (int64_t h0 = 0; h0 < N; h0 += hc) {
      const int64_t nh = MinI64(hc, N - h0);
      const T* qb = q + b * S * ldqk + h0 * Dqk;  // head h0 of [S, Dqk] blocks, stride Dqk
      const T* kb = k + b * S * ldqk + h0 * Dqk;
      const T* vb = v + b * S * ldv + h0 * Dv;
      T* ob = out + b * S * ldv + h0 * Dv;
      T* pb = probs + (b * N + h0) * S * S;  // [nh, S, S]
      // scores [nh, S, S] fp32 = scale Q K^T
      steps.push_back(GemmRowMajor(false, true, S, S, Dqk, float(sh.scale), {qb, ldqk, Dqk},
                                   {kb, ldqk, Dqk}, t, scores, CUDA_R_32F, S, S * S, nh));
      steps.push_back(
          RowStep(UnfusedAttentionStep::Kind::kSoftmax, scores, nullptr, pb, nh * S, S));
      // out [S, Dv] per head = P V
      steps.push_back(GemmRowMajor(false, false, S, Dv, S, 1.0f, {pb, S, S * S}, {vb, ldv, Dv}, t,
                                   ob, t, ldv, Dv, nh));
    }
  }
  return steps;
}

template <typename T>
std::vector<UnfusedAttentionStep> UnfusedAttentionBackwardPlan(
    const AttentionShape& sh, const T* dout, const T* q, const T* k, const T* v, const T* probs,
    T* dq, T* dk, T* dv, void* workspace, size_t workspace_bytes) {
  static_assert(std::is_same<T, float>::value || std::is_same<T, uint16_t>::value,
                "float or BF16 bits");
  CheckShape(sh);
  const int64_t S = sh.S, N = sh.N, Dqk = sh.Dqk, Dv = sh.Dv;
  const int64_t ldqk = N * Dqk, ldv = N * Dv;
  const int64_t hc = HeadsPerChunk(sh, sizeof(T), workspace_bytes);
  const cudaDataType t = CudaType<T>();
  float* dp = static_cast<float*>(workspace);     // [hc, S, S] fp32
  T* ds = reinterpret_cast<T*>(dp + hc * S * S);  // [hc, S, S] element type
  static_assert(alignof(float) % alignof(T) == 0, "dS follows dP in the workspace");
  const float scale = float(sh.scale);
  std::vector<UnfusedAttentionStep> steps;
  for (int64_t b = 0; b < sh.B; ++b) {
    for (int64_t h0 = 0; h0 < N; h0 += hc) {
      const int64_t nh = MinI64(hc, N - h0);
      const T* qb = q + b * S * ldqk + h0 * Dqk;
      const T* kb = k + b * S * ldqk + h0 * Dqk;
      const T* vb = v + b * S * ldv + h0 * Dv;
      const T* dob = dout + b * S * ldv + h0 * Dv;
      const T* pb = probs + (b * N + h0) * S * S;
      T* dqb = dq + b * S * ldqk + h0 * Dqk;
      T* dkb = dk + b * S * ldqk + h0 * Dqk;
      T* dvb = dv + b * S * ldv + h0 * Dv;
      // dV [S, Dv] = P^T dO
      steps.push_back(GemmRowMajor(true, false, S, Dv, S, 1.0f, {pb, S, S * S}, {dob, ldv, Dv}, t,
                                   dvb, t, ldv, Dv, nh));
      // dP [S, S] fp32 = dO V^T
      steps.push_back(GemmRowMajor(false, true, S, S, Dv, 1.0f, {dob, ldv, Dv}, {vb, ldv, Dv}, t,
                                   dp, CUDA_R_32F, S, S * S, nh));
      steps.push_back(RowStep(UnfusedAttentionStep::Kind::kSoftmaxBackward, dp, pb, ds, nh * S, S));
      // dQ [S, Dqk] = scale dS K;  dK [S, Dqk] = scale dS^T Q
      steps.push_back(GemmRowMajor(false, false, S, Dqk, S, scale, {ds, S, S * S}, {kb, ldqk, Dqk},
                                   t, dqb, t, ldqk, Dqk, nh));
      steps.push_back(GemmRowMajor(true, false, S, Dqk, S, scale, {ds, S, S * S}, {qb, ldqk, Dqk},
                                   t, dkb, t, ldqk, Dqk, nh));
    }
  }
  return steps;
}

template <typename T>
void UnfusedAttentionForward(cublasHandle_t handle, const AttentionShape& sh, const T* q,
                             const T* k, const T* v, T* out, T* probs, void* workspace,
                             size_t workspace_bytes, cudaStream_t stream) {
  Run<T>(handle,
         UnfusedAttentionForwardPlan<T>(sh, q, k, v, out, probs, workspace, workspace_bytes),
         stream);
}

template <typename T>
void UnfusedAttentionBackward(cublasHandle_t handle, const AttentionShape& sh, const T* dout,
                              const T* q, const T* k, const T* v, const T* probs, T* dq, T* dk,
                              T* dv, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  Run<T>(handle,
         UnfusedAttentionBackwardPlan<T>(sh, dout, q, k, v, probs, dq, dk, dv, workspace,
                                         workspace_bytes),
         stream);
}

#define MT_ATTENTION_UNFUSED_INSTANTIATE(T)                                                       \
  template std::vector<UnfusedAttentionStep> UnfusedAttentionForwardPlan<T>(                      \
      const AttentionShape&, const T*, const T*, const T*, T*, T*, void*, size_t);                \
  template std::vector<UnfusedAttentionStep> UnfusedAttentionBackwardPlan<T>(                     \
      const AttentionShape&, const T*, const T*, const T*, const T*, const T*, T*, T*, T*, void*, \
      size_t);                                                                                    \
  template void UnfusedAttentionForward<T>(cublasHandle_t, const AttentionShape&, const T*,       \
                                           const T*, const T*, T*, T*, void*, size_t,             \
                                           cudaStream_t);                                         \
  template void UnfusedAttentionBackward<T>(cublasHandle_t, const AttentionShape&, const T*,      \
                                            const T*, const T*, const T*, const T*, T*, T*, T*,   \
                                            void*, size_t, cudaStream_t);
MT_ATTENTION_UNFUSED_INSTANTIATE(float)
MT_ATTENTION_UNFUSED_INSTANTIATE(uint16_t)
#undef MT_ATTENTION_UNFUSED_INSTANTIATE

}  // namespace mt::cuda

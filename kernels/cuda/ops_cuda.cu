// kernels/cuda/ops_cuda.cu: fp32 CUDA kernels for RMSNorm, RoPE, SwiGLU, embedding and
// the elementwise helpers, with their host launchers (declared in ops_cuda.h).
//
// These are simple, memory-bound kernels: grid-stride loops for elementwise work, one block
// per row for RMSNorm. Reductions combine partial sums in a fixed order so results repeat
// run to run; only EmbeddingBackward uses atomics (repeated ids), as its contract says.
#include "kernels/cuda/ops_cuda.h"

#include <algorithm>
#include <climits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_check.h"

namespace mt::cuda {
namespace {

// RmsNorm dw: a tile of kDwCols columns, each summed over rows by kDwRowLanes threads.
constexpr int kDwCols = 32;
constexpr int kDwRowLanes = 16;
static_assert(kDwCols * kDwRowLanes <= 1024, "dw tile exceeds a block");

// ---- CUDA kernels ---------------------------------------------------------------------

// One block per row.
__global__ void RmsNormForwardKernel(const float* x, const float* w, float* y, float* rstd,
                                     int64_t C, float eps) {
  const int64_t r = blockIdx.x;
  const float* xr = x + r * C;  // [C]
  // RmsNormQuantizeKernel (fp8_quant.cu) repeats these steps exactly: keep them in step.
  float ss = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) ss += xr[c] * xr[c];
  ss = BlockSum(ss);
  const float rs = 1.0f / sqrtf(ss / float(C) + eps);
  if (threadIdx.x == 0) rstd[r] = rs;
  float* yr = y + r * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) yr[c] = xr[c] * rs * w[c];
}

// One block per row: dx = rstd * w * dy - x * rstd^3 * mean(x * w * dy).
__global__ void RmsNormBackwardDxKernel(const float* dy, const float* x, const float* w,
                                        const float* rstd, float* dx, int64_t C) {
  const int64_t r = blockIdx.x;
  const float* xr = x + r * C;
  const float* dyr = dy + r * C;
  float dot = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dot += xr[c] * w[c] * dyr[c];
  dot = BlockSum(dot);
  const float rs = rstd[r];
  const float coef = rs * rs * rs * dot / float(C);
  float* dxr = dx + r * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    dxr[c] = rs * w[c] * dyr[c] - xr[c] * coef;
  }
}

// Block = kDwCols columns x kDwRowLanes row lanes; lanes are combined in a fixed order.
__global__ void RmsNormBackwardDwKernel(const float* dy, const float* x, const float* rstd,
                                        float* dw, int64_t rows, int64_t C) {
  __shared__ float part[kDwRowLanes][kDwCols + 1];  // +1: no bank conflicts on the column sum
  const int64_t c = int64_t(blockIdx.x) * kDwCols + threadIdx.x;
  float acc = 0;
  if (c < C) {
    for (int64_t r = threadIdx.y; r < rows; r += kDwRowLanes) {
      acc += dy[r * C + c] * x[r * C + c] * rstd[r];
    }
  }
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float sum = 0;
    for (int lane = 0; lane < kDwRowLanes; ++lane) sum += part[lane][threadIdx.x];
    dw[c] += sum;
  }
}

// One thread per rotated pair; sign -1 applies the transpose. Double math as on the CPU.
__global__ void RopeKernel(float* x, int64_t S, int64_t H, int64_t stride, int64_t offset,
                           int64_t half, const double* cos, const double* sin, double sign,
                           int64_t num_pairs) {
  MT_GRID_STRIDE(idx, num_pairs) {
    const int64_t i = idx % half;
    const int64_t row = idx / half;  // (b, s, h) flattened
    const int64_t s = (row / H) % S;
    float* v = x + row * stride + offset + 2 * i;
    const double a = v[0], b = v[1];
    const double c = cos[s * half + i], sn = sign * sin[s * half + i];
    v[0] = float(a * c - b * sn);
    v[1] = float(a * sn + b * c);
  }
}

__global__ void SwigluForwardKernel(const float* gate, const float* up, float* h, int64_t n) {
  MT_GRID_STRIDE(i, n) {
    const float g = gate[i];
    h[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

__global__ void SwigluBackwardKernel(const float* dh, const float* gate, const float* up,
                                     float* dgate, float* dup, int64_t n) {
  MT_GRID_STRIDE(i, n) {
    const float g = gate[i];
    const float sig = 1.0f / (1.0f + expf(-g));
    dgate[i] = dh[i] * up[i] * sig * (1.0f + g * (1.0f - sig));
    dup[i] = dh[i] * g * sig;
  }
}

__global__ void EmbeddingForwardKernel(const int32_t* ids, const float* table, float* out,
                                       int64_t n, int64_t C) {
  MT_GRID_STRIDE(idx, n * C) {
    const int64_t t = idx / C, c = idx % C;
    out[idx] = table[int64_t(ids[t]) * C + c];
  }
}

__global__ void EmbeddingBackwardKernel(const int32_t* ids, const float* dout, float* dtable,
                                        int64_t n, int64_t C) {
  MT_GRID_STRIDE(idx, n * C) {
    const int64_t t = idx / C, c = idx % C;
    atomicAdd(dtable + int64_t(ids[t]) * C + c, dout[idx]);
  }
}

__global__ void AxpyKernel(float a, const float* x, float* y, int64_t n) {
  MT_GRID_STRIDE(i, n) { y[i] += a * x[i]; }
}

// One thread per element of the [rows, cols] block; consecutive threads walk a row.
__global__ void Add2DKernel(const float* src, int64_t src_ld, float* dst, int64_t dst_ld,
                            int64_t cols, int64_t n) {
  MT_GRID_STRIDE(i, n) {
    const int64_t r = i / cols, c = i % cols;
    dst[r * dst_ld + c] += src[r * src_ld + c];
  }
}

__global__ void Broadcast2DKernel(const float* src, int64_t src_ld, float* dst, int64_t dst_ld,
                                  int64_t stride, int64_t repeats, int64_t cols, int64_t n) {
  MT_GRID_STRIDE(i, n) {  // i over [rows, cols]: one read, `repeats` writes
    const int64_t r = i / cols, c = i % cols;
    const float v = src[r * src_ld + c];
    for (int64_t h = 0; h < repeats; ++h) dst[r * dst_ld + h * stride + c] = v;
  }
}

__global__ void SumRepeats2DKernel(const float* src, int64_t src_ld, int64_t stride,
                                   int64_t repeats, float* dst, int64_t dst_ld, int64_t cols,
                                   int64_t n) {
  MT_GRID_STRIDE(i, n) {
    const int64_t r = i / cols, c = i % cols;
    float acc = dst[r * dst_ld + c];
    for (int64_t h = 0; h < repeats; ++h) acc += src[r * src_ld + h * stride + c];
    dst[r * dst_ld + c] = acc;
  }
}

// One thread per element; reads along a row, writes strided (a tiled shared-memory
// transpose is the tuning pass's: the FP8 Wgrad path is the only user so far).
__global__ void TransposeKernel(const float* x, float* y, int64_t rows, int64_t cols, int64_t n) {
  MT_GRID_STRIDE(i, n) {
    const int64_t r = i / cols, c = i % cols;
    y[c * rows + r] = x[i];
  }
}

#undef MT_GRID_STRIDE

void CheckRows(int64_t rows, int64_t C) {
  CUDA_HOST_CHECK(rows >= 0 && C > 0, "rows must be >= 0 and C > 0");
  CUDA_HOST_CHECK(rows <= INT_MAX, "one block per row: rows must fit grid.x");
}

}  // namespace

// ---- kernel launchers -----------------------------------------------------------------

void RmsNormForward(const float* x, const float* w, float* y, float* rstd, int64_t rows, int64_t C,
                    double eps, cudaStream_t stream) {
  CheckRows(rows, C);
  if (rows == 0) return;
  RmsNormForwardKernel<<<unsigned(rows), kBlock, 0, stream>>>(x, w, y, rstd, C, float(eps));
  CUDA_CHECK_LAUNCH();
}

void RmsNormBackward(const float* dy, const float* x, const float* w, const float* rstd, float* dx,
                     float* dw, int64_t rows, int64_t C, cudaStream_t stream) {
  CheckRows(rows, C);
  if (rows == 0) return;
  RmsNormBackwardDxKernel<<<unsigned(rows), kBlock, 0, stream>>>(dy, x, w, rstd, dx, C);
  CUDA_CHECK_LAUNCH();
  const unsigned tiles = unsigned((C + kDwCols - 1) / kDwCols);
  const dim3 tile(kDwCols, kDwRowLanes);
  RmsNormBackwardDwKernel<<<tiles, tile, 0, stream>>>(dy, x, rstd, dw, rows, C);
  CUDA_CHECK_LAUNCH();
}

namespace {
void LaunchRope(float* x, int64_t B, int64_t S, int64_t H, int64_t stride, int64_t offset,
                int64_t dr, const double* cos, const double* sin, double sign,
                cudaStream_t stream) {
  CUDA_HOST_CHECK(dr % 2 == 0, "RoPE rotary dim must be even (adjacent pairs)");
  CUDA_HOST_CHECK(offset >= 0 && offset + dr <= stride, "RoPE slice outside the head stride");
  const int64_t num_pairs = B * S * H * (dr / 2);
  if (num_pairs == 0) return;
  RopeKernel<<<GridFor(num_pairs), kBlock, 0, stream>>>(x, S, H, stride, offset, dr / 2, cos, sin,
                                                        sign, num_pairs);
  CUDA_CHECK_LAUNCH();
}
}  // namespace

void RopeForward(float* x, int64_t B, int64_t S, int64_t H, int64_t stride, int64_t offset,
                 int64_t dr, const double* cos, const double* sin, cudaStream_t stream) {
  LaunchRope(x, B, S, H, stride, offset, dr, cos, sin, 1.0, stream);
}

void RopeBackward(float* dx, int64_t B, int64_t S, int64_t H, int64_t stride, int64_t offset,
                  int64_t dr, const double* cos, const double* sin, cudaStream_t stream) {
  LaunchRope(dx, B, S, H, stride, offset, dr, cos, sin, -1.0, stream);
}

void SwigluForward(const float* gate, const float* up, float* h, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  SwigluForwardKernel<<<GridFor(n), kBlock, 0, stream>>>(gate, up, h, n);
  CUDA_CHECK_LAUNCH();
}

void SwigluBackward(const float* dh, const float* gate, const float* up, float* dgate, float* dup,
                    int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  SwigluBackwardKernel<<<GridFor(n), kBlock, 0, stream>>>(dh, gate, up, dgate, dup, n);
  CUDA_CHECK_LAUNCH();
}

void EmbeddingForward(const int32_t* ids, const float* table, float* out, int64_t n, int64_t C,
                      cudaStream_t stream) {
  if (n * C == 0) return;
  EmbeddingForwardKernel<<<GridFor(n * C), kBlock, 0, stream>>>(ids, table, out, n, C);
  CUDA_CHECK_LAUNCH();
}

void EmbeddingBackward(const int32_t* ids, const float* dout, float* dtable, int64_t n, int64_t C,
                       cudaStream_t stream) {
  if (n * C == 0) return;
  EmbeddingBackwardKernel<<<GridFor(n * C), kBlock, 0, stream>>>(ids, dout, dtable, n, C);
  CUDA_CHECK_LAUNCH();
}

void Add(const float* x, float* y, int64_t n, cudaStream_t stream) { Axpy(1.0f, x, y, n, stream); }

void Axpy(float a, const float* x, float* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  AxpyKernel<<<GridFor(n), kBlock, 0, stream>>>(a, x, y, n);
  CUDA_CHECK_LAUNCH();
}

void Add2D(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t rows, int64_t cols,
           cudaStream_t stream) {
  CUDA_HOST_CHECK(rows >= 0 && cols >= 0, "Add2D: negative shape");
  CUDA_HOST_CHECK(rows <= 1 || (src_ld >= cols && dst_ld >= cols),
                  "Add2D: leading dimension smaller than the row");
  const int64_t n = rows * cols;
  if (n == 0) return;
  Add2DKernel<<<GridFor(n), kBlock, 0, stream>>>(src, src_ld, dst, dst_ld, cols, n);
  CUDA_CHECK_LAUNCH();
}

void Broadcast2D(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t stride,
                 int64_t repeats, int64_t rows, int64_t cols, cudaStream_t stream) {
  CUDA_HOST_CHECK(rows >= 0 && cols >= 0 && repeats >= 0, "Broadcast2D: negative shape");
  CUDA_HOST_CHECK(rows <= 1 || (src_ld >= cols && dst_ld >= cols),
                  "Broadcast2D: leading dimension smaller than the row");
  const int64_t n = rows * cols;
  if (n == 0 || repeats == 0) return;
  Broadcast2DKernel<<<GridFor(n), kBlock, 0, stream>>>(src, src_ld, dst, dst_ld, stride, repeats,
                                                       cols, n);
  CUDA_CHECK_LAUNCH();
}

void SumRepeats2D(const float* src, int64_t src_ld, int64_t stride, int64_t repeats, float* dst,
                  int64_t dst_ld, int64_t rows, int64_t cols, cudaStream_t stream) {
  CUDA_HOST_CHECK(rows >= 0 && cols >= 0 && repeats >= 0, "SumRepeats2D: negative shape");
  CUDA_HOST_CHECK(rows <= 1 || (src_ld >= cols && dst_ld >= cols),
                  "SumRepeats2D: leading dimension smaller than the row");
  const int64_t n = rows * cols;
  if (n == 0 || repeats == 0) return;
  SumRepeats2DKernel<<<GridFor(n), kBlock, 0, stream>>>(src, src_ld, stride, repeats, dst, dst_ld,
                                                        cols, n);
  CUDA_CHECK_LAUNCH();
}

void Transpose(const float* x, float* y, int64_t rows, int64_t cols, cudaStream_t stream) {
  CUDA_HOST_CHECK(rows >= 0 && cols >= 0, "Transpose: negative shape");
  const int64_t n = rows * cols;
  if (n == 0) return;
  TransposeKernel<<<GridFor(n), kBlock, 0, stream>>>(x, y, rows, cols, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mt::cuda

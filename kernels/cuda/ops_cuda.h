// kernels/cuda/ops_cuda.h: CUDA (fp32) versions of the pointwise and per-row ops.
//
// Same names, argument order and semantics as the CPU reference in kernels/ops.h ("+="
// outputs accumulate, the rest overwrite), but every pointer is a device pointer and the
// work is enqueued on `stream` (nothing synchronises). tests/gpu/ops_gpu_test.cc checks
// each one against the CPU reference.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace mt::cuda {

// ---- RMSNorm --------------------------------------------------------------------------
// y[R,C] = x * rstd * w, rstd[R] = 1/sqrt(mean(x^2) + eps)
void RmsNormForward(const float* x, const float* w, float* y, float* rstd, int64_t rows, int64_t C,
                    double eps, cudaStream_t stream);
// dx[R,C] overwritten, dw[C] += (deterministic: no atomics)
void RmsNormBackward(const float* dy, const float* x, const float* w, const float* rstd, float* dx,
                     float* dw, int64_t rows, int64_t C, cudaStream_t stream);

// ---- RoPE on adjacent pairs -----------------------------------------------------------
// x [B, S, H, stride], rotary slice [offset, offset + dr) of each head vector; cos, sin
// [S, dr/2] device tables in double (as on the CPU). In place.
void RopeForward(float* x, int64_t B, int64_t S, int64_t H, int64_t stride, int64_t offset,
                 int64_t dr, const double* cos, const double* sin, cudaStream_t stream);
// Transpose of the forward (rotation by the negative angle), in place on dx.
void RopeBackward(float* dx, int64_t B, int64_t S, int64_t H, int64_t stride, int64_t offset,
                  int64_t dr, const double* cos, const double* sin, cudaStream_t stream);

// ---- SwiGLU ---------------------------------------------------------------------------
// h[n] = silu(gate[n]) * up[n]
void SwigluForward(const float* gate, const float* up, float* h, int64_t n, cudaStream_t stream);
// dgate[n], dup[n] from dh[n]
void SwigluBackward(const float* dh, const float* gate, const float* up, float* dgate, float* dup,
                    int64_t n, cudaStream_t stream);

// ---- Embedding ------------------------------------------------------------------------
// out[n,C] = table[ids[n], :]
void EmbeddingForward(const int32_t* ids, const float* table, float* out, int64_t n, int64_t C,
                      cudaStream_t stream);
// dtable[ids[n], :] += dout[n, :] (atomicAdd: summation order of repeated ids varies)
void EmbeddingBackward(const int32_t* ids, const float* dout, float* dtable, int64_t n, int64_t C,
                       cudaStream_t stream);

// ---- Elementwise ----------------------------------------------------------------------
void Add(const float* x, float* y, int64_t n, cudaStream_t stream);            // y += x
void Axpy(float a, const float* x, float* y, int64_t n, cudaStream_t stream);  // y += a x
// dst[r * dst_ld + c] += src[r * src_ld + c] for r < rows, c < cols (a column block of a
// row-major matrix, e.g. one head's slice).
void Add2D(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t rows, int64_t cols,
           cudaStream_t stream);
// For h < repeats: dst [rows, cols] at dst + h * stride (leading dimension dst_ld) = src.
void Broadcast2D(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t stride,
                 int64_t repeats, int64_t rows, int64_t cols, cudaStream_t stream);
// dst [rows, cols] += the blocks at src + h * stride, h = 0, 1, ... in order: each element
// the same float additions as `repeats` Add2D calls.
void SumRepeats2D(const float* src, int64_t src_ld, int64_t stride, int64_t repeats, float* dst,
                  int64_t dst_ld, int64_t rows, int64_t cols, cudaStream_t stream);
// y [cols, rows] = x [rows, cols]^T
void Transpose(const float* x, float* y, int64_t rows, int64_t cols, cudaStream_t stream);

}  // namespace mt::cuda

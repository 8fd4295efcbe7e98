// kernels/ops.h: the CPU reference implementation of every op the trainer uses.
//
// Plain row-major loops plus OpenBLAS GEMMs, templated on the element type: float is what
// training runs; double is what the finite-difference gradient checks run. Each op's
// forward and backward sit side by side. Shapes are in the comments as [dims]; "+=" marks
// outputs that accumulate (weight gradients), everything else overwrites. These functions
// are the reference that the CUDA kernels (kernels/cuda/) are tested against.
#pragma once

#include <cstdint>

namespace mt::ops {

// ---- GEMM -----------------------------------------------------------------------------
// C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C, row-major with leading dimensions
// (elements between rows), so heads inside [B,S,N,D] tensors need no copies.
template <typename T>
void Gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// Linear layer without bias, weights [out, in] as Hugging Face stores them.
// y[M,N] = x[M,K] W[N,K]^T
template <typename T>
void LinearForward(const T* x, const T* w, T* y, int64_t M, int64_t K, int64_t N);
// dx[M,K] = dy[M,N] W[N,K]   (or += when accumulate)
template <typename T>
void LinearBackwardInput(const T* dy, const T* w, T* dx, int64_t M, int64_t K, int64_t N,
                         bool accumulate);
// dW[N,K] += dy[M,N]^T x[M,K]
template <typename T>
void LinearBackwardWeight(const T* dy, const T* x, T* dw, int64_t M, int64_t K, int64_t N);

// ---- RMSNorm --------------------------------------------------------------------------
// y[R,C] = x * rstd * w, rstd[R] = 1/sqrt(mean(x^2) + eps)
template <typename T>
void RmsNormForward(const T* x, const T* w, T* y, T* rstd, int64_t rows, int64_t C, double eps);
// dx[R,C] = ..., dw[C] += ...
template <typename T>
void RmsNormBackward(const T* dy, const T* x, const T* w, const T* rstd, T* dx, T* dw,
                     int64_t rows, int64_t C);

// ---- RoPE on adjacent pairs (DeepSeek's layout) ----------------------------------------
// x is [B, S, H, stride]; the rotary slice of each head vector is [offset, offset + dr).
// Pair i = (x[2i], x[2i+1]) rotates by the angle whose cos/sin are cos[s, i], sin[s, i]
// (tables [S, dr/2], YaRN's attention factor already folded in). In place.
template <typename T>
void RopeForward(T* x, int64_t B, int64_t S, int64_t H, int64_t stride, int64_t offset,
                 int64_t dr, const double* cos, const double* sin);
// The transpose of the forward map (rotation by the negative angle), in place on dx.
template <typename T>
void RopeBackward(T* dx, int64_t B, int64_t S, int64_t H, int64_t stride, int64_t offset,
                  int64_t dr, const double* cos, const double* sin);

// ---- SwiGLU ---------------------------------------------------------------------------
// h[n] = silu(gate[n]) * up[n]
template <typename T>
void SwigluForward(const T* gate, const T* up, T* h, int64_t n);
// dgate[n], dup[n] from dh[n]
template <typename T>
void SwigluBackward(const T* dh, const T* gate, const T* up, T* dgate, T* dup, int64_t n);

// ---- Causal attention core ------------------------------------------------------------
// q,k [B,S,N,Dqk], v [B,S,N,Dv] -> out [B,S,N,Dv]; probs [B,N,S,S] saved for backward
// (softmax in the element type's precision, at least fp32).
template <typename T>
void AttentionForward(const T* q, const T* k, const T* v, T* out, T* probs, int64_t B,
                      int64_t S, int64_t N, int64_t Dqk, int64_t Dv, double scale);
// dq,dk [B,S,N,Dqk], dv [B,S,N,Dv] (overwritten)
template <typename T>
void AttentionBackward(const T* dout, const T* q, const T* k, const T* v, const T* probs, T* dq,
                       T* dk, T* dv, int64_t B, int64_t S, int64_t N, int64_t Dqk, int64_t Dv,
                       double scale);

// ---- Embedding ------------------------------------------------------------------------
// out[n,C] = table[ids[n], :]
template <typename T>
void EmbeddingForward(const int32_t* ids, const T* table, T* out, int64_t n, int64_t C);
// dtable[ids[n], :] += dout[n, :]
template <typename T>
void EmbeddingBackward(const int32_t* ids, const T* dout, T* dtable, int64_t n, int64_t C);

// ---- Cross-entropy --------------------------------------------------------------------
// logits[R,V] is replaced by dlogits = (softmax - onehot(target)) * grad_scale for rows
// whose target >= 0, and by zeros for ignored rows (target < 0). Returns the sum of the
// per-row losses (-log softmax[target]); losses[R] gets each (0 for ignored) if non-null.
template <typename T>
double CrossEntropyForwardBackward(T* logits, const int32_t* targets, int64_t rows, int64_t V,
                                   T grad_scale, T* losses);

// ---- Elementwise ----------------------------------------------------------------------
template <typename T> void Add(const T* x, T* y, int64_t n);              // y += x
template <typename T> void Axpy(T a, const T* x, T* y, int64_t n);        // y += a x
template <typename T> double SumSquares(const T* x, int64_t n);

}  // namespace mt::ops

// kernels/ops.cc: the CPU reference ops declared in kernels/ops.h.
//
// GEMMs go to OpenBLAS; everything else is plain loops, parallelised with OpenMP over rows
// or fixed-size chunks. Reductions (norms, losses, weight gradients) accumulate in double
// and combine partial sums in a fixed order, so results do not depend on the thread count.
#include "kernels/ops.h"

#include "kernels/fast_exp.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/status.h"

namespace mt::ops {
namespace {

// Below this many elements an OpenMP region costs more than the loop it parallelises.
constexpr int64_t kParallelMin = 1 << 15;
// Reductions sum fixed chunks of this size, then the chunk sums in order: deterministic.
constexpr int64_t kReduceChunk = 1 << 14;

int BlasInt(int64_t v, const char* what) {
  MT_CHECK(v >= 0 && v <= std::numeric_limits<int>::max(), "Gemm: ", what, " = ", v,
           " does not fit OpenBLAS's 32-bit int");
  return static_cast<int>(v);
}

void BlasGemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha,
              const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
void BlasGemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, double alpha,
              const double* a, int lda, const double* b, int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace

// ---- GEMM -----------------------------------------------------------------------------

template <typename T>
void Gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  MT_CHECK(M >= 0 && N >= 0 && K >= 0, "Gemm: negative size ", M, "x", N, "x", K);
  MT_CHECK(lda >= std::max<int64_t>(1, trans_a ? M : K), "Gemm: lda ", lda, " too small");
  MT_CHECK(ldb >= std::max<int64_t>(1, trans_b ? K : N), "Gemm: ldb ", ldb, " too small");
  MT_CHECK(ldc >= std::max<int64_t>(1, N), "Gemm: ldc ", ldc, " too small");
  if (M == 0 || N == 0) return;
  if (K == 0) {
    // BLAS would do this too, but some builds reject K == 0 before looking at beta.
    for (int64_t i = 0; i < M; ++i) {
      T* c = C + i * ldc;
      for (int64_t j = 0; j < N; ++j) c[j] = beta == T(0) ? T(0) : beta * c[j];
    }
    return;
  }
  BlasGemm(trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
           BlasInt(M, "M"), BlasInt(N, "N"), BlasInt(K, "K"), alpha, A, BlasInt(lda, "lda"), B,
           BlasInt(ldb, "ldb"), beta, C, BlasInt(ldc, "ldc"));
}

template <typename T>
void LinearForward(const T* x, const T* w, T* y, int64_t M, int64_t K, int64_t N) {
  Gemm<T>(false, true, M, N, K, T(1), x, K, w, K, T(0), y, N);
}

template <typename T>
void LinearBackwardInput(const T* dy, const T* w, T* dx, int64_t M, int64_t K, int64_t N,
                         bool accumulate) {
  Gemm<T>(false, false, M, K, N, T(1), dy, N, w, K, accumulate ? T(1) : T(0), dx, K);
}

template <typename T>
void LinearBackwardWeight(const T* dy, const T* x, T* dw, int64_t M, int64_t K, int64_t N) {
  Gemm<T>(true, false, N, K, M, T(1), dy, N, x, K, T(1), dw, K);
}

// ---- RMSNorm --------------------------------------------------------------------------

template <typename T>
void RmsNormForward(const T* x, const T* w, T* y, T* rstd, int64_t rows, int64_t C, double eps) {
#pragma omp parallel for if (rows * C > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * C;
    double ss = 0;
    for (int64_t c = 0; c < C; ++c) ss += double(xr[c]) * double(xr[c]);
    const double rs = 1.0 / std::sqrt(ss / double(C) + eps);
    rstd[r] = T(rs);
    T* yr = y + r * C;
    for (int64_t c = 0; c < C; ++c) yr[c] = T(double(xr[c]) * rs * double(w[c]));
  }
}

template <typename T>
void RmsNormBackward(const T* dy, const T* x, const T* w, const T* rstd, T* dx, T* dw, int64_t rows,
                     int64_t C) {
  // dx = rstd * w * dy - x * rstd^3 * mean(x * w * dy): the second term is d(rstd)/dx.
#pragma omp parallel for if (rows * C > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * C;
    const T* dyr = dy + r * C;
    const double rs = double(rstd[r]);
    double dot = 0;
    for (int64_t c = 0; c < C; ++c) dot += double(xr[c]) * double(w[c]) * double(dyr[c]);
    const double coef = rs * rs * rs * dot / double(C);
    T* dxr = dx + r * C;
    for (int64_t c = 0; c < C; ++c) {
      dxr[c] = T(rs * double(w[c]) * double(dyr[c]) - double(xr[c]) * coef);
    }
  }
  // dw: parallel over column blocks (not rows) so each column sums rows in a fixed order.
  constexpr int64_t kCols = 64;
  const int64_t blocks = (C + kCols - 1) / kCols;
#pragma omp parallel for if (rows * C > kParallelMin)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kCols, c1 = std::min(C, c0 + kCols);
    double acc[kCols] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const double rs = double(rstd[r]);
      const T* dyr = dy + r * C;
      const T* xr = x + r * C;
      for (int64_t c = c0; c < c1; ++c) acc[c - c0] += double(dyr[c]) * double(xr[c]) * rs;
    }
    for (int64_t c = c0; c < c1; ++c) dw[c] += T(acc[c - c0]);
  }
}

// ---- RoPE -----------------------------------------------------------------------------

namespace {
// Rotates each adjacent pair by the angle (cos, sign * sin); sign -1 is the transpose.
template <typename T>
void RopeRotate(T* x, int64_t B, int64_t S, int64_t H, int64_t stride, int64_t offset, int64_t dr,
                const double* cos, const double* sin, double sign) {
  MT_CHECK(dr % 2 == 0, "RoPE: rotary dim ", dr, " must be even");
  MT_CHECK(offset >= 0 && offset + dr <= stride, "RoPE: slice [", offset, ", ", offset + dr,
           ") outside the head stride ", stride);
  const int64_t half = dr / 2;
#pragma omp parallel for collapse(2) if (B * S * H * dr > kParallelMin)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t s = 0; s < S; ++s) {
      const double* cs = cos + s * half;
      const double* sn = sin + s * half;
      for (int64_t h = 0; h < H; ++h) {
        T* v = x + ((b * S + s) * H + h) * stride + offset;
        for (int64_t i = 0; i < half; ++i) {
          const double a = double(v[2 * i]), bb = double(v[2 * i + 1]);
          const double c = cs[i], sv = sign * sn[i];
          v[2 * i] = T(a * c - bb * sv);
          v[2 * i + 1] = T(a * sv + bb * c);
        }
      }
    }
  }
}
}  // namespace

template <typename T>
void RopeForward(T* x, int64_t B, int64_t S, int64_t H, int64_t stride, int64_t offset, int64_t dr,
                 const double* cos, const double* sin) {
  RopeRotate(x, B, S, H, stride, offset, dr, cos, sin, 1.0);
}

template <typename T>
void RopeBackward(T* dx, int64_t B, int64_t S, int64_t H, int64_t stride, int64_t offset,
                  int64_t dr, const double* cos, const double* sin) {
  RopeRotate(dx, B, S, H, stride, offset, dr, cos, sin, -1.0);
}

// ---- SwiGLU ---------------------------------------------------------------------------

template <typename T>
void SwigluForward(const T* gate, const T* up, T* h, int64_t n) {
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const T g = gate[i];
    h[i] = g / (T(1) + std::exp(-g)) * up[i];
  }
}

template <typename T>
void SwigluBackward(const T* dh, const T* gate, const T* up, T* dgate, T* dup, int64_t n) {
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const T g = gate[i];
    const T sig = T(1) / (T(1) + std::exp(-g));
    // d silu/dg = sig * (1 + g * (1 - sig))
    dgate[i] = dh[i] * up[i] * sig * (T(1) + g * (T(1) - sig));
    dup[i] = dh[i] * g * sig;
  }
}

// ---- Causal attention core ------------------------------------------------------------

template <typename T>
void AttentionForward(const T* q, const T* k, const T* v, T* out, T* probs, int64_t B, int64_t S,
                      int64_t N, int64_t Dqk, int64_t Dv, double scale) {
  const int64_t ldqk = N * Dqk, ldv = N * Dv;
  // One (batch, head) per iteration: with OpenBLAS's OpenMP build the GEMMs inside run on
  // the calling thread, so heads are the unit of parallelism.
#pragma omp parallel for schedule(dynamic) if (B * N > 1)
  for (int64_t bh = 0; bh < B * N; ++bh) {
    const int64_t b = bh / N, h = bh % N;
    const T* qh = q + b * S * ldqk + h * Dqk;  // [S, Dqk] with row stride ldqk
    const T* kh = k + b * S * ldqk + h * Dqk;
    const T* vh = v + b * S * ldv + h * Dv;  // [S, Dv] with row stride ldv
    T* oh = out + b * S * ldv + h * Dv;
    T* p = probs + bh * S * S;  // [S, S]
    // Scores for the whole square; the masked upper triangle is overwritten below.
    Gemm<T>(false, true, S, S, Dqk, T(scale), qh, ldqk, kh, ldqk, T(0), p, S);
    for (int64_t i = 0; i < S; ++i) {
      T* row = p + i * S;
      T mx = row[0];
      for (int64_t j = 1; j <= i; ++j) mx = std::max(mx, row[j]);
      double sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j <= i; ++j) {
        row[j] = ExpNonPositive(row[j] - mx);  // one exp per score, in the element type
        sum += row[j];
      }
      const T inv = T(1.0 / sum);
      for (int64_t j = 0; j <= i; ++j) row[j] *= inv;
      for (int64_t j = i + 1; j < S; ++j) row[j] = T(0);
    }
    Gemm<T>(false, false, S, Dv, S, T(1), p, S, vh, ldv, T(0), oh, ldv);
  }
}

template <typename T>
void AttentionBackward(const T* dout, const T* q, const T* k, const T* v, const T* probs, T* dq,
                       T* dk, T* dv, int64_t B, int64_t S, int64_t N, int64_t Dqk, int64_t Dv,
                       double scale) {
  const int64_t ldqk = N * Dqk, ldv = N * Dv;
#pragma omp parallel if (B * N > 1)
  {
    std::vector<T> ds(S * S);  // [S, S] dP, then dS in place (per thread)
#pragma omp for schedule(dynamic)
    for (int64_t bh = 0; bh < B * N; ++bh) {
      const int64_t b = bh / N, h = bh % N;
      const T* qh = q + b * S * ldqk + h * Dqk;
      const T* kh = k + b * S * ldqk + h * Dqk;
      const T* vh = v + b * S * ldv + h * Dv;
      const T* doh = dout + b * S * ldv + h * Dv;
      const T* p = probs + bh * S * S;
      T* dqh = dq + b * S * ldqk + h * Dqk;
      T* dkh = dk + b * S * ldqk + h * Dqk;
      T* dvh = dv + b * S * ldv + h * Dv;
      // dV = P^T dO
      Gemm<T>(true, false, S, Dv, S, T(1), p, S, doh, ldv, T(0), dvh, ldv);
      // dP = dO V^T
      Gemm<T>(false, true, S, S, Dv, T(1), doh, ldv, vh, ldv, T(0), ds.data(), S);
      // dS = P * (dP - rowsum(dP * P)); zero above the diagonal because P is.
      for (int64_t i = 0; i < S; ++i) {
        const T* pr = p + i * S;
        T* dr = ds.data() + i * S;
        double dot = 0;
        for (int64_t j = 0; j <= i; ++j) dot += double(pr[j]) * double(dr[j]);
        const T d = T(dot);
        for (int64_t j = 0; j <= i; ++j) dr[j] = pr[j] * (dr[j] - d);
        for (int64_t j = i + 1; j < S; ++j) dr[j] = T(0);
      }
      // dQ = scale * dS K, dK = scale * dS^T Q
      Gemm<T>(false, false, S, Dqk, S, T(scale), ds.data(), S, kh, ldqk, T(0), dqh, ldqk);
      Gemm<T>(true, false, S, Dqk, S, T(scale), ds.data(), S, qh, ldqk, T(0), dkh, ldqk);
    }
  }
}

// ---- Embedding ------------------------------------------------------------------------

template <typename T>
void EmbeddingForward(const int32_t* ids, const T* table, T* out, int64_t n, int64_t C) {
#pragma omp parallel for if (n * C > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    MT_CHECK(ids[i] >= 0, "Embedding: negative id ", ids[i], " at position ", i);
    std::copy(table + int64_t(ids[i]) * C, table + (int64_t(ids[i]) + 1) * C, out + i * C);
  }
}

template <typename T>
void EmbeddingBackward(const int32_t* ids, const T* dout, T* dtable, int64_t n, int64_t C) {
  // Serial over tokens: repeated ids write the same row, and a fixed order keeps it exact.
  for (int64_t i = 0; i < n; ++i) {
    MT_CHECK(ids[i] >= 0, "Embedding: negative id ", ids[i], " at position ", i);
    T* row = dtable + int64_t(ids[i]) * C;
    const T* g = dout + i * C;
    for (int64_t c = 0; c < C; ++c) row[c] += g[c];
  }
}

// ---- Cross-entropy --------------------------------------------------------------------

template <typename T>
double CrossEntropyForwardBackward(T* logits, const int32_t* targets, int64_t rows, int64_t V,
                                   T grad_scale, T* losses) {
  std::vector<double> row_loss(rows);
#pragma omp parallel for if (rows * V > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    T* x = logits + r * V;
    const int32_t t = targets[r];
    if (t < 0) {
      std::fill(x, x + V, T(0));
      row_loss[r] = 0;
      continue;
    }
    MT_CHECK(t < V, "CrossEntropy: target ", t, " at row ", r, " >= vocab ", V);
    T mx = x[0];
    for (int64_t j = 1; j < V; ++j) mx = std::max(mx, x[j]);
    const double target_logit = double(x[t]);
    double sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < V; ++j) {  // one exp per logit, in the element type
      x[j] = ExpNonPositive(x[j] - mx);
      sum += x[j];
    }
    row_loss[r] = double(mx) + std::log(sum) - target_logit;
    const double gs = double(grad_scale);
    const T scale = T(gs / sum);
    for (int64_t j = 0; j < V; ++j) x[j] *= scale;
    x[t] = T(double(x[t]) - gs);
  }
  double total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    total += row_loss[r];
    if (losses != nullptr) losses[r] = T(row_loss[r]);
  }
  return total;
}

// ---- Elementwise ----------------------------------------------------------------------

template <typename T>
void Add(const T* x, T* y, int64_t n) {
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

template <typename T>
void Axpy(T a, const T* x, T* y, int64_t n) {
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

template <typename T>
double SumSquares(const T* x, int64_t n) {
  const int64_t chunks = (n + kReduceChunk - 1) / kReduceChunk;
  std::vector<double> part(chunks);
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t c = 0; c < chunks; ++c) {
    double s = 0;
    const int64_t end = std::min(n, (c + 1) * kReduceChunk);
    for (int64_t i = c * kReduceChunk; i < end; ++i) s += double(x[i]) * double(x[i]);
    part[c] = s;
  }
  double total = 0;
  for (double s : part) total += s;
  return total;
}

// ---- Instantiations -------------------------------------------------------------------

#define MT_OPS_INSTANTIATE(T)                                                                      \
  template void Gemm<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*,     \
                        int64_t, T, T*, int64_t);                                                  \
  template void LinearForward<T>(const T*, const T*, T*, int64_t, int64_t, int64_t);               \
  template void LinearBackwardInput<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, bool);   \
  template void LinearBackwardWeight<T>(const T*, const T*, T*, int64_t, int64_t, int64_t);        \
  template void RmsNormForward<T>(const T*, const T*, T*, T*, int64_t, int64_t, double);           \
  template void RmsNormBackward<T>(const T*, const T*, const T*, const T*, T*, T*, int64_t,        \
                                   int64_t);                                                       \
  template void RopeForward<T>(T*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,           \
                               const double*, const double*);                                      \
  template void RopeBackward<T>(T*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,          \
                                const double*, const double*);                                     \
  template void SwigluForward<T>(const T*, const T*, T*, int64_t);                                 \
  template void SwigluBackward<T>(const T*, const T*, const T*, T*, T*, int64_t);                  \
  template void AttentionForward<T>(const T*, const T*, const T*, T*, T*, int64_t, int64_t,        \
                                    int64_t, int64_t, int64_t, double);                            \
  template void AttentionBackward<T>(const T*, const T*, const T*, const T*, const T*, T*, T*, T*, \
                                     int64_t, int64_t, int64_t, int64_t, int64_t, double);         \
  template void EmbeddingForward<T>(const int32_t*, const T*, T*, int64_t, int64_t);               \
  template void EmbeddingBackward<T>(const int32_t*, const T*, T*, int64_t, int64_t);              \
  template double CrossEntropyForwardBackward<T>(T*, const int32_t*, int64_t, int64_t, T, T*);     \
  template void Add<T>(const T*, T*, int64_t);                                                     \
  template void Axpy<T>(T, const T*, T*, int64_t);                                                 \
  template double SumSquares<T>(const T*, int64_t);

MT_OPS_INSTANTIATE(float)
MT_OPS_INSTANTIATE(double)
#undef MT_OPS_INSTANTIATE

}  // namespace mt::ops

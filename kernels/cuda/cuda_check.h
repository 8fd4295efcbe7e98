// kernels/cuda/cuda_check.h: fail-fast checks around CUDA runtime, cuBLAS(Lt) and cuDNN calls
// (NCCL's check lives with the NCCL communicator, parallel/communicator_nccl.cc).
//
// One generic macro per library, in the ggml/llm.c style: the expression is evaluated
// once; on failure we print the call, the function, file:line and the library's own
// message, then abort. A failed CUDA call leaves the context unusable, so there is nothing
// to recover: a Status would only travel up to the same abort.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#if __has_include(<cudnn.h>)
#include <cudnn.h>
#define MT_HAVE_CUDNN 1
#endif

#include <cstdio>
#include <cstdlib>

namespace mt::cuda {

[[noreturn]] inline void CheckFailed(const char* what, const char* expr, const char* func,
                                     const char* file, int line, const char* message) {
  std::fprintf(stderr, "[moetrain] %s failed: %s\n  in %s at %s:%d\n  %s\n", what, expr, func, file,
               line, message);
  std::fflush(stderr);
  std::abort();
}

}  // namespace mt::cuda

#define MT_CUDA_CHECK_GEN_(what, expr, success, message_fn)                                    \
  do {                                                                                         \
    const auto mt_err_ = (expr);                                                               \
    if (mt_err_ != (success)) {                                                                \
      ::mt::cuda::CheckFailed(what, #expr, __func__, __FILE__, __LINE__, message_fn(mt_err_)); \
    }                                                                                          \
  } while (0)

// CUDA_CHECK(cudaMemcpyAsync(...));
#define CUDA_CHECK(expr) MT_CUDA_CHECK_GEN_("CUDA", expr, cudaSuccess, cudaGetErrorString)
// CUBLAS_CHECK(cublasGemmEx(...)) (needs libcublas);
#define CUBLAS_CHECK(expr) \
  MT_CUDA_CHECK_GEN_("cuBLAS", expr, CUBLAS_STATUS_SUCCESS, cublasGetStatusString)
// CUBLASLT_CHECK(cublasLtMatmul(...)): the message from cuBLASLt itself, so code that uses
// only cuBLASLt does not link libcublas.
#define CUBLASLT_CHECK(expr) \
  MT_CUDA_CHECK_GEN_("cuBLASLt", expr, CUBLAS_STATUS_SUCCESS, cublasLtGetStatusString)
#ifdef MT_HAVE_CUDNN
// CUDNN_CHECK(cudnnBackendExecute(...));
#define CUDNN_CHECK(expr) \
  MT_CUDA_CHECK_GEN_("cuDNN", expr, CUDNN_STATUS_SUCCESS, cudnnGetErrorString)
#endif
// After every kernel launch: catches bad launch configurations at the launch site.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

// Host-side invariant of a launcher's arguments (shapes, alignment): always on.
#define CUDA_HOST_CHECK(cond, message)                                                    \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      ::mt::cuda::CheckFailed("invariant", #cond, __func__, __FILE__, __LINE__, message); \
    }                                                                                     \
  } while (0)

// bench/gpu/gemm_bench.cc: cuBLASLt GEMM throughput at DeepSeek-V3's shapes, BF16 vs FP8.
//
// Y[M, N] = X[M, K] W[N, K]^T with M = 4096 tokens and the N x K of DeepSeek-V3's linear
// layers (the shapes DeepGEMM's README reports): BF16 with FP32 accumulation, FP8 E4M3
// with 1x128 / 128x128 block scales (sm_90) and FP8 with per-tensor scales. Timed with CUDA
// events over `iters` calls after `warmup` calls; TFLOPS = 2 M N K / time. Prints a table;
// asserts nothing about speed (the figures go to docs/gpu-results.md by hand).
//
//   gemm_bench [--iters 50] [--warmup 10] [--m 4096]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/fp8_quant.h"
#include "kernels/cuda/gemm_cublaslt.h"
#include "kernels/cuda/runtime.h"

namespace mt::cuda {
namespace {

struct Shape {
  int64_t n, k;
};

// Random device data: fp32 in [-1, 1), from a fixed LCG on the host.
float* RandomDevice(int64_t n, uint32_t seed, float scale) {
  std::vector<float> h(n);
  uint32_t s = seed * 2654435761u + 1;
  for (float& x : h) {
    s = s * 1664525u + 1013904223u;
    x = scale * (float(s >> 8) / float(1 << 24) * 2.0f - 1.0f);
  }
  float* d = nullptr;
  CUDA_CHECK(cudaMalloc(&d, n * sizeof(float)));
  CUDA_CHECK(cudaMemcpy(d, h.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  // From pageable memory the copy may return before it lands; the benchmark's streams are
  // non-blocking, so nothing else orders them after it.
  CUDA_CHECK(cudaDeviceSynchronize());
  return d;
}

template <typename F>
double TimeMs(F&& call, int warmup, int iters, cudaStream_t stream) {
  for (int i = 0; i < warmup; ++i) call();
  Event start(true), stop(true);
  start.Record(stream);
  for (int i = 0; i < iters; ++i) call();
  stop.Record(stream);
  stop.Synchronize();
  return stop.ElapsedMsSince(start) / iters;
}

int Main(int argc, char** argv) {
  int iters = 50, warmup = 10;
  int64_t M = 4096;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--iters")) iters = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--warmup")) warmup = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--m")) M = std::atoll(argv[i + 1]);
  }
  auto info = SelectDevice(0);
  if (!info.ok()) {
    std::fprintf(stderr, "gemm_bench: %s\n", info.status().ToString().c_str());
    return 2;
  }
  std::printf("gemm_bench on %s (sm_%d, %d SMs), M = %lld, %d iterations after %d warm-up\n",
              info->name.c_str(), info->sm, info->num_sms, (long long)M, iters, warmup);
  Streams streams;
  const cudaStream_t st = streams.compute();
  const size_t ws_bytes = size_t(32) << 20;
  void* ws = nullptr;
  CUDA_CHECK(cudaMalloc(&ws, ws_bytes));
  auto gemm_or = CublasLtGemm::Create(info->sm, ws, ws_bytes);
  if (!gemm_or.ok()) {
    std::fprintf(stderr, "gemm_bench: %s\n", gemm_or.status().ToString().c_str());
    return 1;
  }
  CublasLtGemm& gemm = **gemm_or;
  const std::vector<Shape> shapes = {{7168, 2048}, {2048, 7168}, {4096, 7168}, {7168, 16384}};
  std::printf("\n| M | N | K | BF16 TFLOPS | FP8 1x128/128x128 TFLOPS | FP8 per-tensor TFLOPS |\n");
  std::printf("|---|---|---|---|---|---|\n");
  int failures = 0;
  for (const Shape& s : shapes) {
    const int64_t N = s.n, K = s.k;
    const double flops = 2.0 * M * N * K;
    float* x = RandomDevice(M * K, 1, 1.0f);
    float* w = RandomDevice(N * K, 2, 0.02f);
    uint16_t *xb, *wb, *yb;
    uint8_t *xq, *wq;
    float *xs, *wsc, *xt, *wt;
    uint32_t* amax;
    CUDA_CHECK(cudaMalloc(&xb, M * K * 2));
    CUDA_CHECK(cudaMalloc(&wb, N * K * 2));
    CUDA_CHECK(cudaMalloc(&yb, M * N * 2));
    CUDA_CHECK(cudaMalloc(&xq, M * K));
    CUDA_CHECK(cudaMalloc(&wq, N * K));
    CUDA_CHECK(cudaMalloc(&xs, ActScaleCount(M, K) * 4));
    CUDA_CHECK(cudaMalloc(&wsc, WeightScaleCount(N, K) * 4));
    CUDA_CHECK(cudaMalloc(&xt, 4));
    CUDA_CHECK(cudaMalloc(&wt, 4));
    CUDA_CHECK(cudaMalloc(&amax, 4));
    FloatToBf16(x, xb, M * K, st);
    FloatToBf16(w, wb, N * K, st);
    std::string cells[3];
    auto run = [&](int col, auto&& call) {
      const absl::Status first = call();
      if (!first.ok()) {
        cells[col] = "failed";
        std::fprintf(stderr, "  %lldx%lldx%lld: %s\n", (long long)M, (long long)N, (long long)K,
                     first.ToString().c_str());
        ++failures;
        return;
      }
      const double ms = TimeMs([&] { (void)call(); }, warmup, iters, st);
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%.0f", flops / (ms * 1e-3) / 1e12);
      cells[col] = buf;
    };
    run(0, [&] {
      return gemm.Bf16(false, true, M, N, K, xb, K, wb, K, yb, GemmDtype::kBF16, N, 1.0f, 0.0f, st);
    });
    if (gemm.has_block_scaling()) {
      QuantizeActivation(x, xq, xs, M, K, false, st);
      QuantizeWeight(w, wq, wsc, N, K, false, st);
      run(1, [&] {
        return gemm.Fp8Linear(xq, xs, GemmScale::kVec128, wq, wsc, GemmScale::kBlock128, yb,
                              GemmDtype::kBF16, M, N, K, st);
      });
    } else {
      cells[1] = "n/a (sm_90 only)";
    }
    QuantizeTensorwise(x, xq, xt, amax, M * K, st);
    QuantizeTensorwise(w, wq, wt, amax, N * K, st);
    run(2, [&] {
      return gemm.Fp8Linear(xq, xt, GemmScale::kTensor, wq, wt, GemmScale::kTensor, yb,
                            GemmDtype::kBF16, M, N, K, st);
    });
    std::printf("| %lld | %lld | %lld | %s | %s | %s |\n", (long long)M, (long long)N, (long long)K,
                cells[0].c_str(), cells[1].c_str(), cells[2].c_str());
    for (void* p : {(void*)x, (void*)w, (void*)xb, (void*)wb, (void*)yb, (void*)xq, (void*)wq,
                    (void*)xs, (void*)wsc, (void*)xt, (void*)wt, (void*)amax})
      CUDA_CHECK(cudaFree(p));
  }
  std::printf("\nplans cached: %zu (hits %lld)\n", gemm.cache().size(),
              (long long)gemm.cache().hits());
  CUDA_CHECK(cudaFree(ws));
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace mt::cuda

int main(int argc, char** argv) { return mt::cuda::Main(argc, argv); }

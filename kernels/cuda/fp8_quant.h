// kernels/cuda/fp8_quant.h: DeepSeek-V3's FP8 quantisation on the GPU, BF16 casts, and
// RMSNorm fused with the 1x128 quantisation of its output.
//
// Every function produces the same bytes as its CPU reference (kernels/quantize.h,
// kernels/fp8.h, kernels/bf16.h): the scale rule, the division x / scale (IEEE, nvcc's
// default -prec-div=true), the E4M3 rounding (cvt.rn.satfinite) and the scale layouts
// (VEC128_32F for activations, BLK128x128_32F with zeroed padding for weights) are the same.
// tests/gpu/op_table.cc and backend_table_fp8.cc compare them byte for byte.
//
// Pointers are device pointers; work is enqueued on `stream`.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace mt::cuda {

// Scale-array sizes (elements) in cuBLASLt's layouts.
inline int64_t ActScaleCount(int64_t M, int64_t K) { return (K + 127) / 128 * M; }
inline int64_t WeightScaleLd(int64_t K) { return ((K + 127) / 128 + 3) / 4 * 4; }
inline int64_t WeightScaleCount(int64_t N, int64_t K) { return (N + 127) / 128 * WeightScaleLd(K); }

// y [M, K] = x rounded to E5M6 with a power-of-two scale per 1x128 tile (kernels/e5m6.h;
// the same bits as kernels/quantize.h RoundE5M6Tiles). In place allowed.
void RoundE5M6Tiles(const float* x, float* y, int64_t M, int64_t K, cudaStream_t stream);
// x [M, K] fp32 -> codes [M, K] E4M3, scales [ceil(K/128), M] (VEC128_32F).
void QuantizeActivation(const float* x, uint8_t* codes, float* scales, int64_t M, int64_t K,
                        bool pow2_scales, cudaStream_t stream);
// x [M, K] = codes * scale.
void DequantizeActivation(const uint8_t* codes, const float* scales, float* x, int64_t M, int64_t K,
                          cudaStream_t stream);
// w [N, K] fp32 -> codes [N, K], scales [ceil(N/128), WeightScaleLd(K)] (BLK128x128_32F,
// padding columns written as 0).
void QuantizeWeight(const float* w, uint8_t* codes, float* scales, int64_t N, int64_t K,
                    bool pow2_scales, cudaStream_t stream);
void DequantizeWeight(const uint8_t* codes, const float* scales, float* w, int64_t N, int64_t K,
                      cudaStream_t stream);
// 1x128 tiles of X [M, K] -> 1x128 tiles of X^T [K, M] by re-quantising the dequantised
// values: codes_t [K, M], scales_t [ceil(M/128), K].
void RetileTransposed(const uint8_t* codes, const float* scales, uint8_t* codes_t, float* scales_t,
                      int64_t M, int64_t K, bool pow2_scales, cudaStream_t stream);
// W [N, K] -> W^T [K, N]: codes move, the block-scale grid transposes (exact).
void TransposeWeight(const uint8_t* codes, const float* scales, uint8_t* codes_t, float* scales_t,
                     int64_t N, int64_t K, cudaStream_t stream);
// One scale for the whole tensor (the per-tensor FP8 GEMM of sm_89): x [n] -> codes [n],
// *scale = max(amax, 1e-4) / 448. `amax_scratch` is one device uint32.
void QuantizeTensorwise(const float* x, uint8_t* codes, float* scale, uint32_t* amax_scratch,
                        int64_t n, cudaStream_t stream);

// x [n] fp32 <-> y [n] bf16 bit patterns.
void FloatToBf16(const float* x, uint16_t* y, int64_t n, cudaStream_t stream);
void Bf16ToFloat(const uint16_t* x, float* y, int64_t n, cudaStream_t stream);

// y = RMSNorm(x) * w quantised per 1x128 tile without writing y: x [R, C], w [C] ->
// codes [R, C], scales [ceil(C/128), R], rstd [R]. y's values are exactly those of
// RmsNormForward (ops_cuda.h), so the codes equal QuantizeActivation of its output.
void RmsNormQuantize(const float* x, const float* w, uint8_t* codes, float* scales, float* rstd,
                     int64_t rows, int64_t C, double eps, bool pow2_scales, cudaStream_t stream);

}  // namespace mt::cuda

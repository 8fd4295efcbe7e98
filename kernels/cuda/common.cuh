// kernels/cuda/common.cuh: device helpers shared by the kernels: warp and block reductions
// with a fixed combination order (results repeat run to run), launch sizing, and the FP8 /
// BF16 element conversions that must agree bit for bit with kernels/fp8.h and bf16.h.
#pragma once

#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace mt::cuda {

constexpr int kBlock = 256;          // threads per block for every 1-D launch
constexpr int kWarps = kBlock / 32;  // warps per block in the block reductions
constexpr int kQuantTile = 128;      // FP8 tile edge (kernels/quantize.h)
static_assert(kBlock % 32 == 0 && kBlock <= 1024, "block must be whole warps");
static_assert(kQuantTile == 4 * 32, "a 1x128 tile is one warp with 4 elements per lane");

#define MT_GRID_STRIDE(i, n)                                                \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += int64_t(gridDim.x) * blockDim.x)

// Enough blocks to fill any current GPU; grid-stride loops cover the rest.
inline unsigned GridFor(int64_t n) {
  return unsigned(std::min<int64_t>((n + kBlock - 1) / kBlock, int64_t(1) << 16));
}

__host__ __device__ inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
__host__ __device__ inline int64_t MinI64(int64_t a, int64_t b) { return a < b ? a : b; }

template <typename T>
__device__ __forceinline__ T WarpSum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Max-abs combination as the CPU's std::max(m, |x|) does it: a NaN never wins.
__device__ __forceinline__ float MaxNoNan(float m, float x) { return m < x ? x : m; }

__device__ __forceinline__ float WarpMax(float v) {
  for (int offset = 16; offset > 0; offset >>= 1)
    v = MaxNoNan(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Sum over a kBlock-thread block; every thread gets the same total (summed in warp order).
template <typename T>
__device__ T BlockSum(T v) {
  __shared__ T warp_sums[kWarps];
  v = WarpSum(v);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  T total = 0;
  for (int w = 0; w < kWarps; ++w) total += warp_sums[w];
  __syncthreads();  // warp_sums may be reused by the next call
  return total;
}

__device__ __forceinline__ float BlockMax(float v) {
  __shared__ float warp_max[kWarps];
  v = WarpMax(v);
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = v;
  __syncthreads();
  float m = 0.0f;
  for (int w = 0; w < kWarps; ++w) m = MaxNoNan(m, warp_max[w]);
  __syncthreads();
  return m;
}

// ---- element formats (bit-exact with the CPU) -----------------------------------------

// kernels/fp8.h: round to nearest even, saturating; the sm_89+ cvt instruction.
__device__ __forceinline__ uint8_t FloatToE4M3(float x) {
  return __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3);
}

// Exact: every E4M3 value is a half (and a float).
__device__ __forceinline__ float E4M3ToFloat(uint8_t code) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(code, __NV_E4M3);
  return __half2float(__half(h));
}

// kernels/bf16.h's integer rounding, NaN handling included (cvt.rn.bf16 canonicalises NaN).
__device__ __forceinline__ uint16_t FloatToBf16(float f) {
  const uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x0040u);
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

__device__ __forceinline__ float Bf16ToFloat(uint16_t h) {
  return __uint_as_float(uint32_t(h) << 16);
}

// kernels/quantize.cc Fp8Scale: max(amax, 1e-4) / 448, optionally up to a power of two
// (from the quotient in double, as the CPU does).
__device__ __forceinline__ float Fp8Scale(float amax, bool pow2) {
  const float a = amax < 1e-4f ? 1e-4f : amax;
  if (!pow2) return a / 448.0f;
  const double s = double(a) / 448.0;
  if (isinf(s)) return float(s);
  int e;
  const double m = frexp(s, &e);
  return ldexpf(1.0f, m == 0.5 ? e - 1 : e);
}

// A 1x128 run held by one warp: lane l holds elements l, l + 32, l + 64, l + 96.
constexpr int kQuantPerLane = kQuantTile / 32;

// Quantises one run held by a warp (v[j] = element lane + 32 j, `len` real elements) as
// kernels/quantize.cc does a 1x128 tile, and stores its codes at out[lane + 32 j] and its
// scale at *scale (lane 0). Every lane of the warp must call it.
__device__ __forceinline__ void QuantizeWarpRun(const float (&v)[kQuantPerLane], int len, bool pow2,
                                                uint8_t* out, float* scale) {
  const int lane = threadIdx.x % 32;
  float amax = 0.0f;
#pragma unroll
  for (int j = 0; j < kQuantPerLane; ++j)
    if (lane + 32 * j < len) amax = MaxNoNan(amax, fabsf(v[j]));
  const float s = Fp8Scale(WarpMax(amax), pow2);
#pragma unroll
  for (int j = 0; j < kQuantPerLane; ++j)
    if (lane + 32 * j < len) out[lane + 32 * j] = FloatToE4M3(v[j] / s);
  if (lane == 0) *scale = s;
}

}  // namespace mt::cuda

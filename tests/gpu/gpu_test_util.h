// tests/gpu/gpu_test_util.h: device buffers, random inputs and the error measures of the
// table-driven GPU test (op_table.h).
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_check.h"

namespace mt::cuda::test {

// A device copy of a host vector (or n zeroed elements), freed on scope exit. Complete when
// constructed: cudaMemcpy from pageable memory may return before its DMA lands, and
// cudaMemset does not wait at all, while the tests' streams are non-blocking (runtime.h),
// so nothing would order their kernels after the fill.
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(const std::vector<T>& host) : n_(host.size()) {
    CUDA_CHECK(cudaMalloc(&ptr_, n_ * sizeof(T) + 1));  // +1: a valid pointer when empty
    CUDA_CHECK(cudaMemcpy(ptr_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaDeviceSynchronize());
  }
  explicit DeviceBuffer(size_t n) : n_(n) {
    CUDA_CHECK(cudaMalloc(&ptr_, n_ * sizeof(T) + 1));
    CUDA_CHECK(cudaMemset(ptr_, 0, n_ * sizeof(T)));
    CUDA_CHECK(cudaDeviceSynchronize());
  }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const { return ptr_; }
  size_t size() const { return n_; }
  std::vector<T> ToHost() const {
    std::vector<T> host(n_);
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaMemcpy(host.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }

 private:
  size_t n_;
  T* ptr_ = nullptr;
};

inline std::vector<float> Random(int64_t n, uint32_t seed, float scale = 1.0f, float shift = 0.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = shift + scale * u(rng);
  return v;
}

// One comparison: `error` against `tolerance`; exact comparisons count mismatches (tol 0).
struct Check {
  std::string what;
  double error = 0;
  double tolerance = 0;
  bool vacuous = false;  // the reference was all zeros: the comparison proves nothing
  bool ok() const { return !vacuous && error <= tolerance && !std::isnan(error); }
};

// ||got - want|| / ||want|| (normwise relative error) in double.
template <typename A, typename B>
Check RelError(const std::string& what, const std::vector<A>& got, const std::vector<B>& want,
               double tolerance) {
  Check c{what, 0, tolerance};
  if (got.size() != want.size()) return {what + " (size mismatch)", INFINITY, tolerance};
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = double(got[i]) - double(want[i]);
    num += d * d;
    den += double(want[i]) * double(want[i]);
  }
  c.vacuous = den == 0;
  c.error = c.vacuous ? 0 : std::sqrt(num / den);
  return c;
}

// Number of elements whose bytes differ (0 required).
template <typename T>
Check Mismatches(const std::string& what, const std::vector<T>& got, const std::vector<T>& want) {
  Check c{what, 0, 0};
  if (got.size() != want.size()) return {what + " (size mismatch)", INFINITY, 0};
  bool any_nonzero = false;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0) c.error += 1;
    if (want[i] != T(0)) any_nonzero = true;
  }
  c.vacuous = !any_nonzero && !got.empty();
  return c;
}

}  // namespace mt::cuda::test

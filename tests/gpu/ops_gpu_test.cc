// tests/gpu/ops_gpu_test.cc: each CUDA op in kernels/cuda/ops_cuda.h against the CPU
// reference in kernels/ops.h, on random fp32 inputs (normwise relative error < 1e-5).
//
// Skips cleanly (GTEST_SKIP) on machines without a CUDA device, so CI can build and run
// it anywhere; the comparisons only happen on a GPU machine.
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/ops.h"

namespace mt::cuda {
namespace {

// A device copy of a host vector, freed on scope exit.
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(const std::vector<T>& host) : n_(host.size()) {
    CUDA_CHECK(cudaMalloc(&ptr_, n_ * sizeof(T) + 1));  // +1: valid pointer when empty
    CUDA_CHECK(cudaMemcpy(ptr_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() { return ptr_; }
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

std::vector<float> Random(int64_t n, uint32_t seed, float scale = 1.0f, float shift = 0.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = shift + scale * u(rng);
  return v;
}

// ||got - want|| / ||want||, failing the test (with a label) above 1e-5.
void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  ASSERT_GT(den, 0) << what << ": all-zero reference, the comparison would be vacuous";
  EXPECT_LT(std::sqrt(num / den), 1e-5) << what << ": GPU vs CPU reference";
}

class OpsGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
      cudaGetLastError();  // clear the sticky "no device" error for later tests
      GTEST_SKIP() << "no CUDA device: GPU tests skipped";
    }
  }
  cudaStream_t stream_ = nullptr;  // the default stream
};

TEST_F(OpsGpuTest, RmsNorm) {
  const int64_t rows = 37, C = 1000;  // C not a multiple of the block or the dw tile
  const double eps = 1e-6;
  auto x = Random(rows * C, 1, 2.0f), w = Random(C, 2, 0.5f, 1.0f), dy = Random(rows * C, 3);
  std::vector<float> y(rows * C), rstd(rows), dx(rows * C), dw = Random(C, 4);
  DeviceBuffer<float> d_x(x), d_w(w), d_dy(dy), d_y(y), d_rstd(rstd), d_dx(dx), d_dw(dw);
  ops::RmsNormForward<float>(x.data(), w.data(), y.data(), rstd.data(), rows, C, eps);
  ops::RmsNormBackward<float>(dy.data(), x.data(), w.data(), rstd.data(), dx.data(), dw.data(),
                              rows, C);
  RmsNormForward(d_x.get(), d_w.get(), d_y.get(), d_rstd.get(), rows, C, eps, stream_);
  RmsNormBackward(d_dy.get(), d_x.get(), d_w.get(), d_rstd.get(), d_dx.get(), d_dw.get(), rows, C,
                  stream_);
  ExpectClose(d_y.ToHost(), y, "y");
  ExpectClose(d_rstd.ToHost(), rstd, "rstd");
  ExpectClose(d_dx.ToHost(), dx, "dx");
  ExpectClose(d_dw.ToHost(), dw, "dw (accumulated onto random values)");
}

TEST_F(OpsGpuTest, Rope) {
  const int64_t B = 2, S = 19, H = 5, stride = 80, offset = 16, dr = 64;
  std::vector<double> cos(S * dr / 2), sin(S * dr / 2);
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t i = 0; i < dr / 2; ++i) {
      const double angle = s * std::pow(10000.0, -2.0 * i / dr);
      cos[s * dr / 2 + i] = 1.1 * std::cos(angle);  // YaRN-like mscale folded in
      sin[s * dr / 2 + i] = 1.1 * std::sin(angle);
    }
  }
  auto x = Random(B * S * H * stride, 5), dx = Random(B * S * H * stride, 6);
  DeviceBuffer<float> d_x(x), d_dx(dx);
  DeviceBuffer<double> d_cos(cos), d_sin(sin);
  ops::RopeForward<float>(x.data(), B, S, H, stride, offset, dr, cos.data(), sin.data());
  ops::RopeBackward<float>(dx.data(), B, S, H, stride, offset, dr, cos.data(), sin.data());
  RopeForward(d_x.get(), B, S, H, stride, offset, dr, d_cos.get(), d_sin.get(), stream_);
  RopeBackward(d_dx.get(), B, S, H, stride, offset, dr, d_cos.get(), d_sin.get(), stream_);
  ExpectClose(d_x.ToHost(), x, "forward");
  ExpectClose(d_dx.ToHost(), dx, "backward");
}

TEST_F(OpsGpuTest, Swiglu) {
  const int64_t n = 100003;
  auto gate = Random(n, 7, 6.0f), up = Random(n, 8), dh = Random(n, 9);
  std::vector<float> h(n), dgate(n), dup(n);
  DeviceBuffer<float> d_gate(gate), d_up(up), d_dh(dh), d_h(h), d_dgate(dgate), d_dup(dup);
  ops::SwigluForward<float>(gate.data(), up.data(), h.data(), n);
  ops::SwigluBackward<float>(dh.data(), gate.data(), up.data(), dgate.data(), dup.data(), n);
  SwigluForward(d_gate.get(), d_up.get(), d_h.get(), n, stream_);
  SwigluBackward(d_dh.get(), d_gate.get(), d_up.get(), d_dgate.get(), d_dup.get(), n, stream_);
  ExpectClose(d_h.ToHost(), h, "h");
  ExpectClose(d_dgate.ToHost(), dgate, "dgate");
  ExpectClose(d_dup.ToHost(), dup, "dup");
}

TEST_F(OpsGpuTest, Embedding) {
  const int64_t n = 300, V = 50, C = 96;
  std::vector<int32_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = int32_t((7 * i + 3) % V);  // every id ~6 times
  auto table = Random(V * C, 10), dout = Random(n * C, 11), dtable = Random(V * C, 12);
  std::vector<float> out(n * C);
  DeviceBuffer<int32_t> d_ids(ids);
  DeviceBuffer<float> d_table(table), d_dout(dout), d_dtable(dtable), d_out(out);
  ops::EmbeddingForward<float>(ids.data(), table.data(), out.data(), n, C);
  ops::EmbeddingBackward<float>(ids.data(), dout.data(), dtable.data(), n, C);
  EmbeddingForward(d_ids.get(), d_table.get(), d_out.get(), n, C, stream_);
  EmbeddingBackward(d_ids.get(), d_dout.get(), d_dtable.get(), n, C, stream_);
  ExpectClose(d_out.ToHost(), out, "forward");
  ExpectClose(d_dtable.ToHost(), dtable, "backward (accumulated, repeated ids)");
}

TEST_F(OpsGpuTest, AddAxpy) {
  const int64_t n = 77777;
  auto x = Random(n, 13), y_add = Random(n, 14), y_axpy = Random(n, 15);
  DeviceBuffer<float> d_x(x), d_y_add(y_add), d_y_axpy(y_axpy);
  ops::Add<float>(x.data(), y_add.data(), n);
  ops::Axpy<float>(-0.3f, x.data(), y_axpy.data(), n);
  Add(d_x.get(), d_y_add.get(), n, stream_);
  Axpy(-0.3f, d_x.get(), d_y_axpy.get(), n, stream_);
  ExpectClose(d_y_add.ToHost(), y_add, "add");
  ExpectClose(d_y_axpy.ToHost(), y_axpy, "axpy");
}

}  // namespace
}  // namespace mt::cuda

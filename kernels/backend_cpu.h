// kernels/backend_cpu.h: the CPU implementation of kernels/backend.h: the reference every
// other backend is compared with (tests/gpu/backend_table_test.cc).
//
// Dense ops are kernels/ops.h; the MoE ops repeat trainer/moe.cc's loops in the same order
// of operations, so the device model on this backend reproduces the module model
// (trainer/model.h) to the last bit where the order allows (tests/trainer/
// device_model_test.cc). "Device" memory is 64-byte-aligned host memory.
#pragma once

#include "kernels/backend.h"

namespace mt {

class CpuBackend : public Backend {
 public:
  Device device() const override { return Device::kCPU; }
  const char* name() const override { return "cpu"; }

  Tensor Empty(std::vector<int64_t> shape, DType dtype = DType::kF32) override;
  Tensor ToDevice(const Tensor& host) override;
  Tensor ToHost(const Tensor& t) override;
  void CopyToHost(const void* src, void* dst, size_t bytes) override;
  void CopyFromHost(const void* src, void* dst, size_t bytes) override;
  void Zero(Tensor* t) override;
  void Copy(const void* src, void* dst, size_t bytes) override;
  void Copy2D(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t rows,
              int64_t cols) override;
  void CopyBytes2D(const void* src, int64_t src_pitch, void* dst, int64_t dst_pitch, int64_t rows,
                   int64_t width) override;
  void Add2D(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t rows,
             int64_t cols) override;
  void Synchronize() override {}

  void Gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
            const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
            int64_t ldc) override;
  void RmsNormForward(const float* x, const float* w, float* y, float* rstd, int64_t rows,
                      int64_t C, double eps) override;
  void RmsNormBackward(const float* dy, const float* x, const float* w, const float* rstd,
                       float* dx, float* dw, int64_t rows, int64_t C) override;
  void RopeForward(float* x, int64_t B, int64_t S, int64_t H, int64_t stride, int64_t offset,
                   int64_t dr, const double* cos, const double* sin) override;
  void RopeBackward(float* dx, int64_t B, int64_t S, int64_t H, int64_t stride, int64_t offset,
                    int64_t dr, const double* cos, const double* sin) override;
  void SwigluForward(const float* gate, const float* up, float* h, int64_t n) override;
  void SwigluBackward(const float* dh, const float* gate, const float* up, float* dgate, float* dup,
                      int64_t n) override;
  void AttentionForward(const float* q, const float* k, const float* v, float* out, Tensor* saved,
                        int64_t B, int64_t S, int64_t N, int64_t Dqk, int64_t Dv,
                        double scale) override;
  void AttentionBackward(const float* dout, const float* q, const float* k, const float* v,
                         const float* out, const Tensor& saved, float* dq, float* dk, float* dv,
                         int64_t B, int64_t S, int64_t N, int64_t Dqk, int64_t Dv,
                         double scale) override;
  void EmbeddingForward(const int32_t* ids, const float* table, float* out, int64_t n,
                        int64_t C) override;
  void EmbeddingBackward(const int32_t* ids, const float* dout, float* dtable, int64_t n,
                         int64_t C) override;
  void CrossEntropy(float* logits, const int32_t* targets, int64_t rows, int64_t V,
                    float grad_scale, double* loss_sum) override;
  void RoundBf16(const float* x, float* y, int64_t n) override;
  void ToBf16Bits(const float* x, uint16_t* y, int64_t n) override;
  void FromBf16Bits(const uint16_t* x, float* y, int64_t n) override;
  QuantizedActivation QuantizeFp8(const float* x, int64_t M, int64_t K) override;
  void DequantizeFp8(const QuantizedActivation& q, float* x) override;
  QuantizedActivation RetileTransposedFp8(const QuantizedActivation& q) override;
  QuantizedWeight QuantizeWeightFp8(const float* w, int64_t N, int64_t K) override;
  QuantizedWeight TransposeWeightFp8(const QuantizedWeight& w) override;
  void Fp8Gemm(const QuantizedActivation& a, const QuantizedWeight& w, float* y) override;
  void Fp8GemmTokenTiled(const QuantizedActivation& a, const QuantizedActivation& b,
                         float* y) override;
  void Transpose(const float* x, float* y, int64_t rows, int64_t cols) override;
  void RoundE5M6(const float* x, float* y, int64_t M, int64_t K) override;
  void Add(const float* x, float* y, int64_t n) override;
  void Axpy(float a, const float* x, float* y, int64_t n) override;

  void RouterForward(const float* logits, const float* bias, float* scores, int32_t* topk,
                     float* weight, int64_t* load, const RouteShape& shape) override;
  void BalanceForward(const float* scores, const int32_t* topk, double* f, double* loss,
                      const RouteShape& shape) override;
  void RouterBackward(const float* scores, const int32_t* topk, const double* dweight,
                      const double* f, double balance_scale, float* d_logits,
                      const RouteShape& shape) override;
  void MoePlanBuild(const int32_t* topk, int64_t T, int64_t K, int64_t E,
                    const MoeRoutingPlan& plan) override;
  void PermuteRows(const float* x, float* xp, const int32_t* src_token, int64_t P,
                   int64_t H) override;
  void Combine(const float* ye, const float* weight, const int32_t* slot_pos, float* y, int64_t T,
               int64_t K, int64_t H) override;
  void CombineBackward(const float* dy, const float* ye, const float* weight,
                       const int32_t* slot_pos, float* dye, double* dweight, int64_t T, int64_t K,
                       int64_t H) override;
  void UnpermuteAdd(const float* dxp, const int32_t* slot_pos, float* dx, int64_t T, int64_t K,
                    int64_t H) override;
  void SegmentSumRows(const float* x, const int32_t* offsets, const int32_t* rows, float* y,
                      int64_t segments, int64_t H) override;
  void GatherRows(const void* x, void* y, const int32_t* src, int64_t n,
                  int64_t row_bytes) override;
  void GroupedLinearForward(const float* x, const float* w, float* y, const int32_t* offsets,
                            int64_t rows, int64_t E, int64_t K, int64_t N) override;
  void GroupedLinearBackwardInput(const float* dy, const float* w, float* dx,
                                  const int32_t* offsets, int64_t rows, int64_t E, int64_t K,
                                  int64_t N, bool accumulate) override;
  void GroupedLinearBackwardWeight(const float* dy, const float* x, float* dw,
                                   const int32_t* offsets, int64_t rows, int64_t E, int64_t K,
                                   int64_t N) override;

  void SumSquares(const float* g, int64_t n, double* sum_sq) override;
  void Scale(float* g, int64_t n, float scale) override;
  void AdamW(float* w, const float* g, float* m, float* v, int64_t n, bool decay,
             const AdamStepCoeffs& c) override;
  void AdamWBf16Moments(float* w, const float* g, uint16_t* m, uint16_t* v, int64_t n, bool decay,
                        const AdamStepCoeffs& c) override;
};

}  // namespace mt

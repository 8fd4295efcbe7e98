// kernels/cuda/cross_entropy.h: softmax cross-entropy over a chunk of logits, in place.
//
// Same contract as ops::CrossEntropyForwardBackward (kernels/ops.h): logits [R, V] become
// dlogits = (softmax - onehot(target)) * grad_scale for rows with target >= 0 and zeros for
// ignored rows; losses [R] get -log softmax[target] (0 when ignored). The device model's
// head loss (trainer/device_model.cc DeviceModel::HeadLoss, through Backend::CrossEntropy)
// calls it on row chunks of the logits so that no [T, V] fp32 tensor is ever held. With
// dlogits_bf16 set, the gradient is also written as BF16 for the backward GEMMs (the CPU's bf16/fp8
// modes round it the same way).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace mt::cuda {

void CrossEntropyForwardBackward(float* logits, const int32_t* targets, int64_t rows, int64_t V,
                                 float grad_scale, float* losses, uint16_t* dlogits_bf16,
                                 cudaStream_t stream);

// *out (one device double) += sum of x [n], in a fixed order (the losses of a chunk).
// `partials` holds kSumPartials doubles.
constexpr int kSumPartials = 1024;
void SumAccumulate(const float* x, int64_t n, double* partials, double* out, cudaStream_t stream);

}  // namespace mt::cuda

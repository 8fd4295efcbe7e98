// trainer/device_params.h: the model's parameters on a Backend (kernels/backend.h): each
// host parameter's device copy, and the flat value, gradient and moment buffers they live
// in, by optimizer region and class (device_params.cc). Float build only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "trainer/params.h"

namespace mt {
inline namespace MT_REAL_NS {

// A host parameter's device copy: value and gradient, views of DeviceParams' flat buffers
// at `offset`.
struct DeviceParam {
  Param* host = nullptr;
  int64_t offset = 0;  // in DeviceParams::values() (and grads(), when trainable)
  Tensor value, grad;  // expert weights: slices of their layer's [E, N, K] stacks
};

// How the device model keeps AdamW's state (ZeroAdamW's choices).
struct DeviceOptimizerLayout {
  int dp_size = 1, dp_rank = 0;  // ZeRO-1: the moments are split over dp_size ranks
  DType moments = DType::kF32;   // optimizer.moment_dtype: kF32, or kBF16 bit patterns
  // Expert parallelism: 0 keeps the routed experts with the dense parameters (one region);
  // n >= 1 gives them their own region, sharded over the n ranks of the expert-DP group
  // (the ranks holding the same experts), this rank being expert_dp_rank of them.
  int expert_dp_size = 0, expert_dp_rank = 0;
};

// One optimizer region of DeviceParams' flat buffers: parameters whose gradients are
// summed over one group of ranks (ZeroAdamW's Part). Offsets are elements of values() and
// grads(); the region's shards are `shards` equal slices of [begin, padded).
struct DeviceParamRegion {
  int64_t begin = 0;      // the region's first element
  int64_t decayed = 0;    // [begin, decayed) take weight decay
  int64_t trainable = 0;  // [decayed, trainable) do not
  int64_t padded = 0;     // [trainable, padded) zero padding: padded - begin = shards x shard
  int shards = 1, rank = 0;
  int64_t shard_offset = 0;  // where this rank's shard sits in grad_shard(), m() and v()
  int64_t shard_size() const { return (padded - begin) / shards; }
  int64_t shard_begin() const { return begin + rank * shard_size(); }
};

// Every parameter of a ParamStore on one backend. Values, gradients and AdamW's moments
// each live in one flat buffer, so that zeroing the gradients, their norm, clipping and
// AdamW are a launch or two over the whole model rather than a few per parameter (DeepSeek's
// 2.5B benchmark model has ~700 parameters), and data parallelism is one reduce-scatter and
// one all-gather per region (ZeRO-1, as trainer/zero_optimizer.h). Regions: one (every
// trainable parameter over the DP group), or with expert parallelism two, the dense
// parameters (over the DP group) then the routed experts (over the expert-DP group). The
// layout, by optimizer class:
//   values [Pp + Ps] = per region: trainable with weight decay | trainable without |
//                      padding; then state (the routers' e_score_correction_bias, which
//                      AdamW does not touch)
//   grads [Pp]       = the trainable classes at the values' offsets, zero padding
//   grad_shard       = this rank's shard of each region's reduced gradients, back to back
//                      (with one region of one rank, grads itself)
//   m, v             = AdamW's moments of the same elements, FP32 or BF16 bits
// An expert projection's E weights sit back to back, as the [E, N, K] stack the grouped
// GEMMs read.
class DeviceParams {
 public:
  DeviceParams(Backend* backend, ParamStore* host, const DeviceOptimizerLayout& layout = {});
  Backend& backend() const { return *be_; }
  // The device copy of `name` (uploaded on first use).
  DeviceParam* Get(const std::string& name);
  // The weights `names` [N, K] of E experts as one [E, N, K] stack, value and gradient;
  // each becomes a slice of it. Call before Get() of any of them.
  void Stack(const std::vector<std::string>& names, Tensor* value, Tensor* grad);
  // All parameters, in the host store's order (registered or not: checked).
  std::vector<DeviceParam*> All() const;
  // Copies every value (and, with grads, gradient) back to the host parameters.
  void Download(bool grads) const;

  // The flat buffers (above).
  Tensor& values() { return values_; }
  Tensor& grads() { return grads_; }
  Tensor& grad_shard() { return grad_shard_; }
  Tensor& m() { return m_; }
  Tensor& v() { return v_; }
  // The optimizer regions: [0] dense (everything trainable with one region), [1] experts.
  const std::vector<DeviceParamRegion>& regions() const { return regions_; }
  // The region `p` (trainable) belongs to.
  const DeviceParamRegion& RegionOf(const DeviceParam& p) const;
  // With one region, its bounds (device_model_test's ZeRO-1 by hand).
  int64_t decayed() const { return regions_[0].decayed; }
  int64_t trainable() const { return regions_[0].trainable; }
  int64_t padded() const { return regions_.back().padded; }  // Pp
  int64_t shard_begin() const { return regions_[0].shard_begin(); }
  int64_t shard_size() const { return grad_shard_.numel(); }  // all regions' shards
  DType moment_dtype() const { return m_.dtype(); }
  // Moves whenever the values change (DeviceModel::OptimizerStep calls ValuesChanged):
  // copies derived from them, the FP8 weights DLinear and DMoe keep, are rebuilt when it
  // differs from theirs.
  int64_t version() const { return version_; }
  void ValuesChanged() { ++version_; }

 private:
  // The next `n` elements of `p`'s class; sets d->offset and the views of the flat buffers.
  void Place(DeviceParam* d, const Param& p, int64_t n);
  void Bind(DeviceParam* d, std::vector<int64_t> shape) const;
  // Region and class of p in next_ / end_: 0, 1 (dense), 2, 3 (experts), 4 (state).
  int SlotOf(const Param& p) const;

  Backend* be_;
  ParamStore* host_;
  Tensor values_, grads_, grad_shard_, m_, v_;
  std::vector<DeviceParamRegion> regions_;
  int64_t next_[5] = {}, end_[5] = {};  // per slot: the next free offset, the slot's end
  int64_t version_ = 0;
  std::vector<std::unique_ptr<DeviceParam>> params_;  // parallel to host_->all()
};

}  // namespace MT_REAL_NS
}  // namespace mt

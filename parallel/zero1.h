// parallel/zero1.h: ZeRO-1 data parallelism (design.md "Parallel layout"): gradients
// reduce-scattered into per-rank shards, optimizer state and update kept per shard,
// parameters all-gathered back, and the global gradient norm for clipping.
//
// A FlatLayout lays a list of parameters end to end in one flat F32 buffer, in the order
// given, with no gaps between parameters, and cuts it into group_size equal shards. Rank r
// of the group owns elements [r * shard_size, (r + 1) * shard_size). Padding: shard_size is
// ceil(total / group_size) rounded up to a multiple of `align` elements, so the buffer is
// padded() = shard_size * group_size elements, the last (padded - total) of which belong to
// no parameter and stay zero (their gradients are zero, so they never change the norm or
// the update). The layout depends only on the sizes, the group size and align, so every
// rank computes the same one without communicating.
//
// Dense parameters use one layout over the DP group; expert parameters another over the
// expert-DP group (the dp/ep ranks holding the same experts), so they are reduced only over
// their replicas. Both use scale = 1/dp (the full DP size, not the expert-DP size): each
// rank's loss is the mean over its own samples and the step's loss the mean over the dp
// ranks, and an expert's gradient already sums, through the token exchange, the
// contributions of the ep ranks of its EP group (Megatron: expert_gradient_scaling_factor
// = 1 / data_parallel_world_size).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"
#include "parallel/communicator.h"

namespace mt {

// The part of one parameter inside one shard.
struct ShardPiece {
  int param = 0;             // index into the layout's sizes
  int64_t param_offset = 0;  // first element of the piece within the parameter
  int64_t shard_offset = 0;  // first element of the piece within the shard
  int64_t length = 0;
};

class FlatLayout {
 public:
  // sizes [num_params]: elements of each parameter, in flat order. Errors for a negative
  // size, group_size < 1 or align < 1.
  static absl::StatusOr<FlatLayout> Make(std::vector<int64_t> sizes, int group_size,
                                         int64_t align = 16);

  int num_params() const { return static_cast<int>(sizes_.size()); }
  int group_size() const { return group_size_; }
  int64_t size(int param) const { return sizes_[param]; }
  int64_t offset(int param) const { return offsets_[param]; }  // in the flat buffer
  int64_t total() const { return total_; }                     // sum of sizes
  int64_t shard_size() const { return shard_size_; }
  int64_t padded() const { return shard_size_ * group_size_; }  // flat buffer length
  int64_t shard_begin(int rank) const { return rank * shard_size_; }

  // The pieces of parameters in rank's shard, in flat order (what rank's optimizer
  // updates, and what a checkpoint of its optimizer state holds, by parameter).
  std::vector<ShardPiece> Pieces(int rank) const;

 private:
  FlatLayout() = default;
  std::vector<int64_t> sizes_;    // [num_params]
  std::vector<int64_t> offsets_;  // [num_params]
  int group_size_ = 1;
  int64_t total_ = 0, shard_size_ = 0;
};

// Buffers are F32 (training: FP32 master weights and gradients) or F64 (the trainer's double
// build); the tensors of one call share one dtype.
//
// params [num_params] tensors of the layout's sizes -> flat [padded] (padding zeroed).
absl::Status Flatten(const FlatLayout& layout, const std::vector<Tensor>& params, Tensor* flat);
// flat [padded] -> params (each tensor already allocated with the layout's size).
absl::Status Unflatten(const FlatLayout& layout, const Tensor& flat, std::vector<Tensor>* params);

// grads [padded] (this rank's full gradient buffer) -> shard [shard_size] = scale x the
// sum over `group` of every member's block rank(). `group` must have layout.group_size()
// members.
absl::Status ReduceScatterGradients(Communicator& group, const FlatLayout& layout,
                                    const Tensor& grads, Tensor* shard, double scale);

// shard [shard_size] (this rank's updated parameters) -> params [padded], every
// member's shard in rank order.
absl::Status AllGatherParameters(Communicator& group, const FlatLayout& layout, const Tensor& shard,
                                 Tensor* params);

// sqrt of the sum of squares, accumulated in double, of `local_shards` over `world`.
// Across the world the shards must hold every gradient element exactly once: pass each
// rank's dense shard (DP layout) and expert shard (expert-DP layout); padding is zero. The
// result is the true global norm, identical on every rank, for clipping.
absl::StatusOr<double> GlobalNorm(Communicator& world, const std::vector<Tensor>& local_shards);

}  // namespace mt

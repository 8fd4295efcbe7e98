// parallel/zero1.cc: flat-buffer layout and the ZeRO-1 collectives (see zero1.h).
#include "parallel/zero1.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/status.h"

namespace mt {
namespace {

// t must be F32 or F64 (`want`, when given) with n elements.
absl::Status CheckReal(const std::string& what, const Tensor& t, int64_t n,
                       std::optional<DType> want = std::nullopt) {
  const bool real = t.defined() && (t.dtype() == DType::kF32 || t.dtype() == DType::kF64);
  if (real && t.numel() == n && (!want || t.dtype() == *want)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(what, " is ", t.defined() ? DTypeName(t.dtype()) : "undefined", " ",
                   t.defined() ? ShapeString(t.shape()) : "", ", expected ",
                   want ? DTypeName(*want) : "F32 or F64", " with ", n, " elements"));
}

template <typename T>
void Scale(Tensor* t, double scale) {
  T* v = t->data<T>();
  for (int64_t i = 0; i < t->numel(); ++i) v[i] *= static_cast<T>(scale);
}

template <typename T>
double SumOfSquares(const Tensor& t) {
  const T* v = t.data<T>();
  double sq = 0;
  for (int64_t i = 0; i < t.numel(); ++i) sq += static_cast<double>(v[i]) * v[i];
  return sq;
}

absl::Status CheckGroup(const char* what, const Communicator& group, const FlatLayout& layout) {
  if (group.size() == layout.group_size()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(what, ": the layout is for ", layout.group_size(),
                                                 " ranks but ", group.name(), " has ",
                                                 group.size()));
}

}  // namespace

absl::StatusOr<FlatLayout> FlatLayout::Make(std::vector<int64_t> sizes, int group_size,
                                            int64_t align) {
  if (group_size < 1 || align < 1)
    return absl::InvalidArgumentError(absl::StrCat("FlatLayout: group size ", group_size,
                                                   " and align ", align, " must be positive"));
  FlatLayout l;
  l.group_size_ = group_size;
  l.offsets_.reserve(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] < 0)
      return absl::InvalidArgumentError(
          absl::StrCat("FlatLayout: parameter ", i, " has negative size ", sizes[i]));
    l.offsets_.push_back(l.total_);
    l.total_ += sizes[i];
  }
  l.sizes_ = std::move(sizes);
  const int64_t per_rank = (l.total_ + group_size - 1) / group_size;
  l.shard_size_ = std::max<int64_t>((per_rank + align - 1) / align * align, align);
  return l;
}

std::vector<ShardPiece> FlatLayout::Pieces(int rank) const {
  const int64_t begin = shard_begin(rank), end = begin + shard_size_;
  std::vector<ShardPiece> pieces;
  // The first parameter ending after `begin`, then on until one starts at or after `end`.
  auto it = std::upper_bound(offsets_.begin(), offsets_.end(), begin);
  int p = static_cast<int>(it - offsets_.begin()) - 1;
  for (p = std::max(p, 0); p < num_params() && offsets_[p] < end; ++p) {
    const int64_t lo = std::max(begin, offsets_[p]), hi = std::min(end, offsets_[p] + sizes_[p]);
    if (hi <= lo) continue;
    pieces.push_back(ShardPiece{p, lo - offsets_[p], lo - begin, hi - lo});
  }
  return pieces;
}

absl::Status Flatten(const FlatLayout& layout, const std::vector<Tensor>& params, Tensor* flat) {
  if (params.size() != static_cast<size_t>(layout.num_params()))
    return absl::InvalidArgumentError(absl::StrCat(
        "Flatten: ", params.size(), " parameters for a layout of ", layout.num_params()));
  RETURN_IF_ERROR(CheckReal("Flatten: the flat buffer", *flat, layout.padded()));
  const size_t es = DTypeSize(flat->dtype());
  char* out = static_cast<char*>(flat->raw());
  for (int p = 0; p < layout.num_params(); ++p) {
    RETURN_IF_ERROR(CheckReal(absl::StrCat("Flatten: parameter ", p), params[p], layout.size(p),
                              flat->dtype()));
    std::memcpy(out + layout.offset(p) * es, params[p].raw(), layout.size(p) * es);
  }
  std::memset(out + layout.total() * es, 0, (layout.padded() - layout.total()) * es);
  return absl::OkStatus();
}

absl::Status Unflatten(const FlatLayout& layout, const Tensor& flat, std::vector<Tensor>* params) {
  if (params->size() != static_cast<size_t>(layout.num_params()))
    return absl::InvalidArgumentError(absl::StrCat(
        "Unflatten: ", params->size(), " parameters for a layout of ", layout.num_params()));
  RETURN_IF_ERROR(CheckReal("Unflatten: the flat buffer", flat, layout.padded()));
  const size_t es = DTypeSize(flat.dtype());
  for (int p = 0; p < layout.num_params(); ++p) {
    Tensor& t = (*params)[p];
    RETURN_IF_ERROR(
        CheckReal(absl::StrCat("Unflatten: parameter ", p), t, layout.size(p), flat.dtype()));
    std::memcpy(t.raw(), static_cast<const char*>(flat.raw()) + layout.offset(p) * es,
                layout.size(p) * es);
  }
  return absl::OkStatus();
}

absl::Status ReduceScatterGradients(Communicator& group, const FlatLayout& layout,
                                    const Tensor& grads, Tensor* shard, double scale) {
  RETURN_IF_ERROR(CheckGroup("ReduceScatterGradients", group, layout));
  RETURN_IF_ERROR(CheckReal("ReduceScatterGradients: grads", grads, layout.padded()));
  RETURN_IF_ERROR(
      CheckReal("ReduceScatterGradients: shard", *shard, layout.shard_size(), grads.dtype()));
  RETURN_IF_ERROR(group.ReduceScatter(grads, *shard, ReduceOp::kSum));
  if (scale == 1.0) return absl::OkStatus();
  if (shard->dtype() == DType::kF64) {
    Scale<double>(shard, scale);
  } else {
    Scale<float>(shard, scale);
  }
  return absl::OkStatus();
}

absl::Status AllGatherParameters(Communicator& group, const FlatLayout& layout, const Tensor& shard,
                                 Tensor* params) {
  RETURN_IF_ERROR(CheckGroup("AllGatherParameters", group, layout));
  RETURN_IF_ERROR(CheckReal("AllGatherParameters: shard", shard, layout.shard_size()));
  RETURN_IF_ERROR(
      CheckReal("AllGatherParameters: params", *params, layout.padded(), shard.dtype()));
  return group.AllGather(shard, *params);
}

absl::StatusOr<double> GlobalNorm(Communicator& world, const std::vector<Tensor>& local_shards) {
  double sq = 0;
  for (size_t i = 0; i < local_shards.size(); ++i) {
    const Tensor& t = local_shards[i];
    RETURN_IF_ERROR(CheckReal(absl::StrCat("GlobalNorm: shard ", i), t, t.numel()));
    sq += t.dtype() == DType::kF64 ? SumOfSquares<double>(t) : SumOfSquares<float>(t);
  }
  RETURN_IF_ERROR(world.AllReduce(OutBuffer::Of(&sq, 1), ReduceOp::kSum));
  return std::sqrt(sq);
}

}  // namespace mt

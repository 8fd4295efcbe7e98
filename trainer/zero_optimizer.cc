#include "trainer/zero_optimizer.h"

#include <cmath>
#include <cstring>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "kernels/status.h"

namespace mt {

absl::StatusOr<ZeroAdamW::Part> ZeroAdamW::MakePart(std::vector<Param*> params, Communicator* comm,
                                                    DType moment_dtype) {
  Part p;
  p.comm = comm;
  p.params = std::move(params);
  std::vector<int64_t> sizes;
  for (Param* q : p.params) sizes.push_back(q->value.numel());
  ASSIGN_OR_RETURN(FlatLayout layout, FlatLayout::Make(sizes, comm->size()));
  p.layout = std::make_unique<FlatLayout>(std::move(layout));
  const int64_t shard = p.layout->shard_size();
  p.flat = Tensor({p.layout->padded()}, kRealDType);
  p.grad_shard = Tensor({shard}, kRealDType);
  p.value_shard = Tensor({shard}, kRealDType);
  p.m = Tensor({shard}, moment_dtype);
  p.v = Tensor({shard}, moment_dtype);
  p.m.Zero();
  p.v.Zero();
  return p;
}

absl::StatusOr<std::unique_ptr<ZeroAdamW>> ZeroAdamW::Create(
    ParamStore& params, const OptimizerConfig& config, Communicator* dp, Communicator* expert_dp,
    Communicator* world, std::function<bool(const Param&)> counts_in_norm) {
  std::unique_ptr<ZeroAdamW> z(new ZeroAdamW());
  z->config_ = config;
  z->world_ = world;
  z->counts_in_norm_ = std::move(counts_in_norm);
  const DType dt = config.moment_dtype == "bf16" ? DType::kBF16 : DType::kF32;
  std::vector<Param*> dense, experts;
  for (const auto& p : params.all())
    if (p->trainable) (p->expert ? experts : dense).push_back(p.get());
  ASSIGN_OR_RETURN(Part d, MakePart(std::move(dense), dp, dt));
  z->parts_.push_back(std::move(d));
  ASSIGN_OR_RETURN(Part e, MakePart(std::move(experts), expert_dp, dt));
  z->parts_.push_back(std::move(e));
  return z;
}

absl::StatusOr<double> ZeroAdamW::ReduceGradients() {
  double sq = 0;
  for (Part& p : parts_) {
    std::vector<Tensor> grads;
    for (Param* q : p.params) grads.push_back(q->grad);
    RETURN_IF_ERROR(Flatten(*p.layout, grads, &p.flat));
    RETURN_IF_ERROR(ReduceScatterGradients(*p.comm, *p.layout, p.flat, &p.grad_shard, 1.0));
    // Per piece, as AdamW::GradNorm sums per parameter: one process gets the same norm.
    for (const ShardPiece& piece : p.layout->Pieces(p.comm->rank()))
      if (counts_in_norm_(*p.params[piece.param]))
        sq += ops::SumSquares(p.grad_shard.data<Real>() + piece.shard_offset, piece.length);
  }
  std::vector<double> total = {sq};
  RETURN_IF_ERROR(world_->AllReduce(total, ReduceOp::kSum));
  return std::sqrt(total[0]);
}

absl::Status ZeroAdamW::Step(double lr, double norm, double max_norm) {
  ++step_;
  const AdamCoeffs c = MakeAdamCoeffs(config_, lr, step_);
  for (Part& p : parts_) {
    const int rank = p.comm->rank();
    ClipScale(p.grad_shard.data<Real>(), p.grad_shard.numel(), norm, max_norm);
    p.value_shard.Zero();
    Real* w = p.value_shard.data<Real>();
    for (const ShardPiece& piece : p.layout->Pieces(rank)) {
      const Param& q = *p.params[piece.param];
      std::memcpy(w + piece.shard_offset, q.value.data<Real>() + piece.param_offset,
                  piece.length * sizeof(Real));
      AdamUpdate(w + piece.shard_offset, p.grad_shard.data<Real>() + piece.shard_offset,
                 piece.length, q.decay, c, p.m, p.v, piece.shard_offset);
    }
    RETURN_IF_ERROR(AllGatherParameters(*p.comm, *p.layout, p.value_shard, &p.flat));
    std::vector<Tensor> values;
    for (Param* q : p.params) values.push_back(q->value);
    RETURN_IF_ERROR(Unflatten(*p.layout, p.flat, &values));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, std::vector<NamedTensor>>> ZeroAdamW::GatherState() {
  std::map<std::string, std::vector<NamedTensor>> files;
  for (Part& p : parts_) {
    const FlatLayout& l = *p.layout;
    for (int which = 0; which < 2; ++which) {
      const Tensor& shard = which == 0 ? p.m : p.v;
      Tensor full({l.padded()}, shard.dtype());
      RETURN_IF_ERROR(p.comm->AllGather(shard, full));
      const size_t es = DTypeSize(shard.dtype());
      auto& out = files[which == 0 ? "optimizer-exp_avg" : "optimizer-exp_avg_sq"];
      for (int i = 0; i < l.num_params(); ++i) {
        Tensor t(p.params[i]->value.shape(), shard.dtype());
        std::memcpy(t.raw(), static_cast<const char*>(full.raw()) + l.offset(i) * es,
                    l.size(i) * es);
        out.push_back({p.params[i]->name, std::move(t)});
      }
    }
  }
  return files;
}

absl::Status ZeroAdamW::LoadState(const std::map<std::string, std::vector<NamedTensor>>& files,
                                  const std::string& source) {
  for (int which = 0; which < 2; ++which) {
    const char* file = which == 0 ? "optimizer-exp_avg" : "optimizer-exp_avg_sq";
    auto it = files.find(file);
    if (it == files.end())
      return absl::InvalidArgumentError(absl::StrCat(source, ": no ", file, " state file"));
    std::unordered_map<std::string, const Tensor*> by_name;
    for (const auto& t : it->second) by_name[t.name] = &t.tensor;
    for (Part& p : parts_) {
      Tensor& shard = which == 0 ? p.m : p.v;
      const size_t es = DTypeSize(shard.dtype());
      for (const ShardPiece& piece : p.layout->Pieces(p.comm->rank())) {
        const Param& q = *p.params[piece.param];
        auto t = by_name.find(q.name);
        if (t == by_name.end())
          return absl::InvalidArgumentError(
              absl::StrCat(source, ": ", file, " has no moment for \"", q.name, "\""));
        if (t->second->shape() != q.value.shape())
          return absl::InvalidArgumentError(absl::StrCat(
              source, ": ", file, " \"", q.name, "\" has shape ", ShapeString(t->second->shape()),
              ", expected ", ShapeString(q.value.shape())));
        const Tensor conv = t->second->To(shard.dtype());
        std::memcpy(static_cast<char*>(shard.raw()) + piece.shard_offset * es,
                    static_cast<const char*>(conv.raw()) + piece.param_offset * es,
                    piece.length * es);
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace mt

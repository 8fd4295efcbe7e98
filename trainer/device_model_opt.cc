// trainer/device_model_opt.cc: DeviceModel's optimizer side: gradient norms, the AdamW step
// on the flat buffers with the bias update, and the moments in and out (device_model.h).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>
#include <utility>

#include "kernels/status.h"
#include "trainer/device_model.h"
#include "trainer/optimizer.h"

namespace mt {
inline namespace MT_REAL_NS {

void DeviceModel::ZeroGrads() { be_->Zero(&params_->grads()); }

double DeviceModel::GradNorm() {
  std::vector<DeviceParam*> trainable;
  for (DeviceParam* d : params_->All())
    if (d->host->trainable) trainable.push_back(d);
  return GradNorm(trainable);
}

double DeviceModel::GradNorm(const std::vector<DeviceParam*>& order) {
  return std::sqrt(GradSumSquares(order));
}

double DeviceModel::GradSumSquares(const std::vector<DeviceParam*>& order) {
  MT_CHECK(params_->shard_size() == params_->padded(),
           "GradNorm of one rank's gradients under data parallelism: use ShardSumSquares");
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (const DeviceParam* d : order) {
    MT_CHECK(d->host->trainable, "grad norm over ", d->host->name, ", which is not trainable");
    ranges.emplace_back(d->offset, d->value.numel());
  }
  Tensor sum = be_->Empty({1}, DType::kF64);
  be_->SumSquaresRanges(params_->grads().data<float>(), ranges, sum.data<double>());
  return be_->ToHost(sum).data<double>()[0];
}

double DeviceModel::ShardSumSquares(const std::vector<const DeviceParam*>& skip) {
  Tensor sum = be_->Empty({1}, DType::kF64);
  // Per region, dense then experts, as ZeroAdamW::ReduceGradients adds its parts; a region's
  // shard in one range, or in the pieces between the skipped parameters' elements.
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (const DeviceParamRegion& r : params_->regions()) {
    const int64_t begin = r.shard_begin(), end = begin + r.shard_size();
    std::vector<std::pair<int64_t, int64_t>> cut;  // [lo, hi) in the flat buffer
    for (const DeviceParam* d : skip) {
      if (&params_->RegionOf(*d) != &r) continue;
      const int64_t lo = std::max(begin, d->offset);
      const int64_t hi = std::min(end, d->offset + d->value.numel());
      if (lo < hi) cut.emplace_back(lo, hi);
    }
    std::sort(cut.begin(), cut.end());
    int64_t at = begin;
    for (const auto& [lo, hi] : cut) {
      if (lo > at) ranges.emplace_back(r.shard_offset + at - begin, lo - at);
      at = std::max(at, hi);
    }
    if (end > at) ranges.emplace_back(r.shard_offset + at - begin, end - at);
  }
  be_->SumSquaresRanges(params_->grad_shard().data<float>(), ranges, sum.data<double>());
  return be_->ToHost(sum).data<double>()[0];
}

void DeviceModel::OptimizerStep(const OptimizerConfig& opt, double lr, int64_t step, double norm,
                                const std::vector<std::vector<int64_t>>& loads, double gamma) {
  const DType moments = params_->moment_dtype();
  MT_CHECK((opt.moment_dtype == "bf16") == (moments == DType::kBF16), "the device model keeps ",
           DTypeName(moments), " AdamW moments, not optimizer.moment_dtype ", opt.moment_dtype);
  const AdamCoeffs c = MakeAdamCoeffs(opt, lr, step);
  const AdamStepCoeffs dc{c.lr, c.b1, c.b2, c.eps, c.wd, c.bc1, c.bc2};
  // ClipScale's rule: scale by max_norm / (norm + 1e-6) only when norm exceeds max_norm.
  // Elementwise, so the flat buffers give AdamW::Step's values exactly: one launch for the
  // clipping and one per region and decay class in the shard (padding is skipped).
  DeviceParams& ps = *params_;
  ps.ValuesChanged();  // the kept FP8 and BF16 weights go stale (with DP, after the all-gather)
  float* g = ps.grad_shard().data<float>();
  if (opt.grad_clip > 0 && norm > opt.grad_clip)
    be_->Scale(g, ps.shard_size(), static_cast<float>(opt.grad_clip / (norm + 1e-6)));
  for (const DeviceParamRegion& r : ps.regions()) {
    const int64_t begin = r.shard_begin(), end = begin + r.shard_size();
    for (const auto& [lo, hi, decay] :
         {std::tuple{begin, std::min(end, r.decayed), true},
          std::tuple{std::max(begin, r.decayed), std::min(end, r.trainable), false}}) {
      if (hi <= lo) continue;
      const int64_t s = r.shard_offset + lo - begin;  // in grad_shard, m and v
      float* w = ps.values().data<float>() + lo;
      if (moments == DType::kBF16) {
        be_->AdamWBf16Moments(w, g + s, static_cast<uint16_t*>(ps.m().raw()) + s,
                              static_cast<uint16_t*>(ps.v().raw()) + s, hi - lo, decay, dc);
      } else {
        be_->AdamW(w, g + s, ps.m().data<float>() + s, ps.v().data<float>() + s, hi - lo, decay,
                   dc);
      }
    }
  }
  // UpdateExpertBiases (trainer/optimizer.cc) on the host copy of each [E] bias.
  if (gamma == 0) return;
  for (size_t l = 0; l < moe_layers_.size(); ++l) {
    const std::vector<int64_t>& load = loads[moe_indices_[l]];
    double mean = 0;
    for (int64_t x : load) mean += static_cast<double>(x);
    mean /= static_cast<double>(load.size());
    DeviceParam* bias = moe_layers_[l]->bias;
    Tensor host = be_->ToHost(bias->value);
    for (size_t e = 0; e < load.size(); ++e) {
      const double diff = mean - static_cast<double>(load[e]);
      host.data<float>()[e] += static_cast<float>(gamma * ((diff > 0) - (diff < 0)));
    }
    const Tensor dev = be_->ToDevice(host);
    be_->Copy(dev.raw(), bias->value.raw(), bias->value.nbytes());
  }
}

void DeviceModel::Download(bool grads) const { params_->Download(grads); }

absl::Status DeviceModel::LoadMoments(const std::map<std::string, const Tensor*>& m,
                                      const std::map<std::string, const Tensor*>& v) {
  DeviceParams& ps = *params_;
  const DType dt = ps.moment_dtype();
  const size_t es = DTypeSize(dt);
  for (const auto& [from, to] : {std::pair{&m, &ps.m()}, std::pair{&v, &ps.v()}}) {
    Tensor shard({ps.shard_size()}, dt);  // padding stays zero
    for (const DeviceParam* d : ps.All()) {
      const Param& p = *d->host;
      if (!p.trainable) continue;
      auto it = from->find(p.name);
      if (it == from->end())
        return absl::InvalidArgumentError("the optimizer state has no moment for " + p.name);
      if (it->second->shape() != p.value.shape())
        return absl::InvalidArgumentError("the optimizer state's moment for " + p.name +
                                          " is shaped " + ShapeString(it->second->shape()) +
                                          ", expected " + ShapeString(p.value.shape()));
      // The parameter's elements [offset, offset + n) that fall in this rank's shard of its
      // region.
      const DeviceParamRegion& r = ps.RegionOf(*d);
      const int64_t begin = r.shard_begin(), end = begin + r.shard_size();
      const int64_t lo = std::max(begin, d->offset);
      const int64_t hi = std::min(end, d->offset + p.value.numel());
      if (hi <= lo) continue;
      const Tensor t = it->second->To(dt);
      std::memcpy(static_cast<char*>(shard.raw()) + (r.shard_offset + lo - begin) * es,
                  static_cast<const char*>(t.raw()) + (lo - d->offset) * es, (hi - lo) * es);
    }
    be_->CopyFromHost(shard.raw(), to->raw(), shard.nbytes());
  }
  be_->Synchronize();  // the host shards are about to go
  return absl::OkStatus();
}

void DeviceModel::MomentShards(Tensor* m, Tensor* v) const {
  *m = be_->ToHost(params_->m());
  *v = be_->ToHost(params_->v());
}

}  // namespace MT_REAL_NS
}  // namespace mt

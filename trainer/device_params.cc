// trainer/device_params.cc: DeviceParams (device_params.h), every parameter of a ParamStore
// in flat value, gradient and moment buffers on a Backend, by optimizer region and class.
#include "trainer/device_params.h"

#include "kernels/status.h"

namespace mt {
inline namespace MT_REAL_NS {

namespace {
size_t IndexOf(const ParamStore& ps, const std::string& name) {
  for (size_t i = 0; i < ps.all().size(); ++i)
    if (ps.all()[i]->name == name) return i;
  MT_CHECK(false, "device model: no parameter ", name);
  return 0;
}
// The flat buffers' three classes (device_layers.h).
int ClassOf(const Param& p) {
  MT_CHECK(p.trainable == p.grad.defined(), "device model: parameter ", p.name,
           p.trainable ? " is trainable but has no gradient" : " has a gradient but is state");
  return !p.trainable ? 2 : p.decay ? 0 : 1;
}
}  // namespace

int DeviceParams::SlotOf(const Param& p) const {
  const int c = ClassOf(p);
  if (c == 2) return 4;
  return regions_.size() > 1 && p.expert ? 2 + c : c;
}

DeviceParams::DeviceParams(Backend* backend, ParamStore* host, const DeviceOptimizerLayout& layout)
    : be_(backend), host_(host) {
  const int edp = layout.expert_dp_size;
  MT_CHECK(layout.dp_size >= 1 && layout.dp_rank >= 0 && layout.dp_rank < layout.dp_size,
           "device model: shard ", layout.dp_rank, " of ", layout.dp_size);
  MT_CHECK(edp == 0 || (layout.expert_dp_rank >= 0 && layout.expert_dp_rank < edp),
           "device model: expert shard ", layout.expert_dp_rank, " of ", edp);
  MT_CHECK(layout.moments == DType::kF32 || layout.moments == DType::kBF16,
           "device model: AdamW moments are fp32 or bf16, not ", DTypeName(layout.moments));
  params_.resize(host->all().size());
  regions_.resize(edp > 0 ? 2 : 1);
  regions_[0].shards = layout.dp_size;
  regions_[0].rank = layout.dp_rank;
  if (edp > 0) {
    regions_[1].shards = edp;
    regions_[1].rank = layout.expert_dp_rank;
  }
  int64_t size[5] = {};
  for (const auto& p : host->all()) size[SlotOf(*p)] += p->value.numel();
  int64_t at = 0, shard_at = 0;
  for (size_t r = 0; r < regions_.size(); ++r) {
    DeviceParamRegion& g = regions_[r];
    g.begin = at;
    g.decayed = at + size[2 * r];
    g.trainable = g.decayed + size[2 * r + 1];
    const int64_t shard = (g.trainable - g.begin + g.shards - 1) / g.shards;
    g.padded = g.begin + shard * g.shards;
    g.shard_offset = shard_at;
    next_[2 * r] = g.begin;
    end_[2 * r] = next_[2 * r + 1] = g.decayed;
    end_[2 * r + 1] = g.trainable;
    at = g.padded;
    shard_at += shard;
  }
  next_[4] = at;  // state after the padding: the all-gathers write [begin, padded)
  end_[4] = at + size[4];
  values_ = be_->Empty({end_[4]});
  grads_ = be_->Empty({at});
  const bool whole = regions_.size() == 1 && regions_[0].shards == 1;
  grad_shard_ = whole ? grads_ : be_->Empty({shard_at});
  m_ = be_->Empty({shard_at}, layout.moments);
  v_ = be_->Empty({shard_at}, layout.moments);
}

const DeviceParamRegion& DeviceParams::RegionOf(const DeviceParam& d) const {
  MT_CHECK(d.host->trainable, "device model: ", d.host->name, " is state, in no region");
  return regions_[SlotOf(*d.host) / 2];
}

void DeviceParams::Place(DeviceParam* d, const Param& p, int64_t n) {
  const int c = SlotOf(p);
  MT_CHECK(next_[c] + n <= end_[c], "device model: parameter ", p.name, " placed twice");
  d->offset = next_[c];
  next_[c] += n;
}

void DeviceParams::Bind(DeviceParam* d, std::vector<int64_t> shape) const {
  const int64_t n = NumElements(shape);
  d->value = values_.Slice(d->offset, d->offset + n).View(shape);
  if (d->host->trainable) d->grad = grads_.Slice(d->offset, d->offset + n).View(shape);
}

DeviceParam* DeviceParams::Get(const std::string& name) {
  const size_t i = IndexOf(*host_, name);
  if (!params_[i]) {
    auto d = std::make_unique<DeviceParam>();
    d->host = host_->all()[i].get();
    Place(d.get(), *d->host, d->host->value.numel());
    Bind(d.get(), d->host->value.shape());
    be_->CopyFromHost(d->host->value.raw(), d->value.raw(), d->value.nbytes());
    params_[i] = std::move(d);
  }
  return params_[i].get();
}

void DeviceParams::Stack(const std::vector<std::string>& names, Tensor* value, Tensor* grad) {
  const auto E = static_cast<int64_t>(names.size());
  const Param& first = *host_->all()[IndexOf(*host_, names[0])];
  MT_CHECK(first.trainable, "device model: expert ", first.name, " is not trainable");
  const int64_t N = first.value.dim(0), K = first.value.dim(1);
  int64_t base = 0;
  for (int64_t e = 0; e < E; ++e) {
    const size_t i = IndexOf(*host_, names[e]);
    const Param& p = *host_->all()[i];
    MT_CHECK(p.value.shape() == first.value.shape() && SlotOf(p) == SlotOf(first),
             "device model: expert ", p.name, " is shaped or optimised unlike ", first.name);
    MT_CHECK(!params_[i], "device model: ", names[e], " registered before its stack");
    auto d = std::make_unique<DeviceParam>();
    d->host = host_->all()[i].get();
    Place(d.get(), p, N * K);  // consecutive: E back-to-back [N, K] blocks
    if (e == 0) base = d->offset;
    Bind(d.get(), {N, K});
    be_->CopyFromHost(p.value.raw(), d->value.raw(), d->value.nbytes());
    params_[i] = std::move(d);
  }
  *value = values_.Slice(base, base + E * N * K).View({E, N, K});
  *grad = grads_.Slice(base, base + E * N * K).View({E, N, K});
}

std::vector<DeviceParam*> DeviceParams::All() const {
  std::vector<DeviceParam*> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    MT_CHECK(params_[i], "device model: parameter ", host_->all()[i]->name, " has no layer");
    out.push_back(params_[i].get());
  }
  return out;
}

void DeviceParams::Download(bool grads) const {
  for (DeviceParam* d : All()) {
    d->host->value = be_->ToHost(d->value);
    if (grads && d->grad.defined()) d->host->grad = be_->ToHost(d->grad);
  }
}

}  // namespace MT_REAL_NS
}  // namespace mt

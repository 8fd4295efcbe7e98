#include "trainer/params.h"

#include "trainer/rng.h"

namespace mt {
inline namespace MT_REAL_NS {

Param* ParamStore::Add(const std::string& name, std::vector<int64_t> shape, Init init, bool expert,
                       bool trainable) {
  MT_CHECK(Find(name) == nullptr, "duplicate parameter ", name);
  auto p = std::make_unique<Param>();
  p->name = name;
  p->value = Tensor(shape, kRealDType);
  if (trainable) p->grad = Tensor(shape, kRealDType);
  p->decay = trainable && shape.size() >= 2;
  p->expert = expert;
  p->trainable = trainable;
  Real* v = p->value.data<Real>();
  const uint64_t stream = HashName(name);
  for (int64_t i = 0; i < p->value.numel(); ++i) {
    switch (init) {
      case Init::kNormal:
        v[i] = static_cast<Real>(init_std_ * RandomNormal(seed_, stream, i));
        break;
      case Init::kOnes:
        v[i] = 1;
        break;
      case Init::kZeros:
        v[i] = 0;
        break;
    }
  }
  by_name_[name] = p.get();
  params_.push_back(std::move(p));
  return params_.back().get();
}

Param* ParamStore::AddShared(const std::string& name, std::vector<int64_t> shape, Init init) {
  if (Param* p = Find(name)) {
    MT_CHECK(p->value.shape() == shape, "parameter ", name, " shared with another shape");
    return p;
  }
  return Add(name, std::move(shape), init);
}

Param* ParamStore::Find(const std::string& name) {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

void ParamStore::ZeroGrads() {
  for (auto& p : params_)
    if (p->trainable) p->grad.Zero();
}

int64_t ParamStore::NumElements() const {
  int64_t n = 0;
  for (auto& p : params_) n += p->value.numel();
  return n;
}

}  // namespace MT_REAL_NS
}  // namespace mt

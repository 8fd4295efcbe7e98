#include "trainer/model_io.h"

#include <unordered_map>

#include "absl/strings/str_cat.h"

namespace mt {
inline namespace MT_REAL_NS {
namespace {

std::vector<std::pair<std::string, std::string>> MtpCopies(const ModelConfig& m) {
  std::vector<std::pair<std::string, std::string>> copies;  // (copy name, source name)
  for (int64_t k = 0; k < m.num_nextn_predict_layers; ++k) {
    const std::string p = "model.layers." + std::to_string(m.num_hidden_layers + k) + ".";
    copies.push_back({p + "embed_tokens.weight", "model.embed_tokens.weight"});
    copies.push_back({p + "shared_head.head.weight", "lm_head.weight"});
  }
  return copies;
}

Tensor AsFloat(const Tensor& t) { return t.dtype() == DType::kF32 ? t : t.To(DType::kF32); }

}  // namespace

std::vector<NamedTensor> ModelTensors(Model& model) {
  std::vector<NamedTensor> out;
  for (const auto& p : model.params().all()) out.push_back({p->name, AsFloat(p->value)});
  for (const auto& [copy, source] : MtpCopies(model.config()))
    out.push_back({copy, AsFloat(model.params().Find(source)->value)});
  return out;
}

bool IsModelTensorName(Model& model, const std::string& name) {
  if (model.params().Find(name)) return true;
  for (const auto& c : MtpCopies(model.config()))
    if (c.first == name) return true;
  return false;
}

absl::Status LoadModelTensors(Model& model, const std::vector<NamedTensor>& tensors,
                              const std::string& source) {
  return LoadParams(model.params(), model.config(), tensors, source, /*whole_model=*/true);
}

bool IsMtpCopyName(const ModelConfig& m, const std::string& name) {
  for (const auto& c : MtpCopies(m))
    if (c.first == name) return true;
  return false;
}

void AddMtpCopies(const ModelConfig& m, std::vector<NamedTensor>* tensors) {
  for (const auto& [copy, source] : MtpCopies(m))
    for (size_t i = 0; i < tensors->size(); ++i)
      if ((*tensors)[i].name == source) {
        tensors->push_back({copy, (*tensors)[i].tensor});
        break;
      }
}

absl::Status LoadParams(ParamStore& ps, const ModelConfig& m,
                        const std::vector<NamedTensor>& tensors, const std::string& source,
                        bool whole_model) {
  std::unordered_map<std::string, const Tensor*> by_name;
  for (const auto& t : tensors) by_name[t.name] = &t.tensor;
  if (whole_model)
    for (const auto& t : tensors)
      if (!ps.Find(t.name) && !IsMtpCopyName(m, t.name))
        return absl::InvalidArgumentError(
            absl::StrCat(source, ": unexpected tensor \"", t.name, "\" for this model config"));
  for (const auto& p : ps.all()) {
    auto it = by_name.find(p->name);
    if (it == by_name.end())
      return absl::InvalidArgumentError(absl::StrCat(source, ": missing tensor \"", p->name, "\""));
    const Tensor& t = *it->second;
    if (t.shape() != p->value.shape())
      return absl::InvalidArgumentError(absl::StrCat(source, ": tensor \"", p->name,
                                                     "\" has shape ", ShapeString(t.shape()),
                                                     ", expected ", ShapeString(p->value.shape())));
    Tensor v = t.To(kRealDType);
    std::memcpy(p->value.raw(), v.raw(), v.nbytes());
  }
  return absl::OkStatus();
}

void OptimizerStateFiles(AdamW& opt, std::map<std::string, std::vector<NamedTensor>>* files) {
  auto& m = (*files)["optimizer-exp_avg"];
  auto& v = (*files)["optimizer-exp_avg_sq"];
  for (auto& mo : opt.moments()) {
    m.push_back({mo.param->name, mo.exp_avg});
    v.push_back({mo.param->name, mo.exp_avg_sq});
  }
}

absl::Status LoadOptimizerState(AdamW& opt,
                                const std::map<std::string, std::vector<NamedTensor>>& files,
                                const std::string& source) {
  for (const char* file : {"optimizer-exp_avg", "optimizer-exp_avg_sq"}) {
    auto it = files.find(file);
    if (it == files.end())
      return absl::NotFoundError(absl::StrCat(source, ": missing state file ", file));
    std::unordered_map<std::string, const Tensor*> by_name;
    for (const auto& t : it->second) by_name[t.name] = &t.tensor;
    for (auto& mo : opt.moments()) {
      auto f = by_name.find(mo.param->name);
      if (f == by_name.end())
        return absl::NotFoundError(
            absl::StrCat(source, ": ", file, " has no \"", mo.param->name, "\""));
      Tensor& dst = std::string(file) == "optimizer-exp_avg" ? mo.exp_avg : mo.exp_avg_sq;
      if (f->second->shape() != dst.shape())
        return absl::InvalidArgumentError(absl::StrCat(source, ": ", file, " \"", mo.param->name,
                                                       "\" has shape ",
                                                       ShapeString(f->second->shape())));
      Tensor v = f->second->To(dst.dtype());
      std::memcpy(dst.raw(), v.raw(), v.nbytes());
    }
  }
  return absl::OkStatus();
}

}  // namespace MT_REAL_NS
}  // namespace mt

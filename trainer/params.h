// trainer/params.h: the model's parameters, each under its Hugging Face name.
//
// Modules register their tensors here once; the optimizer, gradient clipping, checkpoints
// and (later) ZeRO sharding all walk this one list instead of each module. Names are the
// checkpoint names, so resharding between layouts is by name.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/tensor.h"
#include "trainer/precision.h"
#include "trainer/real.h"

namespace mt {
inline namespace MT_REAL_NS {

struct Param {
  std::string name;  // Hugging Face tensor name
  Tensor value;      // kRealDType
  Tensor grad;       // same shape; undefined for non-trainable state
  bool decay = true;       // decoupled weight decay applies (matrices only)
  bool expert = false;     // a routed expert's weight (replicated over DP/EP, not DP)
  bool trainable = true;   // false for e_score_correction_bias: state, not optimised
};

enum class Init { kNormal, kOnes, kZeros };

class ParamStore {
 public:
  explicit ParamStore(uint64_t seed, double init_std) : seed_(seed), init_std_(init_std) {}
  ParamStore(const ParamStore&) = delete;
  ParamStore& operator=(const ParamStore&) = delete;

  // Registers a parameter and initialises it from (seed, name): layout-invariant.
  Param* Add(const std::string& name, std::vector<int64_t> shape, Init init, bool expert = false,
             bool trainable = true);

  // The same, or the parameter already registered under `name` (which must have `shape`):
  // for a tensor two modules of one rank share, like the embedding that a DualPipe rank's
  // first and last stages both use.
  Param* AddShared(const std::string& name, std::vector<int64_t> shape, Init init);

  Param* Find(const std::string& name);
  const std::vector<std::unique_ptr<Param>>& all() const { return params_; }
  void ZeroGrads();
  int64_t NumElements() const;

  // The compute precision of the modules built on this store: Model sets it before building
  // them and Linear reads it in its constructor; fp32 unless set. Not owned.
  void set_precision(const PrecisionPolicy* p) { precision_ = p; }
  const PrecisionPolicy& precision() const {
    return precision_ ? *precision_ : PrecisionPolicy::Exact();
  }

 private:
  uint64_t seed_;
  double init_std_;
  std::vector<std::unique_ptr<Param>> params_;  // unique_ptr: modules keep Param*
  std::unordered_map<std::string, Param*> by_name_;
  const PrecisionPolicy* precision_ = nullptr;
};

}  // namespace MT_REAL_NS
}  // namespace mt

// trainer/zero_optimizer.h: AdamW under ZeRO-1 data parallelism (design.md "Parallel layout").
//
// Each rank keeps the full fp32 parameters but only a shard of the AdamW moments. A step:
//   ReduceGradients  gradients -> flat buffer -> reduce-scattered shard (summed over the
//                    replicas: dense parameters over the DP group, routed experts over
//                    their expert-DP group), and the true global norm of the result
//   Step             clip the shard, AdamW on it (AdamUpdate, the same operations as the
//                    single-process AdamW), all-gather the parameters back
// With groups of one rank this is exactly AdamW, which is how a single process runs too.
//
// Parameters that several pipeline ranks hold (the embedding with MTP, every DualPipe stage)
// have had their copies' gradients summed before ReduceGradients; `counts_in_norm` says
// which copy counts in the norm, so that every gradient element is counted once.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"
#include "parallel/zero1.h"
#include "trainer/optimizer.h"
#include "trainer/safetensors.h"

namespace mt {

class ZeroAdamW {
 public:
  // dp: this stage's DP group; expert_dp: the ranks holding the same experts; world: every
  // rank (the norm). Not owned; they must outlive the optimizer.
  static absl::StatusOr<std::unique_ptr<ZeroAdamW>> Create(
      ParamStore& params, const OptimizerConfig& config, Communicator* dp, Communicator* expert_dp,
      Communicator* world, std::function<bool(const Param&)> counts_in_norm);

  // Reduce-scatters this step's gradients (summed over replicas: the local gradients must
  // already carry the 1/(micro-batches x dp) of the mean) and returns their global norm.
  absl::StatusOr<double> ReduceGradients();
  // Clips the reduced gradients by min(1, max_norm / (norm + 1e-6)), updates the shard at
  // lr and all-gathers the parameters. The step counter advances.
  absl::Status Step(double lr, double norm, double max_norm);

  int64_t step() const { return step_; }
  void set_step(int64_t s) { step_ = s; }

  // The moments of every parameter this rank holds, full (gathered over the groups;
  // collective), as the state files "optimizer-exp_avg" and "optimizer-exp_avg_sq" under
  // the parameters' names: the single-process AdamW's checkpoint form.
  absl::StatusOr<std::map<std::string, std::vector<NamedTensor>>> GatherState();
  // Takes this rank's shard of the moments from full tensors by name (any layout's files).
  absl::Status LoadState(const std::map<std::string, std::vector<NamedTensor>>& files,
                         const std::string& source);

 private:
  // Dense parameters over the DP group, or routed experts over the expert-DP group.
  struct Part {
    Communicator* comm = nullptr;
    std::vector<Param*> params;
    std::unique_ptr<FlatLayout> layout;
    Tensor flat;         // [padded] gradients, then gathered parameters
    Tensor grad_shard;   // [shard] reduced gradients
    Tensor value_shard;  // [shard] this shard's parameters
    Tensor m, v;         // [shard] moments (fp32 or bf16)
  };
  ZeroAdamW() = default;
  static absl::StatusOr<Part> MakePart(std::vector<Param*> params, Communicator* comm,
                                       DType moment_dtype);

  OptimizerConfig config_;
  Communicator* world_ = nullptr;
  std::function<bool(const Param&)> counts_in_norm_;
  std::vector<Part> parts_;
  int64_t step_ = 0;
};

}  // namespace mt

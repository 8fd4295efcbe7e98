// trainer/device_pipeline.cc: the device path's pipeline stages (device_pipeline.h).
#include "trainer/device_pipeline.h"

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/status.h"
#include "trainer/pipeline_runner.h"

namespace mt::train_internal {
absl::Status RunDevicePipeline(const DevicePipelineRun& run, double loss_scale, Losses* losses,
                               std::vector<std::vector<int64_t>>* loads) {
  const PipelineSchedule& s = *run.schedule;
  DeviceModel& model = *run.model;
  Backend& be = model.backend();
  const StageSpec& stage = model.stage();
  const int64_t H = model.config().hidden_size;
  if (s.num_chunks != 1)  // DevicePathBlockers refuses DualPipe before a run gets here
    return absl::FailedPreconditionError(
        absl::StrCat("device pipeline: a schedule of ", s.num_chunks,
                     " chunks per rank; the device path runs one (1F1B, ZB1P)"));
  std::map<int, Tensor> fwd_in, fwd_out, bwd_in, bwd_out;  // by micro-batch: [B*S, H]
  // Declared before `sends`, so destroyed after it: on an early return a send still held
  // is launched and waited for by its Request's destructor, and reads these.
  std::vector<Tensor> in_flight;  // what the pending sends read
  std::vector<std::unique_ptr<Request>> sends;
  std::vector<int> forwards;  // micro-batches in forward order: their losses' order

  auto missing = [&](const PipelineAction& a, const char* what) {
    return absl::InternalError(
        absl::StrCat("pipeline rank ", run.rank, ", action ", PipelineActionName(a), ": ", what));
  };
  auto send = [&](std::map<int, Tensor>& from, const PipelineAction& a, bool fwd) -> absl::Status {
    auto it = from.find(a.micro_batch);
    if (it == from.end()) return missing(a, "nothing to send");
    in_flight.push_back(std::move(it->second));
    from.erase(it);
    ASSIGN_OR_RETURN(auto req,
                     run.pp->ISend(in_flight.back(), a.peer, PipelineTag(a.micro_batch, fwd)));
    sends.push_back(std::move(req));
    return absl::OkStatus();
  };
  auto recv = [&](std::map<int, Tensor>& into, const PipelineAction& a, bool fwd) -> absl::Status {
    Tensor t = be.Empty({run.B * run.S, H});
    RETURN_IF_ERROR(run.pp->Recv(t, a.peer, PipelineTag(a.micro_batch, fwd)));
    into[a.micro_batch] = std::move(t);
    return absl::OkStatus();
  };
  auto forward = [&](const PipelineAction& a, int mb) -> absl::Status {
    if (!stage.first() && !fwd_in.count(mb)) return missing(a, "activations never received");
    Tensor out = model.Forward(mb, run.tokens(mb), run.B, run.S, fwd_in[mb], run.weights,
                               run.grad_scale, /*backward=*/true);
    fwd_in.erase(mb);
    forwards.push_back(mb);
    if (!stage.last()) fwd_out[mb] = std::move(out);
    return absl::OkStatus();
  };
  // The backward whole (split: its input half only, the weight half a later action).
  auto backward = [&](const PipelineAction& a, int mb, bool split) -> absl::Status {
    if (!stage.last() && !bwd_in.count(mb)) return missing(a, "gradient never received");
    Tensor dx = split ? model.BackwardInput(mb, bwd_in[mb]) : model.Backward(mb, bwd_in[mb]);
    bwd_in.erase(mb);
    if (dx.defined()) bwd_out[mb] = std::move(dx);
    return absl::OkStatus();
  };
  for (const PipelineAction& a : s.actions[run.rank]) {
    const int mb = a.micro_batch;
    switch (a.op) {
      case PipelineOp::kForward:
        RETURN_IF_ERROR(forward(a, mb));
        break;
      case PipelineOp::kBackward:
        RETURN_IF_ERROR(backward(a, mb, /*split=*/false));
        break;
      case PipelineOp::kBackwardInput:
        RETURN_IF_ERROR(backward(a, mb, /*split=*/true));
        break;
      case PipelineOp::kBackwardWeight:
        model.BackwardWeight(mb);
        break;
      case PipelineOp::kForwardBackward:  // two chunks: refused above
        return missing(a, "DualPipe's overlapped pair, which the device path does not run");
      case PipelineOp::kRecvForward:
        RETURN_IF_ERROR(recv(fwd_in, a, /*fwd=*/true));
        break;
      case PipelineOp::kSendForward:
        RETURN_IF_ERROR(send(fwd_out, a, /*fwd=*/true));
        break;
      case PipelineOp::kRecvBackward:
        RETURN_IF_ERROR(recv(bwd_in, a, /*fwd=*/false));
        break;
      case PipelineOp::kSendBackward:
        RETURN_IF_ERROR(send(bwd_out, a, /*fwd=*/false));
        break;
    }
  }
  for (auto& r : sends) RETURN_IF_ERROR(r->Wait());
  // The losses in forward order, each with weight loss_scale (RunPipeline's AddLosses).
  for (int mb : forwards) AddLosses(model.TakeLosses(mb, loads), loss_scale, losses);
  return absl::OkStatus();
}

StageCopies FindStageCopies(const DeviceModel& model, int pp) {
  const int rank = model.stage().stage;
  std::vector<DeviceParam*> by_name = model.params();
  std::sort(by_name.begin(), by_name.end(), [](const DeviceParam* a, const DeviceParam* b) {
    return a->host->name < b->host->name;
  });
  std::map<int, std::vector<DeviceParam*>> shared;
  for (DeviceParam* d : by_name) {
    // Router biases are state: every copy makes the same update from the same loads.
    if (!d->host->trainable) continue;
    for (int h : StagesHoldingParam(model.config(), pp, d->host->name))
      if (h != rank) shared[h].push_back(d);
  }
  return StageCopies(shared.begin(), shared.end());
}

absl::Status SumStageCopies(const StageCopies& copies, Backend& be, Communicator& pp) {
  for (const auto& [peer, params] : copies) {
    int64_t n = 0;
    for (const DeviceParam* d : params) n += d->grad.numel();
    Tensor mine = be.Empty({n});
    int64_t o = 0;
    for (const DeviceParam* d : params) {
      be.Copy(d->grad.raw(), mine.data<float>() + o, d->grad.nbytes());
      o += d->grad.numel();
    }
    Tensor theirs = be.Empty({n});
    ASSIGN_OR_RETURN(auto req, pp.ISend(mine, peer, kPipelineReplicaTag));
    RETURN_IF_ERROR(pp.Recv(theirs, peer, kPipelineReplicaTag));
    RETURN_IF_ERROR(req->Wait());
    o = 0;
    for (DeviceParam* d : params) {
      be.Add(theirs.data<float>() + o, d->grad.data<float>(), d->grad.numel());
      o += d->grad.numel();
    }
  }
  be.Synchronize();  // `theirs` goes
  return absl::OkStatus();
}

absl::StatusOr<Losses> EvaluateStage(DeviceModel& model, Communicator* pp, const int32_t* tokens,
                                     int64_t B, int64_t S, const ObjectiveWeights& w) {
  Backend& be = model.backend();
  const StageSpec& stage = model.stage();
  Tensor x;
  if (!stage.first()) {
    x = be.Empty({B * S, model.config().hidden_size});
    RETURN_IF_ERROR(pp->Recv(x, stage.stage - 1, kPipelineEvalTag));
  }
  const Tensor y = model.Forward(-1, tokens, B, S, x, w, 0.0, /*backward=*/false);
  if (!stage.last()) RETURN_IF_ERROR(pp->Send(y, stage.stage + 1, kPipelineEvalTag));
  return model.TakeLosses(-1, nullptr);
}

}  // namespace mt::train_internal

#include "trainer/pipeline_runner.h"

#include <map>
#include <memory>

#include "absl/strings/str_cat.h"
#include "kernels/status.h"

namespace mt {
namespace {


}  // namespace

void AddLosses(const Losses& l, double scale, Losses* sum) {
  sum->main += scale * l.main;
  sum->balance += scale * l.balance;
  sum->mtp.resize(std::max(sum->mtp.size(), l.mtp.size()), 0.0);
  for (size_t k = 0; k < l.mtp.size(); ++k) sum->mtp[k] += scale * l.mtp[k];
}

absl::Status RunPipeline(const PipelineRun& run, double loss_scale, Losses* losses,
                         std::vector<std::vector<int64_t>>* loads) {
  const PipelineSchedule& s = *run.schedule;
  std::map<int, Tensor> fwd_in, fwd_out, bwd_in, bwd_out;  // by micro-batch: [B*S, H]
  std::vector<std::unique_ptr<Request>> sends;
  std::vector<Tensor> in_flight;  // what the pending sends read

  auto shape = [&](int mb) {
    const MicroBatch b = run.batch(mb);
    return std::vector<int64_t>{b.B * b.S, run.hidden};
  };
  auto forward = [&](int mb, int chunk) {
    ModelChunk& c = *run.chunks[chunk];
    Losses l;
    Tensor out = c.Forward(mb, run.batch(mb), fwd_in[mb], run.weights, run.grad_scale,
                           /*backward=*/true, &l, loads);
    fwd_in.erase(mb);
    AddLosses(l, loss_scale, losses);
    if (!c.stage().last()) fwd_out[mb] = std::move(out);
  };
  auto backward_input = [&](int mb, int chunk) {
    Tensor dx = run.chunks[chunk]->BackwardInput(mb, bwd_in[mb]);
    bwd_in.erase(mb);
    if (dx.defined()) bwd_out[mb] = std::move(dx);
  };
  auto send = [&](std::map<int, Tensor>& from, int mb, int peer, bool fwd) -> absl::Status {
    auto it = from.find(mb);
    if (it == from.end())
      return absl::InternalError(absl::StrCat("pipeline rank ", run.rank, ": nothing to send for ",
                                              fwd ? "forward" : "backward", " of micro-batch ",
                                              mb));
    ASSIGN_OR_RETURN(auto req, run.pp->ISend(it->second, peer, PipelineTag(mb, fwd)));
    sends.push_back(std::move(req));
    in_flight.push_back(std::move(it->second));
    from.erase(it);
    return absl::OkStatus();
  };
  auto recv = [&](std::map<int, Tensor>& into, int mb, int peer, bool fwd) -> absl::Status {
    Tensor t(shape(mb), kRealDType);
    RETURN_IF_ERROR(run.pp->Recv(t, peer, PipelineTag(mb, fwd)));
    into[mb] = std::move(t);
    return absl::OkStatus();
  };

  // The schedule must have received what a compute action consumes.
  auto check_inputs = [&](int mb, int chunk, bool fwd, const PipelineAction& a) -> absl::Status {
    const StageSpec& st = run.chunks[chunk]->stage();
    const bool needs = fwd ? !st.first() : !st.last();
    if (!needs || (fwd ? fwd_in : bwd_in).count(mb)) return absl::OkStatus();
    return absl::InternalError(absl::StrCat(
        "pipeline rank ", run.rank, ", action ", PipelineActionName(a), ": the ",
        fwd ? "activations" : "gradient", " of micro-batch ", mb, " were never received"));
  };
  for (const PipelineAction& a : s.actions[run.rank]) {
    if (a.op == PipelineOp::kForward || a.op == PipelineOp::kForwardBackward)
      RETURN_IF_ERROR(check_inputs(a.micro_batch, a.chunk, true, a));
    if (a.op == PipelineOp::kBackward || a.op == PipelineOp::kBackwardInput)
      RETURN_IF_ERROR(check_inputs(a.micro_batch, a.chunk, false, a));
    if (a.op == PipelineOp::kForwardBackward)
      RETURN_IF_ERROR(check_inputs(a.bwd_micro_batch, a.bwd_chunk, false, a));
    switch (a.op) {
      case PipelineOp::kForward:
        forward(a.micro_batch, a.chunk);
        break;
      case PipelineOp::kBackward:
        backward_input(a.micro_batch, a.chunk);
        run.chunks[a.chunk]->BackwardWeight(a.micro_batch);
        break;
      case PipelineOp::kBackwardInput:
        backward_input(a.micro_batch, a.chunk);
        break;
      case PipelineOp::kBackwardWeight:
        run.chunks[a.chunk]->BackwardWeight(a.micro_batch);
        break;
      case PipelineOp::kForwardBackward:
        // On the CPU the two halves run one after the other; on a GPU they would overlap
        // each other's expert all-to-all.
        forward(a.micro_batch, a.chunk);
        backward_input(a.bwd_micro_batch, a.bwd_chunk);
        run.chunks[a.bwd_chunk]->BackwardWeight(a.bwd_micro_batch);
        break;
      case PipelineOp::kRecvForward:
        RETURN_IF_ERROR(recv(fwd_in, a.micro_batch, a.peer, /*fwd=*/true));
        break;
      case PipelineOp::kSendForward:
        RETURN_IF_ERROR(send(fwd_out, a.micro_batch, a.peer, /*fwd=*/true));
        break;
      case PipelineOp::kRecvBackward:
        RETURN_IF_ERROR(recv(bwd_in, a.micro_batch, a.peer, /*fwd=*/false));
        break;
      case PipelineOp::kSendBackward:
        RETURN_IF_ERROR(send(bwd_out, a.micro_batch, a.peer, /*fwd=*/false));
        break;
    }
  }
  for (auto& r : sends) RETURN_IF_ERROR(r->Wait());
  return absl::OkStatus();
}

}  // namespace mt

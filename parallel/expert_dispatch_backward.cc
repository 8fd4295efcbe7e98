// parallel/expert_dispatch_backward.cc: the backward passes of the expert dispatcher (see
// expert_dispatch.h). DispatchBackward is the transpose of Dispatch: it moves gradients the
// way Combine moves outputs (expert host -> token owner), summing a token's fan-out first.
// CombineBackward is the transpose of Combine, a pure permutation moved the way Dispatch
// moves tokens (token owner -> expert host), one row per (token, slot).
#include "absl/strings/str_cat.h"
#include "kernels/status.h"
#include "parallel/expert_dispatch.h"

namespace mt {

// ---- DispatchBackward -------------------------------------------------------------------

absl::StatusOr<Tensor> ExpertDispatcher::DispatchBackwardPreprocess(
    const std::vector<Tensor>& d_expert_in, const DispatchHandle& h) const {
  RETURN_IF_ERROR(CheckPerExpert("DispatchBackward", d_expert_in, h, h.dtype));
  const int64_t H = options_.hidden, K = options_.topk;
  const int64_t R = static_cast<int64_t>(h.slot_position.size()) / K;
  Tensor send({R, H}, h.dtype);  // each received row's gradient, summed over its experts
  for (int64_t i = 0; i < R; ++i)
    for (int64_t k = 0; k < K; ++k) {
      const int64_t pos = h.slot_position[i * K + k];
      if (pos < 0) continue;
      AddRow(d_expert_in[h.recv_topk[i * K + k] - first_local_], pos, send, i);
    }
  return send;
}

absl::StatusOr<Tensor> ExpertDispatcher::DispatchBackwardExchange(const Tensor& send,
                                                                  const DispatchHandle& h) {
  return ExchangeRows(send, h.recv_rows, h.send_rows, options_.hidden);
}

Tensor ExpertDispatcher::DispatchBackwardPostprocess(const Tensor& recv,
                                                     const DispatchHandle& h) const {
  const int64_t H = options_.hidden;
  Tensor dx({h.num_tokens, H}, h.dtype);
  for (size_t j = 0; j < h.send_token.size(); ++j) AddRow(recv, j, dx, h.send_token[j]);
  return dx;
}

absl::StatusOr<Tensor> ExpertDispatcher::DispatchBackward(const std::vector<Tensor>& d_expert_in,
                                                          const DispatchHandle& h) {
  ASSIGN_OR_RETURN(Tensor send, DispatchBackwardPreprocess(d_expert_in, h));
  ASSIGN_OR_RETURN(Tensor recv, DispatchBackwardExchange(send, h));
  return DispatchBackwardPostprocess(recv, h);
}

// ---- CombineBackward ------------------------------------------------------------------------

absl::StatusOr<Tensor> ExpertDispatcher::CombineBackwardPreprocess(const Tensor& d_slots,
                                                                   const DispatchHandle& h) const {
  const int64_t H = options_.hidden;
  if (d_slots.dtype() != h.dtype || d_slots.ndim() != 2 ||
      d_slots.dim(0) != h.num_tokens * h.topk || d_slots.dim(1) != H)
    return absl::InvalidArgumentError(
        absl::StrCat("CombineBackward: d_slots is ", ShapeString(d_slots.shape()), " ",
                     DTypeName(d_slots.dtype()), ", expected ", DTypeName(h.dtype), " [T*K, H] = [",
                     h.num_tokens * h.topk, ", ", H, "]"));
  Tensor send({static_cast<int64_t>(h.slot_order.size()), H}, h.dtype);
  for (size_t j = 0; j < h.slot_order.size(); ++j) CopyRow(d_slots, h.slot_order[j], send, j);
  return send;
}

absl::StatusOr<Tensor> ExpertDispatcher::CombineBackwardExchange(const Tensor& send,
                                                                 const DispatchHandle& h) {
  return ExchangeRows(send, h.slot_rows, h.hit_rows, options_.hidden);
}

std::vector<Tensor> ExpertDispatcher::CombineBackwardPostprocess(const Tensor& recv,
                                                                 const DispatchHandle& h) const {
  const int64_t H = options_.hidden, K = options_.topk;
  std::vector<Tensor> out;
  out.reserve(local_experts_);
  for (int64_t e = 0; e < local_experts_; ++e)
    out.emplace_back(std::vector<int64_t>{static_cast<int64_t>(h.expert_rows[e].size()), H},
                     h.dtype);
  const int64_t R = static_cast<int64_t>(h.slot_position.size()) / K;
  int64_t j = 0;
  for (int64_t i = 0; i < R; ++i)
    for (int64_t k = 0; k < K; ++k) {
      const int64_t pos = h.slot_position[i * K + k];
      if (pos < 0) continue;
      CopyRow(recv, j++, out[h.recv_topk[i * K + k] - first_local_], pos);
    }
  return out;
}

absl::StatusOr<std::vector<Tensor>> ExpertDispatcher::CombineBackward(const Tensor& d_slots,
                                                                      const DispatchHandle& h) {
  ASSIGN_OR_RETURN(Tensor send, CombineBackwardPreprocess(d_slots, h));
  ASSIGN_OR_RETURN(Tensor recv, CombineBackwardExchange(send, h));
  return CombineBackwardPostprocess(recv, h);
}

}  // namespace mt

// parallel/expert_dispatch.cc: the forward passes of the expert dispatcher, Dispatch and
// Combine (see expert_dispatch.h; the backward passes are in expert_dispatch_backward.cc).
#include "parallel/expert_dispatch.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "kernels/status.h"

namespace mt {
namespace {

// Counts and displacements, in elements, of rows of `width` elements.
void RowLayout(const std::vector<int64_t>& rows, int64_t width, std::vector<int64_t>* counts,
               std::vector<int64_t>* displs) {
  counts->resize(rows.size());
  displs->resize(rows.size());
  int64_t at = 0;
  for (size_t r = 0; r < rows.size(); ++r) {
    (*counts)[r] = rows[r] * width;
    (*displs)[r] = at;
    at += (*counts)[r];
  }
}

int64_t Sum(const std::vector<int64_t>& v) {
  return std::accumulate(v.begin(), v.end(), int64_t{0});
}

bool IsReal(DType t) { return t == DType::kF32 || t == DType::kF64; }

template <typename T>
void AddRowOf(const Tensor& from, int64_t i, Tensor& to, int64_t j, int64_t h) {
  const T* a = from.data<T>() + i * h;
  T* b = to.data<T>() + j * h;
  for (int64_t c = 0; c < h; ++c) b[c] += a[c];
}

}  // namespace

absl::StatusOr<ExpertDispatcher> ExpertDispatcher::Create(Communicator* ep,
                                                          const Options& options) {
  if (ep == nullptr) return absl::InvalidArgumentError("ExpertDispatcher: no EP communicator");
  const int64_t p = ep->size();
  if (options.num_experts < 1 || options.num_experts % p != 0)
    return absl::InvalidArgumentError(absl::StrCat("ExpertDispatcher: ", options.num_experts,
                                                   " experts do not split evenly over the ", p,
                                                   " ranks of ", ep->name()));
  if (options.hidden < 1 || options.topk < 1 || options.topk > options.num_experts)
    return absl::InvalidArgumentError(
        absl::StrCat("ExpertDispatcher: hidden ", options.hidden, " and topk ", options.topk,
                     " must be positive, topk at most ", options.num_experts));
  ExpertDispatcher d;
  d.ep_ = ep;
  d.options_ = options;
  d.local_experts_ = options.num_experts / p;
  d.first_local_ = ep->rank() * d.local_experts_;
  return d;
}

absl::StatusOr<Tensor> ExpertDispatcher::ExchangeRows(const Tensor& send,
                                                      const std::vector<int64_t>& send_rows,
                                                      const std::vector<int64_t>& recv_rows,
                                                      int64_t width) {
  if (send.ndim() != 2 || send.dim(0) != Sum(send_rows) || send.dim(1) != width)
    return absl::InvalidArgumentError(absl::StrCat(
        ep_->name(), " rank ", ep_->rank(), ": expert exchange of ", ShapeString(send.shape()),
        " rows, but the dispatch handle expects [", Sum(send_rows), ", ", width, "]"));
  std::vector<int64_t> sc, sd, rc, rd;
  RowLayout(send_rows, width, &sc, &sd);
  RowLayout(recv_rows, width, &rc, &rd);
  Tensor recv({Sum(recv_rows), width}, send.dtype());
  RETURN_IF_ERROR(ep_->AllToAllV(send, sc, sd, recv, rc, rd));
  return recv;
}

absl::Status ExpertDispatcher::CheckPerExpert(const char* what, const std::vector<Tensor>& t,
                                              const DispatchHandle& h, DType dtype) const {
  if (t.size() != static_cast<size_t>(local_experts_) || h.expert_rows.size() != t.size())
    return absl::InvalidArgumentError(absl::StrCat(what, ": got ", t.size(),
                                                   " tensors, expected one per local expert (",
                                                   local_experts_, ") of a dispatched handle"));
  for (size_t e = 0; e < t.size(); ++e) {
    const int64_t rows = static_cast<int64_t>(h.expert_rows[e].size());
    if (t[e].dtype() != dtype || t[e].ndim() != 2 || t[e].dim(0) != rows ||
        t[e].dim(1) != options_.hidden)
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": local expert ", e, " (global ", first_local_ + e, ") has ",
                       ShapeString(t[e].shape()), " ", DTypeName(t[e].dtype()), ", expected ",
                       DTypeName(dtype), " [", rows, ", ", options_.hidden, "]"));
  }
  return absl::OkStatus();
}

void ExpertDispatcher::CopyRow(const Tensor& from, int64_t i, Tensor& to, int64_t j) const {
  const size_t bytes = static_cast<size_t>(from.dim(1)) * DTypeSize(from.dtype());
  std::memcpy(static_cast<char*>(to.raw()) + j * bytes,
              static_cast<const char*>(from.raw()) + i * bytes, bytes);
}

void ExpertDispatcher::AddRow(const Tensor& from, int64_t i, Tensor& to, int64_t j) const {
  if (from.dtype() == DType::kF64) {
    AddRowOf<double>(from, i, to, j, options_.hidden);
  } else {
    AddRowOf<float>(from, i, to, j, options_.hidden);
  }
}

// ---- Dispatch -------------------------------------------------------------------------------

absl::StatusOr<Tensor> ExpertDispatcher::DispatchPreprocess(const Tensor& x,
                                                            const std::vector<int32_t>& topk,
                                                            DispatchHandle* h) const {
  const int64_t H = options_.hidden;
  if (!IsReal(x.dtype()) || x.ndim() != 2 || x.dim(1) != H)
    return absl::InvalidArgumentError(absl::StrCat("Dispatch: x is ", ShapeString(x.shape()), " ",
                                                   DTypeName(x.dtype()),
                                                   ", expected F32 or F64 [T, ", H, "]"));
  return DispatchPreprocess(x, topk, x.dtype(), h);
}

absl::StatusOr<Tensor> ExpertDispatcher::DispatchPreprocess(const Tensor& x,
                                                            const std::vector<int32_t>& topk,
                                                            DType dtype, DispatchHandle* h) const {
  const int64_t K = options_.topk, E = options_.num_experts;
  if (!IsReal(dtype))
    return absl::InvalidArgumentError(
        absl::StrCat("Dispatch: compute dtype ", DTypeName(dtype), ", expected F32 or F64"));
  if (x.ndim() != 2 || x.dim(1) < 1)
    return absl::InvalidArgumentError(absl::StrCat("Dispatch: rows are ", ShapeString(x.shape()),
                                                   ", expected a matrix [T, W], W >= 1"));
  const int64_t T = x.dim(0), W = x.dim(1);
  if (static_cast<int64_t>(topk.size()) != T * K)
    return absl::InvalidArgumentError(absl::StrCat("Dispatch: topk has ", topk.size(),
                                                   " entries, expected T x K = ", T, " x ", K));
  for (int64_t i = 0; i < T * K; ++i)
    if (topk[i] < 0 || topk[i] >= E)
      return absl::InvalidArgumentError(absl::StrCat("Dispatch: token ", i / K, " slot ", i % K,
                                                     " picks expert ", topk[i], ", outside [0, ", E,
                                                     ")"));

  const int P = ep_->size();
  const int rpn = options_.ep_ranks_per_node > 0 ? options_.ep_ranks_per_node : P;
  *h = DispatchHandle{};
  h->num_tokens = T;
  h->topk = K;
  h->dtype = dtype;
  h->row_dtype = x.dtype();
  h->row_width = W;
  h->send_rows.assign(P, 0);
  h->slot_rows.assign(P, 0);
  std::vector<std::vector<int64_t>> tokens_to(P);  // [P][rows] tokens for each destination
  std::vector<int> dests;
  for (int64_t t = 0; t < T; ++t) {
    dests.clear();
    for (int64_t k = 0; k < K; ++k) {
      const int d = RankOfExpert(topk[t * K + k]);
      ++h->slot_rows[d];
      dests.push_back(d);
    }
    std::sort(dests.begin(), dests.end());
    dests.erase(std::unique(dests.begin(), dests.end()), dests.end());
    int64_t nodes = 0;
    for (size_t i = 0; i < dests.size(); ++i) {
      tokens_to[dests[i]].push_back(t);
      if (i == 0 || dests[i] / rpn != dests[i - 1] / rpn) ++nodes;
    }
    h->stats.max_ranks_per_token =
        std::max<int64_t>(h->stats.max_ranks_per_token, static_cast<int64_t>(dests.size()));
    h->stats.max_nodes_per_token = std::max(h->stats.max_nodes_per_token, nodes);
  }

  for (int d = 0; d < P; ++d) {
    h->send_rows[d] = static_cast<int64_t>(tokens_to[d].size());
    for (int64_t t : tokens_to[d]) {
      h->send_token.push_back(t);
      for (int64_t k = 0; k < K; ++k) {
        h->send_topk.push_back(topk[t * K + k]);
        if (RankOfExpert(topk[t * K + k]) == d) h->slot_order.push_back(t * K + k);
      }
    }
  }
  const int64_t S = static_cast<int64_t>(h->send_token.size());
  Tensor send({S, W}, h->row_dtype);
  for (int64_t j = 0; j < S; ++j) CopyRow(x, h->send_token[j], send, j);
  h->stats.rows_sent = S;
  h->stats.row_bytes_sent = static_cast<int64_t>(send.nbytes());
  h->stats.slots = T * K;
  return send;
}

absl::StatusOr<Tensor> ExpertDispatcher::DispatchExchange(const Tensor& send, DispatchHandle* h) {
  const int P = ep_->size();
  if (h->send_rows.size() != static_cast<size_t>(P) || send.dtype() != h->row_dtype ||
      send.ndim() != 2 || send.dim(0) != Sum(h->send_rows) || send.dim(1) != h->row_width)
    return absl::InvalidArgumentError(
        absl::StrCat("DispatchExchange: send rows ", ShapeString(send.shape()),
                     " do not match the handle of DispatchPreprocess"));
  // Counts first: every rank learns how many rows each peer sends it.
  h->recv_rows.assign(P, 0);
  RETURN_IF_ERROR(ep_->AllToAll(h->send_rows, h->recv_rows));
  ASSIGN_OR_RETURN(Tensor recv, ExchangeRows(send, h->send_rows, h->recv_rows, h->row_width));
  // The topk rows travel beside the activations so the receiver can fan out.
  const int64_t K = options_.topk;
  std::vector<int64_t> sc, sd, rc, rd;
  RowLayout(h->send_rows, K, &sc, &sd);
  RowLayout(h->recv_rows, K, &rc, &rd);
  h->recv_topk.assign(Sum(h->recv_rows) * K, -1);
  RETURN_IF_ERROR(ep_->AllToAllV(h->send_topk, sc, sd, h->recv_topk, rc, rd));
  h->stats.rows_received = recv.dim(0);
  h->stats.row_bytes_received = static_cast<int64_t>(recv.nbytes());
  return recv;
}

absl::StatusOr<std::vector<Tensor>> ExpertDispatcher::DispatchPostprocess(const Tensor& recv,
                                                                          DispatchHandle* h) const {
  const int64_t W = h->row_width, K = options_.topk;
  const int64_t R = Sum(h->recv_rows);
  if (recv.dtype() != h->row_dtype || recv.ndim() != 2 || recv.dim(0) != R || recv.dim(1) != W ||
      static_cast<int64_t>(h->recv_topk.size()) != R * K)
    return absl::InvalidArgumentError(absl::StrCat("DispatchPostprocess: received rows ",
                                                   ShapeString(recv.shape()),
                                                   " do not match the handle of DispatchExchange"));
  h->expert_rows.assign(local_experts_, {});
  h->slot_position.assign(R * K, -1);
  h->hit_rows.assign(ep_->size(), 0);
  int64_t i = 0;
  for (int s = 0; s < ep_->size(); ++s) {
    for (int64_t end = i + h->recv_rows[s]; i < end; ++i) {
      for (int64_t k = 0; k < K; ++k) {
        const int64_t e = h->recv_topk[i * K + k] - first_local_;
        if (e < 0 || e >= local_experts_) continue;
        h->slot_position[i * K + k] = static_cast<int64_t>(h->expert_rows[e].size());
        h->expert_rows[e].push_back(i);
        ++h->hit_rows[s];
      }
    }
  }
  std::vector<Tensor> out;
  out.reserve(local_experts_);
  for (int64_t e = 0; e < local_experts_; ++e) {
    const std::vector<int64_t>& rows = h->expert_rows[e];
    Tensor xe({static_cast<int64_t>(rows.size()), W}, h->row_dtype);
    for (size_t j = 0; j < rows.size(); ++j) CopyRow(recv, rows[j], xe, j);
    out.push_back(std::move(xe));
  }
  return out;
}

absl::StatusOr<std::vector<Tensor>> ExpertDispatcher::Dispatch(const Tensor& x,
                                                               const std::vector<int32_t>& topk,
                                                               DispatchHandle* h) {
  ASSIGN_OR_RETURN(Tensor send, DispatchPreprocess(x, topk, h));
  ASSIGN_OR_RETURN(Tensor recv, DispatchExchange(send, h));
  return DispatchPostprocess(recv, h);
}

absl::StatusOr<std::vector<Tensor>> ExpertDispatcher::Dispatch(const Tensor& rows,
                                                               const std::vector<int32_t>& topk,
                                                               DType dtype, DispatchHandle* h) {
  ASSIGN_OR_RETURN(Tensor send, DispatchPreprocess(rows, topk, dtype, h));
  ASSIGN_OR_RETURN(Tensor recv, DispatchExchange(send, h));
  return DispatchPostprocess(recv, h);
}

// ---- Combine --------------------------------------------------------------------------------

absl::StatusOr<Tensor> ExpertDispatcher::CombinePreprocess(const std::vector<Tensor>& expert_out,
                                                           const DispatchHandle& h) const {
  // The compute dtype, or a narrower wire format the caller chose (e.g. BF16 codes); real
  // tensors of the other compute precision are a caller's bug and refused.
  const DType dtype =
      expert_out.empty() || IsReal(expert_out[0].dtype()) ? h.dtype : expert_out[0].dtype();
  RETURN_IF_ERROR(CheckPerExpert("Combine", expert_out, h, dtype));
  const int64_t H = options_.hidden, K = options_.topk;
  Tensor send({Sum(h.hit_rows), H}, dtype);
  int64_t j = 0;
  const int64_t R = static_cast<int64_t>(h.slot_position.size()) / K;
  for (int64_t i = 0; i < R; ++i)
    for (int64_t k = 0; k < K; ++k) {
      const int64_t pos = h.slot_position[i * K + k];
      if (pos < 0) continue;
      CopyRow(expert_out[h.recv_topk[i * K + k] - first_local_], pos, send, j++);
    }
  return send;
}

absl::StatusOr<Tensor> ExpertDispatcher::CombineExchange(const Tensor& send,
                                                         const DispatchHandle& h) {
  return ExchangeRows(send, h.hit_rows, h.slot_rows, options_.hidden);
}

Tensor ExpertDispatcher::CombinePostprocess(const Tensor& recv, const DispatchHandle& h) const {
  const int64_t H = options_.hidden;
  Tensor out({h.num_tokens * h.topk, H}, recv.dtype());
  for (size_t j = 0; j < h.slot_order.size(); ++j) CopyRow(recv, j, out, h.slot_order[j]);
  return out;
}

absl::StatusOr<Tensor> ExpertDispatcher::Combine(const std::vector<Tensor>& expert_out,
                                                 const DispatchHandle& h) {
  ASSIGN_OR_RETURN(Tensor send, CombinePreprocess(expert_out, h));
  ASSIGN_OR_RETURN(Tensor recv, CombineExchange(send, h));
  return CombinePostprocess(recv, h);
}

}  // namespace mt

// trainer/moe_parallel.cc: the routed experts of an MoE layer under expert parallelism.
//
// Each rank routes its own tokens (moe.cc); the dispatcher moves them to the ranks holding
// their experts and the expert outputs back. Two choices make a layout with EP compute
// what one process computes, operation for operation, in the forward pass:
//  - an expert runs its rows from each source rank as a separate batch: those are exactly
//    the rows it gets from that rank's micro-batch when experts are local (same rows, same
//    order), and a GEMM's rows can round differently in a batch of another height;
//  - the weighted sum over a token's experts is taken in ascending expert id, the order
//    moe.cc's all-local path adds them in.
// Only gradient sums over micro-batches and ranks then differ in order (rounding), which
// keeps near-tied routing decisions from flipping between layouts.
//
// In fp8 (DeepSeek-V3 §3.3.2) a token crosses the dispatch as the experts' own E4M3 operand:
// its rank quantises it once per 1x128 tile, exactly as the experts' gate/up Linear would
// (the quantisation is per row, so quantising x before gathering equals quantising each
// expert's gathered rows), packs codes and scales into one byte row (kernels/quantize.h) and
// the expert consumes the received codes and scales unchanged. Expert outputs come back as
// BF16 codes, rounded exactly as moe.cc's all-local path rounds them in fp8. Both backward
// exchanges move the compute dtype (FP32 rows): see docs/fp8.md.
#include <algorithm>
#include <cstdio>

#include "kernels/quantize.h"
#include "parallel/communicator_groups.h"
#include "trainer/moe.h"

namespace mt {
inline namespace MT_REAL_NS {
namespace {

// A failed exchange leaves the EP group's other ranks waiting inside the same collective:
// end the job with the message rather than return into a step that cannot complete.
template <typename T>
T OrAbort(absl::StatusOr<T> v, const char* what) {
  if (!v.ok()) MpiRuntime::AbortJob(Annotate(v.status(), what));
  return *std::move(v);
}

// Rows [b, e) of x [N, H].
Tensor Rows(const Tensor& x, int64_t b, int64_t e) {
  Tensor out({e - b, x.dim(1)}, x.dtype());
  std::copy_n(x.data<Real>() + b * x.dim(1), (e - b) * x.dim(1), out.data<Real>());
  return out;
}

// Stacks per-segment outputs [n_i, H] back into one [sum n_i, H].
Tensor Stack(const std::vector<Tensor>& parts, int64_t H) {
  int64_t n = 0;
  for (const Tensor& p : parts) n += p.defined() ? p.dim(0) : 0;
  Tensor out({n, H}, kRealDType);
  int64_t o = 0;
  for (const Tensor& p : parts) {
    if (!p.defined()) continue;
    std::copy_n(p.data<Real>(), p.numel(), out.data<Real>() + o);
    o += p.numel();
  }
  return out;
}

}  // namespace

void Moe::ExpertsForwardParallel(const Tensor& x, Saved* s, Tensor* y) const {
  const int64_t T = x.dim(0), L = static_cast<int64_t>(experts_.size());
  const bool fp8 = precision_->quantized_dispatch();
  // [L] expert inputs: FP32 rows [T_e, H], or in fp8 packed E4M3 rows [T_e, PackedRowBytes(H)]
  std::vector<Tensor> in =
      fp8 ? OrAbort(dispatcher_->Dispatch(PackActivationRows(experts_[0].Store(x).e4m3()), s->topk,
                                          kRealDType, &s->handle),
                    "MoE FP8 expert dispatch")
          : OrAbort(dispatcher_->Dispatch(x, s->topk, &s->handle), "MoE expert dispatch");
  // Received rows are ordered by source rank: row bounds of each source.
  const DispatchHandle& h = s->handle;
  const int P = static_cast<int>(h.recv_rows.size());
  std::vector<int64_t> recv_begin(P + 1, 0);
  for (int r = 0; r < P; ++r) recv_begin[r + 1] = recv_begin[r] + h.recv_rows[r];
  std::vector<Tensor> out(L);  // [L] tensors [T_e, H]
  s->segments.assign(L, std::vector<int64_t>(P + 1, 0));
  s->experts.assign(L * P, {});
  for (int64_t e = 0; e < L; ++e) {
    const std::vector<int64_t>& rows = h.expert_rows[e];  // received row of each input row
    std::vector<int64_t>& seg = s->segments[e];
    for (int r = 0; r < P; ++r)
      seg[r + 1] = std::lower_bound(rows.begin(), rows.end(), recv_begin[r + 1]) - rows.begin();
    std::vector<Tensor> parts(P);
    for (int r = 0; r < P; ++r) {
      if (seg[r + 1] <= seg[r]) continue;
      SwigluMlp::Saved* saved = &s->experts[e * P + r];
      parts[r] =
          fp8 ? experts_[e].Forward(
                    StoredActivation::FromE4M3(UnpackActivationRows(in[e], seg[r], seg[r + 1], H_)),
                    saved)
              : experts_[e].Forward(Rows(in[e], seg[r], seg[r + 1]), saved);
    }
    out[e] = Stack(parts, H_);
  }
  if (precision_->bf16_expert_outputs()) {  // the combine moves BF16 codes, 2 bytes a value
    std::vector<Tensor> codes(L);
    for (int64_t e = 0; e < L; ++e) codes[e] = StoredActivation::Bf16(out[e]).bf16_codes();
    const Tensor recv = OrAbort(dispatcher_->Combine(codes, s->handle), "MoE BF16 expert combine");
    s->slot_out = StoredActivation::FromBf16Codes(recv).Values();  // [T*K, H] widened
  } else {
    s->slot_out = OrAbort(dispatcher_->Combine(out, s->handle), "MoE expert combine");  // [T*K, H]
  }
  std::vector<int64_t> order(K_);
  for (int64_t t = 0; t < T; ++t) {
    const int32_t* idx = &s->topk[t * K_];
    for (int64_t k = 0; k < K_; ++k) order[k] = k;
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return idx[a] < idx[b]; });
    for (int64_t k : order)
      ops::Axpy(s->weight[t * K_ + k], s->slot_out.data<Real>() + (t * K_ + k) * H_,
                y->data<Real>() + t * H_, H_);
  }
}

void Moe::ExpertsBackwardParallel(const Tensor& dy, Saved* s, Tensor* dx,
                                  std::vector<double>* dw) const {
  const int64_t T = dy.dim(0), L = static_cast<int64_t>(experts_.size());
  const int P = static_cast<int>(s->handle.recv_rows.size());
  Tensor d_slots = NewMatrix(T * K_, H_);  // [T*K, H] d loss / d (expert output of slot t, k)
  const Real* ys = s->slot_out.data<Real>();
  for (int64_t t = 0; t < T; ++t) {
    const Real* g = dy.data<Real>() + t * H_;
    for (int64_t k = 0; k < K_; ++k) {
      const int64_t j = t * K_ + k;
      double dot = 0;
      for (int64_t c = 0; c < H_; ++c) dot += static_cast<double>(g[c]) * ys[j * H_ + c];
      (*dw)[j] = dot;
      const Real w = s->weight[j];
      Real* d = d_slots.data<Real>() + j * H_;
      for (int64_t c = 0; c < H_; ++c) d[c] = w * g[c];
    }
  }
  std::vector<Tensor> d_out = OrAbort(dispatcher_->CombineBackward(d_slots, s->handle),
                                      "MoE combine backward");  // [L] tensors [T_e, H]
  std::vector<Tensor> d_in(L);
  for (int64_t e = 0; e < L; ++e) {
    const std::vector<int64_t>& seg = s->segments[e];
    std::vector<Tensor> parts(P);
    for (int r = 0; r < P; ++r)
      if (seg[r + 1] > seg[r])
        parts[r] =
            experts_[e].BackwardInput(Rows(d_out[e], seg[r], seg[r + 1]), &s->experts[e * P + r]);
    d_in[e] = Stack(parts, H_);
  }
  const Tensor dx_routed = OrAbort(dispatcher_->DispatchBackward(d_in, s->handle),
                                   "MoE dispatch backward");  // [T, H]
  ops::Add(dx_routed.data<Real>(), dx->data<Real>(), T * H_);
  s->slot_out = Tensor();
}

void Moe::BackwardWeightParallel(Saved* s) const {
  const int P = static_cast<int>(s->handle.recv_rows.size());
  for (size_t e = 0; e < experts_.size(); ++e)
    for (int r = 0; r < P; ++r)
      if (s->segments[e][r + 1] > s->segments[e][r])
        experts_[e].BackwardWeight(&s->experts[e * P + r]);
}

}  // namespace MT_REAL_NS
}  // namespace mt

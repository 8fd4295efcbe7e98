// trainer/device_moe_ep.cc: the routed experts of a DMoe under expert parallelism
// (device_layers.h DeviceExpertGroup): each rank routes its own tokens (device_moe.cc), sends
// every destination EP rank the rows of its experts, runs the rows it receives through its
// local experts' grouped GEMMs and sends the outputs back, where device_moe.cc combines them
// with the gate weights in expert-id order; and the backward of all of it.
//
// Layouts. The sender's rows are the permuted rows of MoePlanBuild (by expert, then slot):
// since EP rank r holds the contiguous experts [r * E_l, (r + 1) * E_l), the rows for rank r
// are one contiguous block, so the permutation is the gather and the all-to-all-v sends
// blocks as they lie (no dedupe: a token with two experts on one rank travels twice, which
// DeepEP avoids; the rows are the same). The receiver keeps its rows as they arrive, by
// source rank, then local expert, then the source's token order, and runs each source's
// rows as one grouped GEMM over the local experts. That is trainer/moe_parallel.cc's choice
// (an expert's rows from each source rank are a separate batch), which makes the forward
// the CPU path's operation for operation; in fp8 the Wgrad's token tiles restart at each
// (source, expert) block, as the CPU path's per-source expert GEMMs have them, and every
// weight gradient adds its sources in rank order, the CPU path's summation order. The price
// on a GPU: P grouped launches per projection rather than one (fusing them needs a grouped
// GEMM whose groups name their expert, which the kernels do not have yet).
//
// Overlap: the dispatch and the combine's backward are started (Communicator::IAllToAllV)
// and land only after DMoe::Forward and Backward have run the shared expert; the dispatch's
// backward lands after the weight gradients. Until it lands an exchange's buffers are held
// (DMoe::InFlight) and not read. The combine waits at once: nothing is left to overlap it.
//
// Precision on the wire (DeepSeek-V3 §3.3.2, as moe_parallel.cc): in fp8 the dispatch moves
// the experts' own E4M3 operand, codes and their 1x128 scales (quantised once by the sender;
// per row, so the same bytes as each expert quantising its rows); the combine moves the
// outputs as BF16 bits (Backend::ToBf16Bits); both backward exchanges move FP32.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/status.h"
#include "parallel/communicator_groups.h"
#include "trainer/device_layers.h"

namespace mt {
inline namespace MT_REAL_NS {
namespace {

// A failed exchange leaves the EP group's other ranks waiting inside the same collective:
// end the job with the message rather than return into a step that cannot complete.
void OrAbort(const absl::Status& s, const char* what) {
  if (!s.ok()) MpiRuntime::AbortJob(Annotate(s, what));
}

// [max(n, 1), w]: a rank may receive no rows, and a backend allocation is never empty.
Tensor Rows(Backend& be, int64_t n, int64_t w, DType dt = DType::kF32) {
  return be.Empty({std::max<int64_t>(n, 1), w}, dt);
}

// Rows [at, at + n) of x.
Tensor Part(const Tensor& x, int64_t at, int64_t n) { return x.Slice(at, at + n); }

// The row counts and offsets of an exchange, scaled to elements of rows `w` wide.
std::vector<int64_t> Elements(const std::vector<int64_t>& rows, int64_t w) {
  std::vector<int64_t> out(rows);
  for (int64_t& x : out) x *= w;
  return out;
}

// All-to-all-v over the EP group's device communicator of rows `width` elements wide:
// from[ from_at[r], + from_rows[r]) to rank r, into to[to_at[s], + to_rows[s]) from rank s.
void ExchangeRows(const DeviceExpertGroup& ep, const Tensor& from,
                  const std::vector<int64_t>& from_rows, const std::vector<int64_t>& from_at,
                  Tensor* to, const std::vector<int64_t>& to_rows,
                  const std::vector<int64_t>& to_at, const char* what) {
  const int64_t w = from.numel() / from.dim(0);
  OrAbort(ep.device->AllToAllV(InBuffer(from), Elements(from_rows, w), Elements(from_at, w),
                               OutBuffer(*to), Elements(to_rows, w), Elements(to_at, w)),
          what);
}

// ExchangeRows started: it moves until Land.
DMoe::InFlight StartRows(const DeviceExpertGroup& ep, const Tensor& from,
                         const std::vector<int64_t>& from_rows, const std::vector<int64_t>& from_at,
                         Tensor to, const std::vector<int64_t>& to_rows,
                         const std::vector<int64_t>& to_at, const char* what) {
  const int64_t w = from.numel() / from.dim(0);
  absl::StatusOr<std::unique_ptr<Request>> r =
      ep.device->IAllToAllV(InBuffer(from), Elements(from_rows, w), Elements(from_at, w),
                            OutBuffer(to), Elements(to_rows, w), Elements(to_at, w));
  OrAbort(r.status(), what);
  return DMoe::InFlight{std::shared_ptr<Request>(*std::move(r)), from, std::move(to)};
}

// Waits until every started exchange has landed, in the order started.
void Land(std::vector<DMoe::InFlight>* moving, const char* what) {
  for (DMoe::InFlight& m : *moving) OrAbort(m.request->Wait(), what);
  moving->clear();
}

// Source s's received rows as the experts keep them: its E4M3 operand in fp8, else values.
DAct SourceInput(const DMoe::Exchange& ex, int s) {
  DAct a;
  if (!ex.xq.empty())
    a.q = ex.xq[s];
  else
    a.values = Part(ex.xr, ex.recv_at[s], ex.recv_rows[s]);
  return a;
}

}  // namespace

EpExchangePlan MakeEpExchangePlan(const std::vector<int32_t>& offsets,
                                  const std::vector<int64_t>& recv_counts, int P) {
  const auto E = static_cast<int64_t>(offsets.size()) - 1;
  MT_CHECK(P >= 1 && E >= P && E % P == 0 && static_cast<int64_t>(recv_counts.size()) == E,
           "expert exchange: ", E, " experts, ", recv_counts.size(), " counts over ", P, " ranks");
  const int64_t L = E / P;
  EpExchangePlan x;
  x.send_rows.assign(P, 0);
  x.send_at.assign(P, 0);
  x.recv_rows.assign(P, 0);
  x.recv_at.assign(P, 0);
  x.offsets.assign(P * (L + 1), 0);
  for (int r = 0; r < P; ++r) {
    x.send_at[r] = offsets[r * L];
    x.send_rows[r] = offsets[(r + 1) * L] - offsets[r * L];
    x.recv_at[r] = x.R;
    int32_t* o = &x.offsets[r * (L + 1)];
    for (int64_t j = 0; j < L; ++j) {
      MT_CHECK(recv_counts[r * L + j] >= 0, "expert exchange: a negative count");
      o[j + 1] = o[j] + static_cast<int32_t>(recv_counts[r * L + j]);
    }
    x.recv_rows[r] = o[L];
    x.R += o[L];
  }
  return x;
}

void DMoe::StartDispatchEp(const DeviceBatch& b, const Tensor& xp, Saved* s) const {
  Backend& be = *b.be;
  Exchange& ex = s->ex;
  const int P = ep->size;
  const int64_t L = E_local, rows = xp.dim(0);
  MT_CHECK(L * P == E, "expert parallelism: ", P, " EP ranks of ", L, " experts, not ", E);
  // The plan's expert offsets to the host. An all-to-all-v needs its row counts before it
  // is posted, so every dispatch synchronises the stream once here: inherent in
  // all-to-all-v (DeepEP's dispatch waits for its counts the same way).
  std::vector<int32_t> off(E + 1);
  be.CopyToHost(s->offsets.data<int32_t>(), off.data(), off.size() * sizeof(int32_t));
  MT_CHECK(off[E] == rows, "expert parallelism: the plan holds ", off[E], " of ", rows, " rows");
  // Rows per (destination rank, its local expert), exchanged: what each source sends here.
  std::vector<int64_t> send_counts(E), recv_counts(E);
  for (int64_t e = 0; e < E; ++e) send_counts[e] = off[e + 1] - off[e];
  OrAbort(ep->host->AllToAll(send_counts, recv_counts), "MoE expert counts exchange");
  static_cast<EpExchangePlan&>(ex) = MakeEpExchangePlan(off, recv_counts, P);
  Tensor offsets({P, L + 1}, DType::kI32);
  std::copy(ex.offsets.begin(), ex.offsets.end(), offsets.data<int32_t>());
  ex.recv_offsets = be.ToDevice(offsets);
  const int64_t R = ex.R;

  // Started, to land in ExpertsForwardEp.
  if (b.fp8()) {
    const QuantizedActivation q = be.QuantizeFp8(xp.data<float>(), rows, H);
    const int64_t tiles = q.col_tiles();
    Tensor scales = Rows(be, rows, tiles);  // [rows, tiles]: a row's scales travel with it
    be.Transpose(q.scales.data<float>(), scales.data<float>(), tiles, rows);
    ex.moving.push_back(StartRows(*ep, q.data, ex.send_rows, ex.send_at,
                                  Rows(be, R, H, q.data.dtype()), ex.recv_rows, ex.recv_at,
                                  "MoE FP8 expert dispatch (codes)"));
    ex.moving.push_back(StartRows(*ep, scales.Slice(0, rows), ex.send_rows, ex.send_at,
                                  Rows(be, R, tiles), ex.recv_rows, ex.recv_at,
                                  "MoE FP8 expert dispatch (scales)"));
  } else {
    ex.xr = Rows(be, R, H);
    ex.moving.push_back(StartRows(*ep, xp, ex.send_rows, ex.send_at, ex.xr, ex.recv_rows,
                                  ex.recv_at, "MoE expert dispatch"));
  }
}

void DMoe::ExpertsForwardEp(const DeviceBatch& b, Saved* s) const {
  Backend& be = *b.be;
  Exchange& ex = s->ex;
  const int P = ep->size;
  const int64_t L = E_local, R = ex.R, rows = b.T() * K;  // rows: the slots routed here
  if (b.fp8()) {
    const Tensor codes = ex.moving[0].to, recv_scales = ex.moving[1].to;  // [R,H], [R,tiles]
    const int64_t tiles = recv_scales.dim(1);
    Land(&ex.moving, "MoE FP8 expert dispatch");
    ex.xq.assign(P, {});
    for (int r = 0; r < P; ++r) {
      const int64_t n = ex.recv_rows[r], at = ex.recv_at[r];
      if (n == 0) continue;
      QuantizedActivation& qs = ex.xq[r];
      qs.rows = n;
      qs.cols = H;
      qs.data = Part(codes, at, n);
      qs.scales = be.Empty({tiles, n});  // the GEMMs' [tiles, rows] layout
      be.Transpose(recv_scales.data<float>() + at * tiles, qs.scales.data<float>(), n, tiles);
    }
  } else {
    Land(&ex.moving, "MoE expert dispatch");
  }

  // The local experts, one grouped GEMM per source rank.
  const GroupedGemms gg{b.be, b.precision};
  const int32_t* ro = ex.recv_offsets.data<int32_t>();
  Tensor g = Rows(be, R, F), u = Rows(be, R, F), yr = Rows(be, R, H);
  const Weights w = KeptWeights(b);
  for (int r = 0; r < P; ++r) {
    const int64_t n = ex.recv_rows[r], at = ex.recv_at[r];
    if (n == 0) continue;
    const DAct x = SourceInput(ex, r);
    Tensor gs = Part(g, at, n), us = Part(u, at, n);
    gg.Forward(x, w.gate, &gs, ro + r * (L + 1), n, L, H, F);
    gg.Forward(x, w.up, &us, ro + r * (L + 1), n, L, H, F);
  }
  const Tensor h = SwigluForwardKeep(b, g, u, &s->in, &s->h);  // elementwise: all rows at once
  for (int r = 0; r < P; ++r) {
    const int64_t n = ex.recv_rows[r], at = ex.recv_at[r];
    if (n == 0) continue;
    Tensor ys = Part(yr, at, n);
    gg.Forward(DAct{Part(h, at, n), {}}, w.down, &ys, ro + r * (L + 1), n, L, F, H);
  }
  // Combine: the outputs back to their tokens' ranks, in the permuted order; in fp8 as BF16
  // (trainer/precision.h: the values the BF16 combine delivers, RoundBf16's).
  s->ye = Rows(be, rows, H);
  if (b.fp8()) {
    Tensor bits = Rows(be, R, H, DType::kBF16), back = Rows(be, rows, H, DType::kBF16);
    be.ToBf16Bits(yr.data<float>(), static_cast<uint16_t*>(bits.raw()), bits.numel());
    ExchangeRows(*ep, bits, ex.recv_rows, ex.recv_at, &back, ex.send_rows, ex.send_at,
                 "MoE BF16 expert combine");
    be.FromBf16Bits(static_cast<const uint16_t*>(back.raw()), s->ye.data<float>(), back.numel());
  } else {
    ExchangeRows(*ep, yr, ex.recv_rows, ex.recv_at, &s->ye, ex.send_rows, ex.send_at,
                 "MoE expert combine");
  }
}

void DMoe::StartCombineBackwardEp(const DeviceBatch& b, const Tensor& dye, Saved* s) const {
  Exchange& ex = s->ex;
  // The combine's backward: each slot's output gradient to its expert's rank.
  ex.moving.push_back(StartRows(*ep, dye, ex.send_rows, ex.send_at, Rows(*b.be, ex.R, H),
                                ex.recv_rows, ex.recv_at, "MoE combine backward"));
}

Tensor DMoe::ExpertsBackwardEp(const DeviceBatch& b, Saved* s) const {
  Backend& be = *b.be;
  Exchange& ex = s->ex;
  const int P = ep->size;
  const int64_t L = E_local, R = ex.R, rows = b.T() * K;
  const GroupedGemms gg{b.be, b.precision};
  const int32_t* ro = ex.recv_offsets.data<int32_t>();
  const Tensor dyr = ex.moving[0].to;  // [R,H]
  Land(&ex.moving, "MoE combine backward");
  Tensor dh = Rows(be, R, F);
  const Weights w = KeptWeights(b);
  for (int r = 0; r < P; ++r) {
    const int64_t n = ex.recv_rows[r], at = ex.recv_at[r];
    if (n == 0) continue;
    Tensor dhs = Part(dh, at, n);
    gg.BackwardInput(Part(dyr, at, n), w.down, &dhs, ro + r * (L + 1), n, L, F, H, false);
  }
  Tensor du;
  const Tensor dg = SwigluBackwardRecompute(b, dh, s->in, &s->h, &du);
  Tensor dxr = Rows(be, R, H);
  for (int r = 0; r < P; ++r) {
    const int64_t n = ex.recv_rows[r], at = ex.recv_at[r];
    if (n == 0) continue;
    const int32_t* o = ro + r * (L + 1);
    Tensor dxs = Part(dxr, at, n);
    gg.BackwardInput(Part(dg, at, n), w.gate, &dxs, o, n, L, H, F, false);
    gg.BackwardInput(Part(du, at, n), w.up, &dxs, o, n, L, H, F, true);
  }
  // The dispatch's backward: each slot's input gradient back to its token's rank, moving
  // while the weight gradients run (when the batch takes them at once).
  ex.moving.push_back(StartRows(*ep, dxr, ex.recv_rows, ex.recv_at, Rows(be, rows, H), ex.send_rows,
                                ex.send_at, "MoE dispatch backward"));
  // No exchange in the weight gradients: a split backward queues them like the local
  // experts' (trainer/moe_parallel.cc defers them too), each source's in rank order.
  for (int r = 0; r < P; ++r) {
    const int64_t n = ex.recv_rows[r], at = ex.recv_at[r];
    if (n == 0) continue;
    b.WeightGrad([gg, this, dys = Part(dyr, at, n), dgs = Part(dg, at, n), dus = Part(du, at, n),
                  x = SourceInput(ex, r), hs = Part(s->h, at, n), ro = ex.recv_offsets, r, n, L] {
      const int32_t* o = ro.data<int32_t>() + r * (L + 1);
      gg.BackwardWeight(dys, DAct{hs, {}}, &down_g, o, n, L, F, H);
      gg.BackwardWeight(dgs, x, &gate_g, o, n, L, H, F);
      gg.BackwardWeight(dus, x, &up_g, o, n, L, H, F);
    });
  }
  const Tensor dxp = ex.moving[0].to;  // [rows,H]
  Land(&ex.moving, "MoE dispatch backward");
  return dxp;
}

}  // namespace MT_REAL_NS
}  // namespace mt

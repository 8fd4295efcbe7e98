// trainer/device_moe_ep.cc: the routed experts of a DMoe under expert parallelism
// (device_layers.h DeviceExpertGroup): each rank routes its own tokens (device_moe.cc), sends
// every destination EP rank the rows of its experts, runs the rows it receives through its
// local experts' grouped GEMMs and sends the outputs back, where device_moe.cc combines them
// with the gate weights in expert-id order; and the backward of all of it.
//
// Layouts. A token goes once to each rank that holds any of its experts (DeepEP's dedupe;
// the plans are trainer/device_moe_ep_plan.h's): the sender gathers its tokens by
// destination rank, then token. The receiver copies each row it gets to its slots in the
// per-slot layout of MoePlanBuild's permuted rows (by expert, then slot; EP rank r holds
// the contiguous experts [r * E_l, (r + 1) * E_l)), source by source: by source rank, then
// local expert, then the source's slot order, and runs each source's rows as one grouped
// GEMM over the local experts. The outputs go back per slot (the combine weighs them at the
// token's rank); the dispatch's backward sums a token's slots on the expert's rank and
// sends one row back, summed there over the ranks (the CPU dispatcher's order).
//
// Per-source batches are trainer/moe_parallel.cc's choice (an expert's rows from each
// source rank are a separate batch), which makes the forward the CPU path's operation for
// operation; in fp8 the Wgrad's token tiles restart at each (source, expert) block, as the
// CPU path's per-source expert GEMMs have them, and every weight gradient adds its sources
// in rank order, the CPU path's summation order. The price on a GPU: P grouped launches per
// projection rather than one (fusing them needs a grouped GEMM whose groups name their
// expert, which the kernels do not have yet).
//
// Overlap: the dispatch and the combine's backward are started (Communicator::IAllToAllV)
// and land only after DMoe::Forward and Backward have run the shared expert; the dispatch's
// backward lands after the weight gradients. Until it lands an exchange's buffers are held
// (DMoe::InFlight) and not read. The combine waits at once: nothing is left to overlap it.
//
// Precision on the wire (DeepSeek-V3 §3.3.2, as moe_parallel.cc): in fp8 the dispatch moves
// the experts' own E4M3 operand, a row's codes and then its 1x128 scales packed in one row
// (quantised once by the sender; per row, so the same bytes as each expert quantising its
// rows); the combine moves the outputs as BF16 bits (Backend::ToBf16Bits); both backward
// exchanges move FP32.
#include <algorithm>
#include <utility>
#include <vector>

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

// Bytes of a dispatched FP8 row: its H codes, then its 1x128 tiles' FP32 scales. H is a
// multiple of 4 (the scales stay aligned, and GatherRows moves words).
int64_t PackedWidth(int64_t H, int64_t tiles) {
  MT_CHECK(H % 4 == 0, "FP8 expert dispatch: hidden size ", H, " is not a multiple of 4");
  return H + 4 * tiles;
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

void DMoe::StartDispatchEp(const DeviceBatch& b, const Tensor& x, Saved* s) const {
  Backend& be = *b.be;
  Exchange& ex = s->ex;
  const int P = ep->size;
  const int64_t L = E_local, T = b.T();
  MT_CHECK(L * P == E, "expert parallelism: ", P, " EP ranks of ", L, " experts, not ", E);
  // The routing to the host. An all-to-all-v needs its row counts before it is posted, so
  // every dispatch synchronises the stream once here: inherent in all-to-all-v (DeepEP's
  // dispatch waits for its counts the same way).
  std::vector<int32_t> topk(T * K);
  be.CopyToHost(s->topk.data<int32_t>(), topk.data(), topk.size() * sizeof(int32_t));
  // The routing plan's expert offsets [E+1], counted here rather than copied too: the
  // prefix sums of the slots per expert, as MoePlanBuild makes them.
  std::vector<int32_t> off(E + 1, 0);
  for (int32_t e : topk) {
    MT_CHECK(e >= 0 && e < E, "expert parallelism: a slot routed to expert ", e, " of ", E);
    ++off[e + 1];
  }
  for (int64_t e = 0; e < E; ++e) off[e + 1] += off[e];
  ex.dedupe_send = MakeEpDedupeSend(topk, K, off, P);
  const EpDedupeSend& ds = ex.dedupe_send;
  // Per destination rank: its experts' slots from here, then the rows that carry them.
  std::vector<int64_t> send_counts(P * (L + 1)), recv_counts(P * (L + 1));
  for (int r = 0; r < P; ++r) {
    for (int64_t j = 0; j < L; ++j)
      send_counts[r * (L + 1) + j] = off[r * L + j + 1] - off[r * L + j];
    send_counts[r * (L + 1) + L] = ds.rows[r];
  }
  OrAbort(ep->host->AllToAll(send_counts, recv_counts), "MoE expert counts exchange");
  std::vector<int64_t> slot_counts(E), unique_rows(P);
  for (int r = 0; r < P; ++r) {
    for (int64_t j = 0; j < L; ++j) slot_counts[r * L + j] = recv_counts[r * (L + 1) + j];
    unique_rows[r] = recv_counts[r * (L + 1) + L];
  }
  static_cast<EpExchangePlan&>(ex) = MakeEpExchangePlan(off, slot_counts, P);
  const int64_t R = ex.R;
  // Where each received slot's row is and which slots each row sums, from its sender.
  std::vector<int32_t> meta(std::max<int64_t>(2 * R, 1));
  std::vector<int64_t> meta_rows(P), meta_at(P);
  for (int r = 0; r < P; ++r) {
    meta_rows[r] = 2 * ex.recv_rows[r];
    meta_at[r] = 2 * ex.recv_at[r];
  }
  OrAbort(ep->host->AllToAllV(InBuffer(ds.meta), ds.meta_rows, ds.meta_at, OutBuffer(meta),
                              meta_rows, meta_at),
          "MoE expert dedupe exchange");
  meta.resize(2 * R);
  ex.dedupe_receive = MakeEpDedupeReceive(ex, unique_rows, meta);
  const EpDedupeReceive& dr = ex.dedupe_receive;
  // The plans' index arrays to the device in one upload, each a slice of it.
  Tensor token;  // [U] the sender's token per row
  const std::vector<std::pair<const std::vector<int32_t>*, Tensor*>> index = {
      {&ex.offsets, &ex.recv_offsets},
      {&dr.expand, &ex.expand},
      {&dr.sum_offsets, &ex.sum_offsets},
      {&dr.sum_rows, &ex.sum_rows},
      {&ds.token_offsets, &ex.token_offsets},
      {&ds.token_rows, &ex.token_rows},
      {&ds.token, &token}};
  int64_t ints = 0;
  for (const auto& [v, t] : index) ints += static_cast<int64_t>(v->size());
  Tensor host({std::max<int64_t>(ints, 1)}, DType::kI32);
  int32_t* at = host.data<int32_t>();
  for (const auto& [v, t] : index) at = std::copy(v->begin(), v->end(), at);
  const Tensor all = be.ToDevice(host);
  int64_t from = 0;
  for (const auto& [v, t] : index) {
    *t = all.Slice(from, from + static_cast<int64_t>(v->size()));
    from += static_cast<int64_t>(v->size());
  }

  // Each token once per rank it goes to; started, to land in ExpertsForwardEp.
  const auto U = static_cast<int64_t>(ds.token.size());
  Tensor xu = Rows(be, U, H);  // [U,H]
  be.PermuteRows(x.data<float>(), xu.data<float>(), token.data<int32_t>(), U, H);
  if (b.fp8()) {
    // A row on the wire: its H E4M3 codes, then its FP32 scales, one exchange for both.
    const QuantizedActivation q = be.QuantizeFp8(xu.data<float>(), U, H);
    const int64_t tiles = q.col_tiles(), W = PackedWidth(H, tiles);
    Tensor scales = Rows(be, U, tiles);  // [U, tiles]: a row's scales travel with it
    be.Transpose(q.scales.data<float>(), scales.data<float>(), tiles, U);
    Tensor packed = Rows(be, U, W, DType::kU8);  // [U, W]
    be.CopyBytes2D(q.data.raw(), H, packed.raw(), W, U, H);
    be.CopyBytes2D(scales.raw(), 4 * tiles, static_cast<std::byte*>(packed.raw()) + H, W, U,
                   4 * tiles);
    ex.moving.push_back(StartRows(*ep, packed.Slice(0, U), ds.rows, ds.at,
                                  Rows(be, dr.U, W, DType::kU8), dr.rows, dr.at,
                                  "MoE FP8 expert dispatch"));
  } else {
    ex.moving.push_back(StartRows(*ep, xu.Slice(0, U), ds.rows, ds.at, Rows(be, dr.U, H), dr.rows,
                                  dr.at, "MoE expert dispatch"));
  }
}

void DMoe::ExpertsForwardEp(const DeviceBatch& b, Saved* s) const {
  Backend& be = *b.be;
  Exchange& ex = s->ex;
  const int P = ep->size;
  const int64_t L = E_local, R = ex.R, rows = b.T() * K;  // rows: the slots routed here
  // Each received row copied to its slots (rows of bytes: FP8 codes, FP32 scales or values).
  const int32_t* expand = ex.expand.data<int32_t>();
  auto to_slots = [&](const Tensor& rows_u, DType dt) {  // [U,w] -> [R,w]
    const int64_t w = rows_u.numel() / rows_u.dim(0);
    Tensor out = Rows(be, R, w, dt);
    be.GatherRows(rows_u.raw(), out.raw(), expand, R, w * static_cast<int64_t>(DTypeSize(dt)));
    return out;
  };
  if (b.fp8()) {
    const Tensor packed_u = ex.moving[0].to;  // [U,W]: codes, then scales
    Land(&ex.moving, "MoE FP8 expert dispatch");
    const Tensor packed = to_slots(packed_u, DType::kU8);  // [R,W]
    const int64_t W = packed.dim(1), tiles = (W - H) / 4;
    Tensor codes = Rows(be, R, H, DType::kF8E4M3), recv_scales = Rows(be, R, tiles);
    be.CopyBytes2D(packed.raw(), W, codes.raw(), H, R, H);
    be.CopyBytes2D(static_cast<const std::byte*>(packed.raw()) + H, W, recv_scales.raw(), 4 * tiles,
                   R, 4 * tiles);
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
    const Tensor xu = ex.moving[0].to;  // [U,H]
    Land(&ex.moving, "MoE expert dispatch");
    ex.xr = to_slots(xu, DType::kF32);  // [R,H]
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
  const int64_t L = E_local, R = ex.R, T = b.T();
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
  // The dispatch's backward: each row received summed over its slots here (k order), back
  // to its token's rank, moving while the weight gradients run (when the batch takes them
  // at once).
  const EpDedupeSend& ds = ex.dedupe_send;
  const EpDedupeReceive& dr = ex.dedupe_receive;
  Tensor dxu = Rows(be, dr.U, H);  // [U received, H]
  be.SegmentSumRows(dxr.data<float>(), ex.sum_offsets.data<int32_t>(), ex.sum_rows.data<int32_t>(),
                    dxu.data<float>(), dr.U, H);
  const auto U = static_cast<int64_t>(ds.token.size());
  ex.moving.push_back(StartRows(*ep, dxu.Slice(0, std::max<int64_t>(dr.U, 1)), dr.rows, dr.at,
                                Rows(be, U, H), ds.rows, ds.at, "MoE dispatch backward"));
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
  const Tensor back = ex.moving[0].to;  // [U sent, H]
  Land(&ex.moving, "MoE dispatch backward");
  // Each token's rows summed over the ranks they came back from, ascending.
  Tensor dx = be.Empty({T, H});
  be.SegmentSumRows(back.data<float>(), ex.token_offsets.data<int32_t>(),
                    ex.token_rows.data<int32_t>(), dx.data<float>(), T, H);
  return dx;
}

}  // namespace MT_REAL_NS
}  // namespace mt

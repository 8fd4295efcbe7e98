// parallel/expert_dispatch.h: expert-parallel token exchange for an MoE layer (design.md
// "Parallel layout"; Megatron's MoETokenDispatcher phases, DeepEP's per-rank dedupe).
//
// The ep ranks of an EP group hold disjoint experts: global expert e lives on EP rank
// e / (E/ep) as local expert e % (E/ep). Each rank routes its own tokens (x [T, H], topk
// [T, K] global expert ids), and the dispatcher moves every token to the ranks of its
// experts and the expert outputs back:
//
//   Dispatch  x [T, H] -> per local expert e its input rows [T_e, H]
//   Combine   per local expert outputs [T_e, H] -> per (token, slot) rows [T*K, H], row
//             t*K + k = the output of expert topk[t, k] for token t, unweighted (the caller
//             applies the gate weights, as trainer/moe.cc does)
//   DispatchBackward  d(expert inputs) -> dx [T, H]           (the transpose of Dispatch)
//   CombineBackward   d(slot rows) [T*K, H] -> d(expert outputs)  (the transpose of Combine)
//
// Each direction runs as three phases; only the middle one communicates (over the EP
// Communicator), so a schedule can overlap the local phases of one micro-batch with the
// exchange of another:
//   *Preprocess   local: count rows per destination, permute them into send order
//   *Exchange     communication: all-to-all of counts (Dispatch only), then all-to-all-v
//   *Postprocess  local: place received rows (by local expert, or by token and slot)
//
// Row formats: Dispatch moves rows of any dtype and width. A caller may quantise and pack
// its tokens (FP8 expert dispatch: kernels/quantize.h's packed E4M3 rows, codes plus their
// 1x128 scales, about a quarter of the FP32 bytes) and pass the compute dtype (F32 or F64)
// of the rest of the exchange separately. Combine moves expert outputs of any one dtype
// (e.g. BF16 codes, half the FP32 bytes); both backward passes move the compute dtype.
// The dispatcher never looks inside a row, so it knows nothing of the formats.
//
// Dedupe: a token that picked several experts on one rank is sent there once, with its
// topk row, and fanned out to those experts on arrival; its dispatch-backward gradient is
// summed over those experts on that rank and sent back once. Combine (and its backward)
// moves one row per (token, slot), since the slots carry different expert outputs.
//
// Row order: expert e's input rows are ordered by source EP rank, then token index, which
// is exactly the order a single process gathering over the EP group's tokens concatenated
// in rank order produces (moe.cc's slot order), so EP runs see the same expert batches.
//
// Node-limited routing (see topology.h): expert ids are contiguous both in groups (group g =
// experts [g*E/n_group, (g+1)*E/n_group)) and in ranks, so with P EP ranks group g lives on
// ranks [g*P/n_group, (g+1)*P/n_group) when n_group divides P, and rank r holds groups
// [r*n_group/P, (r+1)*n_group/P) when P divides n_group. When the EP group spans N nodes
// (P/N ranks each, node j holding experts [j*E/N, (j+1)*E/N)), every group sits inside one
// node exactly when N divides n_group (Topology::Create requires it), so a token the router
// limits to topk_group groups reaches at most topk_group nodes. DispatchStats reports the
// most nodes any token reached, which the tests check against topk_group. DeepEP goes
// further and crosses to a node once per token, fanning out inside it over NVLink; here the
// unit of dedupe is the rank.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"
#include "parallel/communicator.h"

namespace mt {

struct DispatchStats {
  int64_t rows_sent = 0;            // distinct (token, destination rank) rows sent, self included
  int64_t rows_received = 0;        // rows received, self included
  int64_t slots = 0;                // (token, slot) pairs = rows Combine returns
  int64_t max_ranks_per_token = 0;  // most EP ranks one token was sent to
  int64_t max_nodes_per_token = 0;  // most nodes one token was sent to
  // Bytes of the dispatched rows alone (rows_sent or rows_received times the row's bytes),
  // self included; the [rows, K] topk and the counts travel beside them.
  int64_t row_bytes_sent = 0;
  int64_t row_bytes_received = 0;
};

// Routing metadata of one dispatch, written by the Dispatch phases and read by Combine and
// both backward passes of the same micro-batch. P = EP size, S = rows sent, R = rows
// received, E_l = local experts.
struct DispatchHandle {
  int64_t num_tokens = 0;         // T
  int64_t topk = 0;               // K
  DType dtype = DType::kF32;      // compute dtype (F32/F64): of both backward passes' tensors
  DType row_dtype = DType::kF32;  // of the dispatched rows: dtype, or a caller's packing
  int64_t row_width = 0;          // elements per dispatched row: H, or a caller's packing
  // This rank as a sender.
  std::vector<int64_t> send_rows;   // [P] rows (distinct tokens) sent to each rank
  std::vector<int64_t> send_token;  // [S] token of each sent row; by destination, then token
  std::vector<int32_t> send_topk;   // [S, K] the sent rows' topk (global expert ids)
  std::vector<int64_t> slot_rows;   // [P] (token, slot) pairs whose expert is on each rank
  std::vector<int64_t> slot_order;  // [T*K] slot index t*K+k of each combined row received,
                                    // by source rank, then token, then k
  // This rank as an expert host.
  std::vector<int64_t> recv_rows;                 // [P] rows received from each rank
  std::vector<int32_t> recv_topk;                 // [R, K] their topk (global expert ids)
  std::vector<int64_t> hit_rows;                  // [P] local (row, slot) hits from each rank
  std::vector<std::vector<int64_t>> expert_rows;  // [E_l][T_e] received row behind each input
  std::vector<int64_t> slot_position;  // [R, K] index into expert_rows of its local expert,
                                       // -1 when slot k's expert lives elsewhere
  DispatchStats stats;
};

class ExpertDispatcher {
 public:
  struct Options {
    int64_t num_experts = 0;    // E, global routed experts of the layer
    int64_t hidden = 0;         // H
    int64_t topk = 0;           // K, experts per token
    int ep_ranks_per_node = 0;  // EP ranks sharing a node, for the stats (0 = all of them)
  };

  // `ep` is the EP group (not owned; it must outlive the dispatcher). Errors unless E is a
  // positive multiple of the EP size and H, K are positive.
  static absl::StatusOr<ExpertDispatcher> Create(Communicator* ep, const Options& options);

  int64_t num_local_experts() const { return local_experts_; }
  int64_t first_local_expert() const { return first_local_; }
  int RankOfExpert(int64_t expert) const { return static_cast<int>(expert / local_experts_); }

  // ---- Whole passes (each = Preprocess, Exchange, Postprocess) -------------------------
  // Tensors are F32 (training) or F64 (the trainer's double build for gradient checks).
  // x [T, H], topk [T*K] global expert ids -> [E_l] tensors [T_e, H]; fills *handle.
  absl::StatusOr<std::vector<Tensor>> Dispatch(const Tensor& x, const std::vector<int32_t>& topk,
                                               DispatchHandle* handle);
  // Caller-packed rows [T, W] of any dtype (one per token, e.g. a quantised token with its
  // scales), moved unchanged -> [E_l] tensors [T_e, W] of that dtype. `dtype` (F32 or F64)
  // is the compute dtype of this dispatch's backward passes.
  absl::StatusOr<std::vector<Tensor>> Dispatch(const Tensor& rows, const std::vector<int32_t>& topk,
                                               DType dtype, DispatchHandle* handle);
  // expert_out [E_l] tensors [T_e, H], all of one dtype: the compute dtype, or a wire format
  // that is not F32/F64 (e.g. BF16 codes) -> [T*K, H] of that dtype, row t*K+k from expert
  // topk[t, k].
  absl::StatusOr<Tensor> Combine(const std::vector<Tensor>& expert_out,
                                 const DispatchHandle& handle);
  // d_expert_in [E_l] tensors [T_e, H] -> dx [T, H]. A token's gradient is summed over its
  // slots on each rank, then over ranks in rank order: the same terms as trainer/moe.cc's
  // per-expert accumulation, in another order (equal up to rounding, not bit for bit).
  absl::StatusOr<Tensor> DispatchBackward(const std::vector<Tensor>& d_expert_in,
                                          const DispatchHandle& handle);
  // d_slots [T*K, H] -> [E_l] tensors [T_e, H].
  absl::StatusOr<std::vector<Tensor>> CombineBackward(const Tensor& d_slots,
                                                      const DispatchHandle& handle);

  // ---- Dispatch phases ----------------------------------------------------------------------
  // Local. Validates, routes, fills the sender half of *handle; returns send rows [S, H].
  absl::StatusOr<Tensor> DispatchPreprocess(const Tensor& x, const std::vector<int32_t>& topk,
                                            DispatchHandle* handle) const;
  // The same for caller-packed rows [T, W] (see Dispatch): returns send rows [S, W].
  absl::StatusOr<Tensor> DispatchPreprocess(const Tensor& rows, const std::vector<int32_t>& topk,
                                            DType dtype, DispatchHandle* handle) const;
  // Communicates: all-to-all of row counts, then all-to-all-v of rows and their topk.
  // send [S, W] -> received rows [R, W]; fills recv_rows, recv_topk. (W = H unless packed.)
  absl::StatusOr<Tensor> DispatchExchange(const Tensor& send, DispatchHandle* handle);
  // Local. recv [R, W] -> [E_l] expert inputs [T_e, W]; fills the expert-host half of *handle.
  absl::StatusOr<std::vector<Tensor>> DispatchPostprocess(const Tensor& recv,
                                                          DispatchHandle* handle) const;

  // ---- Combine phases ------------------------------------------------------------------------
  // Local. expert_out -> rows to send back [sum(hit_rows), H], by source, row, k.
  absl::StatusOr<Tensor> CombinePreprocess(const std::vector<Tensor>& expert_out,
                                           const DispatchHandle& handle) const;
  // Communicates: all-to-all-v. [sum(hit_rows), H] -> [T*K, H] in slot_order.
  absl::StatusOr<Tensor> CombineExchange(const Tensor& send, const DispatchHandle& handle);
  // Local. [T*K, H] in slot_order -> [T*K, H] in slot order t*K+k.
  Tensor CombinePostprocess(const Tensor& recv, const DispatchHandle& handle) const;

  // ---- Backward phases (same pattern, transposed) -----------------------------------------
  // Local. Sums each received row's gradient over its local experts: -> [R, H].
  absl::StatusOr<Tensor> DispatchBackwardPreprocess(const std::vector<Tensor>& d_expert_in,
                                                    const DispatchHandle& handle) const;
  // Communicates: [R, H] back to the senders -> [S, H] in send order.
  absl::StatusOr<Tensor> DispatchBackwardExchange(const Tensor& send, const DispatchHandle& handle);
  // Local. [S, H] -> dx [T, H], summing each token's rows over destinations in rank order.
  Tensor DispatchBackwardPostprocess(const Tensor& recv, const DispatchHandle& handle) const;

  // Local. d_slots [T*K, H] -> [T*K, H] permuted into slot_order.
  absl::StatusOr<Tensor> CombineBackwardPreprocess(const Tensor& d_slots,
                                                   const DispatchHandle& handle) const;
  // Communicates: -> [sum(hit_rows), H], by source, row, k.
  absl::StatusOr<Tensor> CombineBackwardExchange(const Tensor& send, const DispatchHandle& handle);
  // Local. -> [E_l] tensors [T_e, H].
  std::vector<Tensor> CombineBackwardPostprocess(const Tensor& recv,
                                                 const DispatchHandle& handle) const;

 private:
  ExpertDispatcher() = default;
  // All-to-all-v of rows of width `width`: send_rows[r] rows to rank r, recv_rows[r] from r.
  absl::StatusOr<Tensor> ExchangeRows(const Tensor& send, const std::vector<int64_t>& send_rows,
                                      const std::vector<int64_t>& recv_rows, int64_t width);
  // Checks per-expert tensors against the handle's expert_rows: [T_e, H] of `dtype`.
  absl::Status CheckPerExpert(const char* what, const std::vector<Tensor>& t,
                              const DispatchHandle& handle, DType dtype) const;

  // Row copies between 2-D tensors of one dtype and width (copies the row's bytes), and
  // sums between [N, H] tensors of the compute dtype.
  void CopyRow(const Tensor& from, int64_t i, Tensor& to, int64_t j) const;
  void AddRow(const Tensor& from, int64_t i, Tensor& to, int64_t j) const;

  Communicator* ep_ = nullptr;
  Options options_;
  int64_t local_experts_ = 0;  // E / P
  int64_t first_local_ = 0;    // rank * E / P
};

}  // namespace mt

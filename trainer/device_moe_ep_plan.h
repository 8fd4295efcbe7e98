// trainer/device_moe_ep_plan.h: which rows an expert-parallel exchange of the device path
// moves (trainer/device_moe_ep.cc), worked out on the host from small integer arrays; the
// rows themselves move on the device.
//
// Two plans. EpExchangePlan is per slot (a token's choice of one expert): what the experts
// compute on and send back. EpDedupe is per (token, destination rank): the dispatch sends a
// token once to each rank that holds any of its experts, as DeepEP and the CPU path's
// dispatcher (parallel/expert_dispatch.h) do, and the receiver copies it to each of its
// experts' rows; the dispatch's backward sums each token's slots on the expert's rank and
// sends one row back, and the token's rank sums those over the ranks. Every sum runs in the
// CPU path's order (per rank the slots in k order, then the ranks ascending, each from zero:
// kernels/backend.h SegmentSumRows twice), so the bits are the CPU dispatcher's.
#pragma once

#include <cstdint>
#include <vector>

namespace mt {

// For P EP ranks of L experts each. The sender's rows are its permuted rows (by expert): rank
// r's are [send_at[r], + send_rows[r]). The receiver's are by source rank, then local
// expert, then the source's slot order: source s's are [recv_at[s], + recv_rows[s]), local
// expert j's of them [offsets[s*(L+1) + j], offsets[s*(L+1) + j+1]) relative to recv_at[s].
struct EpExchangePlan {
  std::vector<int64_t> send_rows, send_at;  // [P]
  std::vector<int64_t> recv_rows, recv_at;  // [P]
  std::vector<int32_t> offsets;             // [P, L+1]
  int64_t R = 0;                            // rows received
};
// From the routing plan's expert offsets [E+1] (E = P x L) and recv_counts [P x L], the rows
// each source sends here per local expert (the all-to-all of offsets' differences).
EpExchangePlan MakeEpExchangePlan(const std::vector<int32_t>& offsets,
                                  const std::vector<int64_t>& recv_counts, int P);

// The sender's half of the deduplicated dispatch, from topk [T,K] (experts in [0, P L)). A
// token's rows for rank r are numbered in token order within r's block; the blocks follow
// each other by rank.
struct EpDedupeSend {
  std::vector<int32_t> token;     // [U] the token of each row sent
  std::vector<int64_t> rows, at;  // [P] rows sent to each rank, where they start
  // Per destination r, what it needs to place and sum the rows, [2 x (its slots)] int32:
  // for each of its slots in the routing plan's order (by expert, then slot), the row in
  // r's block that carries the slot's token; then those slots (their positions in r's part
  // of the plan) ordered by that row, then by k.
  std::vector<int32_t> meta;                // [2 T K]
  std::vector<int64_t> meta_rows, meta_at;  // [P] ints for each rank, where they start
  // The token's rank sums the rows sent back: token t's rows are
  // token_rows[token_offsets[t] .. token_offsets[t+1]), its ranks ascending.
  std::vector<int32_t> token_offsets;  // [T+1]
  std::vector<int32_t> token_rows;     // [U]
};
// `offsets` [E+1] are the routing plan's expert offsets (MoePlanBuild's), over P ranks.
EpDedupeSend MakeEpDedupeSend(const std::vector<int32_t>& topk, int64_t K,
                              const std::vector<int32_t>& offsets, int P);

// The receiver's half: from the rows each source sends (unique_rows [P], EpDedupeSend::rows
// of each) and the meta they send (laid out by EpExchangePlan::recv_at, twice as wide).
struct EpDedupeReceive {
  std::vector<int64_t> rows, at;     // [P] rows received from each source, where they start
  int64_t U = 0;                     // rows received
  std::vector<int32_t> expand;       // [R] per slot row (EpExchangePlan's order): its row
  std::vector<int32_t> sum_offsets;  // [U+1] per row received, its slot rows
  std::vector<int32_t> sum_rows;     // [R]   sum_rows[sum_offsets[u]..], k ascending
};
EpDedupeReceive MakeEpDedupeReceive(const EpExchangePlan& slots,
                                    const std::vector<int64_t>& unique_rows,
                                    const std::vector<int32_t>& meta);

}  // namespace mt

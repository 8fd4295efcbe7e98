// tests/parallel/expert_dispatch_checks.h: checks of the expert dispatcher that run on any
// EP group, a LocalCommunicator (expert_dispatch_test) or MPI ranks
// (expert_dispatch_mpi_test). Every rank regenerates every rank's tokens from the seed, so
// each can compute the single-process reference by itself.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "parallel/expert_dispatch.h"

namespace mt::dispatch_checks {

struct RoutingCase {
  int64_t hidden = 5;
  int64_t num_experts = 8;
  int64_t topk = 3;
  int64_t n_group = 1;  // > 1: each token picks topk experts inside topk_group groups
  int64_t topk_group = 1;
  int ep_ranks_per_node = 0;
  uint64_t seed = 1;
  // Tokens on EP rank r: base_tokens + 3 r, except that empty_rank (if >= 0) has none.
  int64_t base_tokens = 7;
  int empty_rank = -1;
};

struct RankTokens {
  Tensor x;                   // [T, H]
  std::vector<int32_t> topk;  // [T, K] distinct global expert ids per token
};

inline int64_t NumTokens(const RoutingCase& c, int rank) {
  return rank == c.empty_rank ? 0 : c.base_tokens + 3 * rank;
}

// Rank `rank`'s tokens: a pure function of (case, rank).
inline RankTokens MakeTokens(const RoutingCase& c, int rank) {
  std::mt19937_64 rng(c.seed * 1000003 + rank);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  const int64_t T = NumTokens(c, rank), H = c.hidden, K = c.topk, E = c.num_experts;
  RankTokens r{Tensor({T, H}), std::vector<int32_t>(T * K)};
  for (int64_t i = 0; i < T * H; ++i) r.x.data<float>()[i] = value(rng);
  const int64_t per_group = E / c.n_group;
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> groups(c.n_group);
    std::iota(groups.begin(), groups.end(), 0);
    std::shuffle(groups.begin(), groups.end(), rng);
    std::vector<int32_t> candidates;
    for (int64_t g = 0; g < (c.n_group > 1 ? c.topk_group : 1); ++g)
      for (int64_t e = 0; e < per_group; ++e) candidates.push_back(groups[g] * per_group + e);
    std::shuffle(candidates.begin(), candidates.end(), rng);
    for (int64_t k = 0; k < K; ++k) r.topk[t * K + k] = candidates[k];
  }
  return r;
}

inline ExpertDispatcher MakeDispatcher(Communicator& ep, const RoutingCase& c) {
  absl::StatusOr<ExpertDispatcher> d =
      ExpertDispatcher::Create(&ep, {.num_experts = c.num_experts,
                                     .hidden = c.hidden,
                                     .topk = c.topk,
                                     .ep_ranks_per_node = c.ep_ranks_per_node});
  MT_CHECK(d.ok(), d.status().ToString());
  return *std::move(d);
}

// The expert function of the round-trip check: exact in float, different per expert.
inline float ExpertFn(int64_t expert, float v) {
  return v * static_cast<float>(expert + 1) + 0.5f * expert;
}

inline double Dot(const float* a, const float* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

inline double AllSum(Communicator& c, double v) {
  MT_CHECK(c.AllReduce(OutBuffer::Of(&v, 1), ReduceOp::kSum).ok(), "AllReduce");
  return v;
}

// Dispatched rows equal the single-process gather over all ranks' tokens, bit for bit, and
// Combine of per-expert functions returns each slot's expert output exactly.
inline void CheckDispatchAndCombine(Communicator& ep, const RoutingCase& c) {
  ExpertDispatcher d = MakeDispatcher(ep, c);
  const int64_t H = c.hidden, K = c.topk;
  RankTokens mine = MakeTokens(c, ep.rank());
  DispatchHandle h;
  absl::StatusOr<std::vector<Tensor>> in = d.Dispatch(mine.x, mine.topk, &h);
  ASSERT_TRUE(in.ok()) << in.status();
  ASSERT_EQ(static_cast<int64_t>(in->size()), d.num_local_experts());

  std::vector<RankTokens> all;
  for (int r = 0; r < ep.size(); ++r) all.push_back(MakeTokens(c, r));
  for (int64_t le = 0; le < d.num_local_experts(); ++le) {
    const int64_t e = d.first_local_expert() + le;
    std::vector<float> want;
    for (const RankTokens& src : all)
      for (int64_t t = 0; t < src.x.dim(0); ++t)
        for (int64_t k = 0; k < K; ++k)
          if (src.topk[t * K + k] == e)
            want.insert(want.end(), src.x.data<float>() + t * H, src.x.data<float>() + (t + 1) * H);
    const Tensor& got = (*in)[le];
    ASSERT_EQ(got.dim(0) * H, static_cast<int64_t>(want.size())) << "expert " << e;
    ASSERT_EQ(got.dim(1), H);
    ASSERT_EQ(std::memcmp(got.data<float>(), want.data(), want.size() * sizeof(float)), 0)
        << "expert " << e << " rows differ from the single-process gather";
  }

  std::vector<Tensor> out;
  for (int64_t le = 0; le < d.num_local_experts(); ++le) {
    Tensor y = (*in)[le].Clone();
    for (int64_t i = 0; i < y.numel(); ++i)
      y.data<float>()[i] = ExpertFn(d.first_local_expert() + le, y.data<float>()[i]);
    out.push_back(y);
  }
  absl::StatusOr<Tensor> slots = d.Combine(out, h);
  ASSERT_TRUE(slots.ok()) << slots.status();
  ASSERT_EQ(slots->dim(0), mine.x.dim(0) * K);
  for (int64_t t = 0; t < mine.x.dim(0); ++t)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < H; ++j)
        ASSERT_EQ(slots->data<float>()[(t * K + k) * H + j],
                  ExpertFn(mine.topk[t * K + k], mine.x.data<float>()[t * H + j]))
            << "token " << t << " slot " << k;

  // Stats: every slot counted, and the rows sent match the distinct destinations.
  EXPECT_EQ(h.stats.slots, mine.x.dim(0) * K);
  int64_t distinct = 0;
  for (int64_t t = 0; t < mine.x.dim(0); ++t) {
    std::vector<int> dests;
    for (int64_t k = 0; k < K; ++k) dests.push_back(d.RankOfExpert(mine.topk[t * K + k]));
    std::sort(dests.begin(), dests.end());
    distinct += std::unique(dests.begin(), dests.end()) - dests.begin();
  }
  EXPECT_EQ(h.stats.rows_sent, distinct);
  EXPECT_EQ(static_cast<int64_t>(AllSum(ep, h.stats.rows_sent)),
            static_cast<int64_t>(AllSum(ep, h.stats.rows_received)));
}

// Backward passes are the transposes: <A x, y> == <x, A^T y> summed over the EP group, for
// A = Dispatch and A = Combine.
inline void CheckBackwardIsTranspose(Communicator& ep, const RoutingCase& c) {
  ExpertDispatcher d = MakeDispatcher(ep, c);
  const int64_t H = c.hidden, K = c.topk;
  RankTokens mine = MakeTokens(c, ep.rank());
  const int64_t T = mine.x.dim(0);
  DispatchHandle h;
  absl::StatusOr<std::vector<Tensor>> in = d.Dispatch(mine.x, mine.topk, &h);
  ASSERT_TRUE(in.ok()) << in.status();

  std::mt19937_64 rng(c.seed * 7919 + ep.rank());
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  auto random_like = [&](const Tensor& t) {
    Tensor r(t.shape());
    for (int64_t i = 0; i < r.numel(); ++i) r.data<float>()[i] = value(rng);
    return r;
  };
  std::vector<Tensor> y;  // per local expert, like the dispatched inputs
  for (const Tensor& t : *in) y.push_back(random_like(t));
  absl::StatusOr<Tensor> dx = d.DispatchBackward(y, h);
  ASSERT_TRUE(dx.ok()) << dx.status();
  ASSERT_EQ(dx->shape(), mine.x.shape());
  double lhs = 0, rhs = Dot(mine.x.data<float>(), dx->data<float>(), T * H);
  for (size_t e = 0; e < y.size(); ++e)
    lhs += Dot((*in)[e].data<float>(), y[e].data<float>(), y[e].numel());
  lhs = AllSum(ep, lhs);
  rhs = AllSum(ep, rhs);
  EXPECT_NEAR(lhs, rhs, 1e-5 * std::max(1.0, std::abs(lhs))) << "dispatch";

  std::vector<Tensor> z;  // expert outputs
  for (const Tensor& t : *in) z.push_back(random_like(t));
  Tensor w = random_like(Tensor({T * K, H}));
  absl::StatusOr<Tensor> cz = d.Combine(z, h);
  absl::StatusOr<std::vector<Tensor>> ctw = d.CombineBackward(w, h);
  ASSERT_TRUE(cz.ok()) << cz.status();
  ASSERT_TRUE(ctw.ok()) << ctw.status();
  double lhs2 = AllSum(ep, Dot(cz->data<float>(), w.data<float>(), T * K * H)), rhs2 = 0;
  for (size_t e = 0; e < z.size(); ++e)
    rhs2 += Dot(z[e].data<float>(), (*ctw)[e].data<float>(), z[e].numel());
  rhs2 = AllSum(ep, rhs2);
  EXPECT_NEAR(lhs2, rhs2, 1e-12 * std::max(1.0, std::abs(lhs2))) << "combine";
}

// With expert groups mapped onto nodes, no token reaches more than topk_group nodes, and
// the stats count nodes and ranks as the routing implies.
inline void CheckNodeLimitedRouting(Communicator& ep, const RoutingCase& c) {
  ExpertDispatcher d = MakeDispatcher(ep, c);
  RankTokens mine = MakeTokens(c, ep.rank());
  DispatchHandle h;
  ASSERT_TRUE(d.Dispatch(mine.x, mine.topk, &h).ok());
  const int rpn = c.ep_ranks_per_node > 0 ? c.ep_ranks_per_node : ep.size();
  int64_t most_nodes = 0, most_ranks = 0;
  for (int64_t t = 0; t < mine.x.dim(0); ++t) {
    std::vector<int> ranks, nodes;
    for (int64_t k = 0; k < c.topk; ++k) {
      ranks.push_back(d.RankOfExpert(mine.topk[t * c.topk + k]));
      nodes.push_back(ranks.back() / rpn);
    }
    std::sort(ranks.begin(), ranks.end());
    std::sort(nodes.begin(), nodes.end());
    most_ranks =
        std::max<int64_t>(most_ranks, std::unique(ranks.begin(), ranks.end()) - ranks.begin());
    most_nodes =
        std::max<int64_t>(most_nodes, std::unique(nodes.begin(), nodes.end()) - nodes.begin());
  }
  EXPECT_EQ(h.stats.max_nodes_per_token, most_nodes);
  EXPECT_EQ(h.stats.max_ranks_per_token, most_ranks);
  EXPECT_LE(h.stats.max_nodes_per_token, c.topk_group);
}

// The double build of the trainer (gradient checks) dispatches F64: rows equal the F32
// dispatch's rows widened, Combine returns them unchanged, and DispatchBackward of the
// dispatched rows gives each token times its number of slots (exact in double).
inline void CheckDoubleMatchesFloat(Communicator& ep, const RoutingCase& c) {
  ExpertDispatcher d = MakeDispatcher(ep, c);
  const int64_t H = c.hidden, K = c.topk;
  RankTokens mine = MakeTokens(c, ep.rank());
  const Tensor x64 = mine.x.To(DType::kF64);
  DispatchHandle h32, h64;
  absl::StatusOr<std::vector<Tensor>> in32 = d.Dispatch(mine.x, mine.topk, &h32);
  absl::StatusOr<std::vector<Tensor>> in64 = d.Dispatch(x64, mine.topk, &h64);
  ASSERT_TRUE(in32.ok() && in64.ok()) << in64.status();
  for (size_t e = 0; e < in64->size(); ++e) {
    ASSERT_EQ((*in64)[e].dtype(), DType::kF64);
    const Tensor widened = (*in32)[e].To(DType::kF64);
    ASSERT_EQ(std::memcmp(widened.data<double>(), (*in64)[e].data<double>(), widened.nbytes()), 0);
  }
  absl::StatusOr<Tensor> slots = d.Combine(*in64, h64);
  absl::StatusOr<Tensor> dx = d.DispatchBackward(*in64, h64);
  ASSERT_TRUE(slots.ok() && dx.ok()) << dx.status();
  ASSERT_EQ(dx->dtype(), DType::kF64);
  for (int64_t t = 0; t < mine.x.dim(0); ++t)
    for (int64_t j = 0; j < H; ++j) {
      const double v = x64.data<double>()[t * H + j];
      for (int64_t k = 0; k < K; ++k) ASSERT_EQ(slots->data<double>()[(t * K + k) * H + j], v);
      ASSERT_EQ(dx->data<double>()[t * H + j], static_cast<double>(K) * v) << "token " << t;
    }
  // Tensors of the other precision are refused.
  EXPECT_FALSE(d.Combine(*in32, h64).ok());
}

}  // namespace mt::dispatch_checks

// tests/parallel/zero1_mpi_test.cc: ZeRO-1 under `mpirun -np 4` with dp 4 and ep 2: dense
// gradients averaged over DP, expert gradients over their expert-DP replicas only, sharded
// updates all-gathered, and the global norm equal to the single-process norm.
#include <cmath>
#include <optional>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "parallel/zero1.h"
#include "tests/parallel/mpi_test_util.h"

namespace mt {
namespace {

constexpr int kDp = 4, kEp = 2;

// Rank r's full gradient buffer for `layout`. Multiples of 1/8 below 2^10 sum exactly in
// float in any order, so the reduced values can be compared bit for bit.
Tensor Gradients(const FlatLayout& layout, int rank, int salt) {
  Tensor g({layout.padded()});
  for (int64_t i = 0; i < layout.total(); ++i)
    g.data<float>()[i] = static_cast<float>((rank * 31 + i * 7 + salt * 5) % 13 - 6) / 8.0f;
  return g;
}

class Zero1MpiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (mpi_test::Env().world_size != kDp) GTEST_SKIP() << "run under mpirun -np 4";
    LayoutSpec spec;
    spec.dp = kDp;
    spec.ep = kEp;
    absl::StatusOr<Topology> topo = mpi_test::MakeTopology(spec);
    ASSERT_TRUE(topo.ok()) << topo.status();
    topo_ = *topo;
    absl::StatusOr<ProcessGroups> g = mpi_test::MakeGroups(spec);
    ASSERT_TRUE(g.ok()) << g.status();
    groups_ = std::move(*g);
    absl::StatusOr<FlatLayout> dense = FlatLayout::Make({5, 17, 3, 30}, kDp);
    absl::StatusOr<FlatLayout> expert = FlatLayout::Make({12, 7}, kDp / kEp);
    ASSERT_TRUE(dense.ok() && expert.ok());
    dense_ = *dense;
    expert_ = *expert;
  }

  std::optional<Topology> topo_;
  ProcessGroups groups_;
  std::optional<FlatLayout> dense_, expert_;
};

TEST_F(Zero1MpiTest, ReduceScatterThenAllGatherGivesTheAverageEverywhere) {
  const int me = topo_->rank();
  Tensor shard({dense_->shard_size()}), full({dense_->padded()});
  ASSERT_TRUE(
      ReduceScatterGradients(*groups_.dp, *dense_, Gradients(*dense_, me, 0), &shard, 1.0f / kDp)
          .ok());
  ASSERT_TRUE(AllGatherParameters(*groups_.dp, *dense_, shard, &full).ok());
  for (int64_t i = 0; i < dense_->padded(); ++i) {
    float sum = 0;
    for (int r : topo_->DpGroup(me)) sum += Gradients(*dense_, r, 0).data<float>()[i];
    ASSERT_EQ(full.data<float>()[i], sum / kDp) << "element " << i;
  }
}

// Expert gradients: reduced over the expert-DP group only, scaled by 1/dp (zero1.h).
TEST_F(Zero1MpiTest, ExpertGradientsReduceOnlyOverTheirReplicas) {
  const int me = topo_->rank();
  ASSERT_EQ(groups_.expert_dp->size(), kDp / kEp);
  Tensor shard({expert_->shard_size()}), full({expert_->padded()});
  ASSERT_TRUE(ReduceScatterGradients(*groups_.expert_dp, *expert_, Gradients(*expert_, me, 1),
                                     &shard, 1.0f / kDp)
                  .ok());
  ASSERT_TRUE(AllGatherParameters(*groups_.expert_dp, *expert_, shard, &full).ok());
  const std::vector<int> replicas = topo_->ExpertDpGroup(me);
  ASSERT_EQ(replicas, (std::vector<int>{me % 2, me % 2 + 2}));
  for (int64_t i = 0; i < expert_->total(); ++i) {
    float sum = 0;
    for (int r : replicas) sum += Gradients(*expert_, r, 1).data<float>()[i];
    ASSERT_EQ(full.data<float>()[i], sum / kDp) << "element " << i;
  }
}

// A sharded SGD step then all-gather equals the step a single process takes on the
// averaged gradient; the global norm over dense + expert shards equals the norm of the
// single-process gradient (dense once, each EP rank's experts once).
TEST_F(Zero1MpiTest, ShardedUpdateAndGlobalNormEqualOneProcess) {
  const int me = topo_->rank();
  std::mt19937 rng(17);
  std::uniform_real_distribution<float> u(-1, 1);
  Tensor params({dense_->padded()});
  for (int64_t i = 0; i < dense_->total(); ++i) params.data<float>()[i] = u(rng);

  // Random (inexact) gradients this time: the comparisons use tolerances.
  auto random_grads = [](const FlatLayout& l, int rank, int salt) {
    std::mt19937 g(1000 * salt + rank);
    std::uniform_real_distribution<float> v(-1, 1);
    Tensor t({l.padded()});
    for (int64_t i = 0; i < l.total(); ++i) t.data<float>()[i] = v(g);
    return t;
  };
  Tensor dshard({dense_->shard_size()}), eshard({expert_->shard_size()});
  ASSERT_TRUE(ReduceScatterGradients(*groups_.dp, *dense_, random_grads(*dense_, me, 2), &dshard,
                                     1.0f / kDp)
                  .ok());
  ASSERT_TRUE(ReduceScatterGradients(*groups_.expert_dp, *expert_, random_grads(*expert_, me, 3),
                                     &eshard, 1.0f / kDp)
                  .ok());

  const float lr = 0.1f;
  Tensor my_params({dense_->shard_size()});
  for (int64_t i = 0; i < dense_->shard_size(); ++i)
    my_params.data<float>()[i] = params.data<float>()[dense_->shard_begin(groups_.dp->rank()) + i] -
                                 lr * dshard.data<float>()[i];
  Tensor updated({dense_->padded()});
  ASSERT_TRUE(AllGatherParameters(*groups_.dp, *dense_, my_params, &updated).ok());

  // The single-process reference, computed on every rank in double.
  std::vector<double> avg(dense_->total(), 0.0);
  for (int r = 0; r < kDp; ++r) {
    Tensor g = random_grads(*dense_, r, 2);
    for (int64_t i = 0; i < dense_->total(); ++i) avg[i] += g.data<float>()[i] / double(kDp);
  }
  double sq = 0;
  for (int64_t i = 0; i < dense_->total(); ++i) {
    sq += avg[i] * avg[i];
    ASSERT_NEAR(updated.data<float>()[i], params.data<float>()[i] - lr * avg[i], 1e-6)
        << "element " << i;
  }
  for (int ep_rank = 0; ep_rank < kEp; ++ep_rank) {
    std::vector<double> e(expert_->total(), 0.0);
    for (int r = ep_rank; r < kDp; r += kEp) {
      Tensor g = random_grads(*expert_, r, 3);
      for (int64_t i = 0; i < expert_->total(); ++i) e[i] += g.data<float>()[i] / double(kDp);
    }
    for (double v : e) sq += v * v;
  }
  absl::StatusOr<double> norm = GlobalNorm(*groups_.world, {dshard, eshard});
  ASSERT_TRUE(norm.ok()) << norm.status();
  EXPECT_NEAR(*norm, std::sqrt(sq), 1e-6 * std::sqrt(sq));
  // Identical on every rank, bit for bit.
  double mine = *norm, lo = mine, hi = mine;
  ASSERT_TRUE(groups_.world->AllReduce(OutBuffer::Of(&lo, 1), ReduceOp::kMin).ok());
  ASSERT_TRUE(groups_.world->AllReduce(OutBuffer::Of(&hi, 1), ReduceOp::kMax).ok());
  EXPECT_EQ(lo, hi);
}

}  // namespace
}  // namespace mt

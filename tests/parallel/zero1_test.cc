// tests/parallel/zero1_test.cc: the ZeRO-1 flat layout (deterministic, padded, partitioned)
// and its collectives over a single process.
#include "parallel/zero1.h"

#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace mt {
namespace {

TEST(FlatLayoutTest, OffsetsPaddingAndShards) {
  absl::StatusOr<FlatLayout> l = FlatLayout::Make({5, 17, 0, 3, 30}, 4, 4);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->total(), 55);
  EXPECT_EQ(l->offset(0), 0);
  EXPECT_EQ(l->offset(1), 5);
  EXPECT_EQ(l->offset(3), 22);
  EXPECT_EQ(l->offset(4), 25);
  EXPECT_EQ(l->shard_size(), 16);  // ceil(55 / 4) = 14, rounded up to a multiple of 4
  EXPECT_EQ(l->padded(), 64);
  const std::vector<ShardPiece> p1 = l->Pieces(1);  // elements [16, 32)
  ASSERT_EQ(p1.size(), 3u);
  EXPECT_EQ(p1[0].param, 1);
  EXPECT_EQ(p1[0].param_offset, 11);
  EXPECT_EQ(p1[0].shard_offset, 0);
  EXPECT_EQ(p1[0].length, 6);
  EXPECT_EQ(p1[1].param, 3);
  EXPECT_EQ(p1[1].length, 3);
  EXPECT_EQ(p1[2].param, 4);
  EXPECT_EQ(p1[2].param_offset, 0);
  EXPECT_EQ(p1[2].shard_offset, 9);
  EXPECT_EQ(p1[2].length, 7);
  EXPECT_TRUE(l->Pieces(3).back().param == 4);  // [48, 64): the last 7 elements then padding
  EXPECT_EQ(l->Pieces(3).back().length, 7);
}

// Over many shapes, the pieces of all shards cover every element of every parameter
// exactly once, and in flat order.
TEST(FlatLayoutTest, PiecesPartitionEveryParameter) {
  for (int group = 1; group <= 7; ++group)
    for (int64_t align : {1, 3, 16})
      for (int variant = 0; variant < 6; ++variant) {
        std::vector<int64_t> sizes;
        for (int i = 0; i < 2 + variant; ++i) sizes.push_back((i * 37 + variant * 11) % 23);
        absl::StatusOr<FlatLayout> l = FlatLayout::Make(sizes, group, align);
        ASSERT_TRUE(l.ok()) << l.status();
        ASSERT_EQ(l->shard_size() % align, 0);
        ASSERT_GE(l->padded(), l->total());
        ASSERT_LT(l->padded() - l->total(), static_cast<int64_t>(group) * align + group);
        std::vector<std::vector<int>> covered(sizes.size());
        for (size_t p = 0; p < sizes.size(); ++p) covered[p].assign(sizes[p], 0);
        for (int r = 0; r < group; ++r) {
          int64_t last_shard_end = 0;
          for (const ShardPiece& piece : l->Pieces(r)) {
            ASSERT_GE(piece.shard_offset, last_shard_end);
            last_shard_end = piece.shard_offset + piece.length;
            ASSERT_LE(last_shard_end, l->shard_size());
            ASSERT_EQ(l->shard_begin(r) + piece.shard_offset,
                      l->offset(piece.param) + piece.param_offset);
            for (int64_t i = 0; i < piece.length; ++i)
              ++covered[piece.param][piece.param_offset + i];
          }
        }
        for (size_t p = 0; p < sizes.size(); ++p)
          for (int c : covered[p]) ASSERT_EQ(c, 1) << "group " << group << " param " << p;
      }
}

TEST(FlatLayoutTest, BadInputs) {
  EXPECT_FALSE(FlatLayout::Make({3, -1}, 2).ok());
  EXPECT_FALSE(FlatLayout::Make({3}, 0).ok());
  EXPECT_FALSE(FlatLayout::Make({3}, 2, 0).ok());
}

TEST(Zero1Test, FlattenRoundTripsAndZeroesPadding) {
  absl::StatusOr<FlatLayout> l = FlatLayout::Make({3, 4}, 2, 4);
  ASSERT_TRUE(l.ok());
  std::vector<Tensor> params = {Tensor({3}), Tensor({2, 2})};
  for (int i = 0; i < 3; ++i) params[0].data<float>()[i] = i + 1;
  for (int i = 0; i < 4; ++i) params[1].data<float>()[i] = 10 + i;
  Tensor flat({l->padded()});
  for (int64_t i = 0; i < l->padded(); ++i) flat.data<float>()[i] = -1;
  ASSERT_TRUE(Flatten(*l, params, &flat).ok());
  const std::vector<float> want = {1, 2, 3, 10, 11, 12, 13, 0};
  for (int64_t i = 0; i < l->padded(); ++i) EXPECT_EQ(flat.data<float>()[i], want[i]);
  std::vector<Tensor> back = {Tensor({3}), Tensor({4})};
  ASSERT_TRUE(Unflatten(*l, flat, &back).ok());
  EXPECT_EQ(back[1].data<float>()[3], 13);
  std::vector<Tensor> wrong = {Tensor({3}), Tensor({5})};
  EXPECT_FALSE(Flatten(*l, wrong, &flat).ok());
}

TEST(Zero1Test, SingleProcessCollectivesAndNorm) {
  LocalCommunicator c;
  absl::StatusOr<FlatLayout> l = FlatLayout::Make({6}, 1, 4);
  ASSERT_TRUE(l.ok());
  Tensor grads({l->padded()}), shard({l->shard_size()}), params({l->padded()});
  for (int i = 0; i < 6; ++i) grads.data<float>()[i] = i - 2.5f;
  ASSERT_TRUE(ReduceScatterGradients(c, *l, grads, &shard, 0.5f).ok());
  EXPECT_EQ(shard.data<float>()[5], 1.25f);
  ASSERT_TRUE(AllGatherParameters(c, *l, shard, &params).ok());
  EXPECT_EQ(params.data<float>()[0], -1.25f);
  absl::StatusOr<double> norm = GlobalNorm(c, {grads, shard});
  ASSERT_TRUE(norm.ok());
  double want = 0;
  for (int i = 0; i < 6; ++i) want += 1.25 * (i - 2.5) * (i - 2.5);
  EXPECT_DOUBLE_EQ(*norm, std::sqrt(want));
  // A layout for another group size is refused.
  absl::StatusOr<FlatLayout> l2 = FlatLayout::Make({6}, 2, 4);
  ASSERT_TRUE(l2.ok());
  Tensor g2({l2->padded()}), s2({l2->shard_size()});
  EXPECT_FALSE(ReduceScatterGradients(c, *l2, g2, &s2, 1).ok());
}

TEST(Zero1Test, DoubleBuffersAndMixedPrecisionRefused) {
  LocalCommunicator c;
  absl::StatusOr<FlatLayout> l = FlatLayout::Make({2, 3}, 1, 2);
  ASSERT_TRUE(l.ok());
  std::vector<Tensor> params = {Tensor({2}, DType::kF64), Tensor({3}, DType::kF64)};
  params[1].data<double>()[2] = 1.0 / 3.0;
  Tensor flat({l->padded()}, DType::kF64), shard({l->shard_size()}, DType::kF64);
  ASSERT_TRUE(Flatten(*l, params, &flat).ok());
  ASSERT_TRUE(ReduceScatterGradients(c, *l, flat, &shard, 3.0).ok());
  EXPECT_EQ(shard.data<double>()[4], 1.0);  // (1/3) * 3 in double
  absl::StatusOr<double> norm = GlobalNorm(c, {shard});
  ASSERT_TRUE(norm.ok());
  EXPECT_EQ(*norm, 1.0);
  Tensor shard32({l->shard_size()});
  absl::Status st = ReduceScatterGradients(c, *l, flat, &shard32, 1.0);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(st.message()).find("shard is F32 [6], expected F64 with 6 elements"),
            std::string::npos)
      << st.message();
  std::vector<Tensor> mixed = {Tensor({2}), Tensor({3}, DType::kF64)};
  EXPECT_FALSE(Flatten(*l, mixed, &flat).ok());
}

}  // namespace
}  // namespace mt

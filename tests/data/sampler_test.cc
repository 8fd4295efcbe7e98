// tests/data/sampler_test.cc: windows, epoch permutations, DP sharding, resume, blending.
#include "data/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/data/test_util.h"

namespace mt::data {
namespace {

using testing::TempDir;

// A dataset whose token at global offset t is (t + base) % 60000, split into documents of
// varying length, so a window's first token tells where it starts.
std::shared_ptr<const IndexedDataset> MakeDataset(const std::string& prefix, int64_t num_tokens,
                                                  int32_t base = 0) {
  auto writer = IndexedDatasetWriter::Create(prefix, TokenDType::kUInt16);
  EXPECT_TRUE(writer.ok());
  int64_t t = 0;
  for (int64_t len = 1; t < num_tokens; len = len % 97 + 5) {
    std::vector<int32_t> doc;
    for (int64_t k = 0; k < len && t < num_tokens; ++k, ++t) {
      doc.push_back(static_cast<int32_t>((t + base) % 60000));
    }
    EXPECT_TRUE((*writer)->AddDocument(doc).ok());
  }
  EXPECT_TRUE((*writer)->Finalize().ok());
  auto ds = IndexedDataset::Open(prefix);
  EXPECT_TRUE(ds.ok()) << ds.status();
  return std::shared_ptr<const IndexedDataset>(std::move(*ds));
}

std::unique_ptr<TrainSampleSource> MakeSource(std::vector<BlendSource> sources, int64_t seq_len,
                                              uint64_t seed) {
  auto src = TrainSampleSource::Create(std::move(sources), seq_len, seed);
  EXPECT_TRUE(src.ok()) << src.status();
  return std::move(*src);
}

TEST(WindowPermutation, IsAPermutation) {
  for (int64_t n : {1, 2, 3, 4, 5, 16, 17, 100, 1000, 4097, 65536}) {
    const WindowPermutation perm(n, 0x1234 + n);
    std::vector<char> seen(n, 0);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t j = perm(i);
      ASSERT_GE(j, 0);
      ASSERT_LT(j, n);
      ASSERT_FALSE(seen[j]) << "n=" << n << ": " << j << " hit twice";
      seen[j] = 1;
    }
  }
}

TEST(WindowPermutation, KeysGiveDifferentShuffles) {
  const WindowPermutation a(1000, 1), b(1000, 2);
  int same = 0, fixed = 0;
  for (int64_t i = 0; i < 1000; ++i) {
    same += a(i) == b(i);
    fixed += a(i) == i;
  }
  EXPECT_LT(same, 20);   // ~1 expected for independent shuffles
  EXPECT_LT(fixed, 20);  // and it is not the identity
}

TEST(TrainSampleSource, WindowsAreSeqLenPlusOneAtStrideSeqLen) {
  TempDir dir;
  auto ds = MakeDataset(dir / "d", 1001);
  auto src = MakeSource({{ds, 1.0}}, 10, 7);
  EXPECT_EQ(src->num_windows(0), 100);  // (1001 - 1) / 10
  std::vector<int32_t> out(11);
  for (int64_t i = 0; i < 100; ++i) {
    src->Sample(i, out.data());
    const SampleOrigin o = src->Locate(i);
    for (int k = 0; k <= 10; ++k) ASSERT_EQ(out[k], o.window * 10 + k);
  }
}

TEST(TrainSampleSource, EachEpochVisitsEveryWindowOnceInANewOrder) {
  TempDir dir;
  auto ds = MakeDataset(dir / "d", 5000);
  auto src = MakeSource({{ds, 1.0}}, 16, 42);
  const int64_t nw = src->num_windows(0);
  std::vector<std::vector<int64_t>> orders(3);
  for (int64_t e = 0; e < 3; ++e) {
    for (int64_t i = 0; i < nw; ++i) {
      const SampleOrigin o = src->Locate(e * nw + i);
      EXPECT_EQ(o.epoch, e);
      orders[e].push_back(o.window);
    }
    std::vector<int64_t> sorted = orders[e];
    std::sort(sorted.begin(), sorted.end());
    std::vector<int64_t> all(nw);
    std::iota(all.begin(), all.end(), 0);
    EXPECT_EQ(sorted, all) << "epoch " << e;
  }
  EXPECT_NE(orders[0], orders[1]);
  EXPECT_NE(orders[1], orders[2]);
}

TEST(TrainSampleSource, OrderDependsOnSeedOnly) {
  TempDir dir;
  auto ds = MakeDataset(dir / "d", 3000);
  auto a = MakeSource({{ds, 1.0}}, 8, 1), b = MakeSource({{ds, 1.0}}, 8, 1);
  auto c = MakeSource({{ds, 1.0}}, 8, 2);
  // b is queried backwards: call order must not matter.
  std::vector<int64_t> wa, wb, wc;
  for (int64_t i = 0; i < 500; ++i) wa.push_back(a->Locate(i).window);
  for (int64_t i = 499; i >= 0; --i) wb.insert(wb.begin(), b->Locate(i).window);
  for (int64_t i = 0; i < 500; ++i) wc.push_back(c->Locate(i).window);
  EXPECT_EQ(wa, wb);
  EXPECT_NE(wa, wc);
}

// The samples of `steps` optimizer steps as DP ranks see them, concatenated in rank order,
// each rank fetching its samples on its own thread.
std::vector<int32_t> GlobalBatches(const TrainSampleSource& src, int dp, int64_t global_batch,
                                   int64_t start_cursor, int steps) {
  auto plan = BatchPlan::Make(global_batch, dp);
  EXPECT_TRUE(plan.ok());
  const int64_t width = src.seq_len() + 1;
  std::vector<int32_t> out;
  int64_t cursor = start_cursor;
  for (int s = 0; s < steps; ++s) {
    std::vector<std::vector<int32_t>> per_rank(dp);
    std::vector<std::thread> threads;
    for (int r = 0; r < dp; ++r) {
      threads.emplace_back([&, r] {
        const SampleRange range = plan->RankRange(cursor, r);
        per_rank[r].resize(range.size() * width);
        for (int64_t i = range.begin; i < range.end; ++i) {
          src.Sample(i, per_rank[r].data() + (i - range.begin) * width);
        }
      });
    }
    for (auto& t : threads) t.join();
    for (const auto& v : per_rank) out.insert(out.end(), v.begin(), v.end());
    cursor = plan->NextCursor(cursor);
  }
  return out;
}

TEST(TrainSampleSource, SameGlobalBatchesForDp1Dp2Dp4) {
  TempDir dir;
  auto a = MakeDataset(dir / "a", 4000), b = MakeDataset(dir / "b", 2500, 30000);
  auto src = MakeSource({{a, 2.0}, {b, 1.0}}, 12, 99);
  const std::vector<int32_t> dp1 = GlobalBatches(*src, 1, 8, 0, 60);
  EXPECT_EQ(GlobalBatches(*src, 2, 8, 0, 60), dp1);
  EXPECT_EQ(GlobalBatches(*src, 4, 8, 0, 60), dp1);
  // A fresh source (empty blending memo) agrees too.
  auto fresh = MakeSource({{a, 2.0}, {b, 1.0}}, 12, 99);
  EXPECT_EQ(GlobalBatches(*fresh, 4, 8, 0, 60), dp1);
}

TEST(BatchPlan, ShardsTheGlobalBatchContiguously) {
  auto plan = BatchPlan::Make(12, 4);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->RankRange(24, 0).begin, 24);
  EXPECT_EQ(plan->RankRange(24, 2).begin, 30);
  EXPECT_EQ(plan->RankRange(24, 3).end, 36);
  EXPECT_EQ(plan->NextCursor(24), 36);
  EXPECT_FALSE(BatchPlan::Make(10, 4).ok());
  EXPECT_FALSE(BatchPlan::Make(0, 1).ok());
}

TEST(TrainSampleSource, ResumeFromSavedCursorGivesTheRestOfTheEpoch) {
  TempDir dir;
  auto ds = MakeDataset(dir / "d", 6000);
  auto before = MakeSource({{ds, 1.0}}, 20, 5);
  const int64_t nw = before->num_windows(0);
  const int64_t cursor = 7 * 16;  // seven steps of 16 samples
  std::set<int64_t> seen;
  for (int64_t i = 0; i < cursor; ++i) seen.insert(before->Locate(i).window);
  const std::string saved = before->SamplerState(cursor).dump();

  // A new process: reopen the data, restore the cursor from the checkpoint text.
  auto reopened = IndexedDataset::Open(dir / "d");
  ASSERT_TRUE(reopened.ok());
  auto after =
      MakeSource({{std::shared_ptr<const IndexedDataset>(std::move(*reopened)), 1.0}}, 20, 5);
  auto restored = after->RestoreCursor(nlohmann::json::parse(saved));
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(*restored, cursor);
  std::vector<int32_t> x(21), y(21);
  for (int64_t i = *restored; i < nw; ++i) {
    before->Sample(i, x.data());
    after->Sample(i, y.data());
    ASSERT_EQ(x, y) << "sample " << i;
    EXPECT_TRUE(seen.insert(after->Locate(i).window).second) << "window repeated in epoch";
  }
  EXPECT_EQ(static_cast<int64_t>(seen.size()), nw);  // the epoch completes exactly
}

TEST(TrainSampleSource, RestoreRejectsADifferentRun) {
  TempDir dir;
  auto ds = MakeDataset(dir / "d", 3000), other = MakeDataset(dir / "o", 3000, 7);
  auto src = MakeSource({{ds, 1.0}}, 16, 5);
  const nlohmann::json state = src->SamplerState(64);
  auto expect_error = [&](const TrainSampleSource& s, const std::string& piece) {
    auto r = s.RestoreCursor(state);
    ASSERT_FALSE(r.ok()) << piece;
    EXPECT_NE(std::string(r.status().message()).find(piece), std::string::npos) << r.status();
  };
  expect_error(*MakeSource({{ds, 1.0}}, 16, 6), "seed 5 in the checkpoint, 6 in this run");
  expect_error(*MakeSource({{ds, 1.0}}, 32, 5), "seq_len 16 in the checkpoint, 32 in this run");
  expect_error(*MakeSource({{other, 1.0}}, 16, 5), dir / "o");
  expect_error(*MakeSource({{ds, 1.0}, {other, 1.0}}, 16, 5), "1 datasets in the checkpoint");
  auto bad = src->RestoreCursor(nlohmann::json{{"cursor", 3}});
  EXPECT_FALSE(bad.ok());
}

// Megatron's build_blending_indices, in doubles, as in helpers.cpp.
std::vector<int> MegatronBlend(const std::vector<double>& weights, int64_t size) {
  std::vector<int64_t> current(weights.size(), 0);
  std::vector<int> out;
  for (int64_t i = 0; i < size; ++i) {
    const double x = std::max(static_cast<double>(i), 1.0);
    int best = 0;
    double best_error = weights[0] * x - static_cast<double>(current[0]);
    for (size_t d = 1; d < weights.size(); ++d) {
      const double error = weights[d] * x - static_cast<double>(current[d]);
      if (error > best_error) {
        best_error = error;
        best = static_cast<int>(d);
      }
    }
    out.push_back(best);
    ++current[best];
  }
  return out;
}

TEST(TrainSampleSource, BlendingMatchesMegatronsGreedy) {
  TempDir dir;
  auto a = MakeDataset(dir / "a", 900), b = MakeDataset(dir / "b", 700),
       c = MakeDataset(dir / "c", 500);
  // Dyadic weights are exact in binary, so doubles and our fixed point agree on every tie.
  auto src = MakeSource({{a, 2.0}, {b, 1.0}, {c, 1.0}}, 10, 3);
  const std::vector<int> expected = MegatronBlend({0.5, 0.25, 0.25}, 5000);
  std::vector<int64_t> counts(3, 0);
  for (int64_t i = 0; i < 5000; ++i) {
    const SampleOrigin o = src->Locate(i);
    ASSERT_EQ(o.dataset, expected[i]) << "sample " << i;
    EXPECT_EQ(o.dataset_sample, counts[o.dataset]);
    ++counts[o.dataset];
  }
}

TEST(TrainSampleSource, BlendingProportionsFollowWeights) {
  TempDir dir;
  auto a = MakeDataset(dir / "a", 2000), b = MakeDataset(dir / "b", 2000),
       c = MakeDataset(dir / "c", 2000);
  auto src = MakeSource({{a, 0.6}, {b, 0.3}, {c, 0.1}}, 10, 3);
  std::vector<int64_t> counts(3, 0);
  for (int64_t i = 0; i < 10000; ++i) {
    ++counts[src->Locate(i).dataset];
    const double n = static_cast<double>(i + 1);
    for (int d = 0; d < 3; ++d) ASSERT_LE(std::abs(counts[d] - src->weight(d) * n), 2.0) << i;
  }
  // Random access far ahead equals walking there.
  auto fresh = MakeSource({{a, 0.6}, {b, 0.3}, {c, 0.1}}, 10, 3);
  for (int64_t i : {9999, 4096, 1023, 1024, 7777, 0}) {
    const SampleOrigin x = fresh->Locate(i), y = src->Locate(i);
    EXPECT_EQ(x.dataset, y.dataset);
    EXPECT_EQ(x.dataset_sample, y.dataset_sample);
    EXPECT_EQ(x.window, y.window);
  }
}

TEST(TrainSampleSource, RejectsDatasetsTooSmallForAWindow) {
  TempDir dir;
  auto ds = MakeDataset(dir / "d", 16);
  auto src = TrainSampleSource::Create({{ds, 1.0}}, 16, 1);  // needs 17 tokens
  ASSERT_FALSE(src.ok());
  EXPECT_NE(std::string(src.status().message()).find(dir / "d"), std::string::npos);
  EXPECT_TRUE(TrainSampleSource::Create({{ds, 1.0}}, 15, 1).ok());
}

TEST(ValidationSource, WindowsInOrder) {
  TempDir dir;
  auto ds = MakeDataset(dir / "v", 1000);
  auto val = ValidationSource::Create(ds, 64);
  ASSERT_TRUE(val.ok());
  EXPECT_EQ((*val)->num_windows(), 15);  // 999 / 64
  std::vector<int32_t> out(65);
  for (int64_t j = 0; j < 15; ++j) {
    (*val)->Sample(j, out.data());
    for (int k = 0; k <= 64; ++k) ASSERT_EQ(out[k], j * 64 + k);
  }
}

TEST(DataPath, ParsesMegatronStyle) {
  auto one = ParseDataPath({"data/x"});
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->size(), 1u);
  EXPECT_EQ((*one)[0].second, "data/x");
  auto two = ParseDataPath({"0.3", "a", "0.7", "b"});
  ASSERT_TRUE(two.ok());
  EXPECT_DOUBLE_EQ((*two)[1].first, 0.7);
  EXPECT_EQ((*two)[1].second, "b");
  EXPECT_FALSE(ParseDataPath({"x", "a", "0.7", "b"}).ok());
  EXPECT_FALSE(ParseDataPath({"0.3", "a", "0.7"}).ok());
  EXPECT_FALSE(OpenBlend({{1.0, "/nonexistent/prefix"}}).ok());
}

}  // namespace
}  // namespace mt::data

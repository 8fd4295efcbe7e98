// tests/gpu/gemm_plan_cache_test.cc: GEMM plan keys and the plan cache (host logic, CI).
#include "kernels/cuda/gemm_plan_cache.h"

#include <unordered_set>
#include <vector>

#include "gtest/gtest.h"

namespace mt::cuda {
namespace {

GemmKey Base() {
  GemmKey k;
  k.m = 4096;
  k.n = 7168;
  k.k = 2048;
  k.lda = 2048;
  k.ldb = 2048;
  k.ldc = 7168;
  k.trans_b = true;
  k.a = k.b = GemmDtype::kE4M3;
  k.c = GemmDtype::kBF16;
  k.scale_a = GemmScale::kVec128;
  k.scale_b = GemmScale::kBlock128;
  k.sm = 90;
  return k;
}

// Every field on its own must change the key (and, for these values, the hash).
std::vector<GemmKey> OneFieldVariants() {
  std::vector<GemmKey> v;
  auto add = [&](auto edit) {
    GemmKey k = Base();
    edit(k);
    v.push_back(k);
  };
  add([](GemmKey& k) { k.m = 4095; });
  add([](GemmKey& k) { k.n = 2048; });
  add([](GemmKey& k) { k.k = 7168; });
  add([](GemmKey& k) { k.lda = 4096; });
  add([](GemmKey& k) { k.ldb = 4096; });
  add([](GemmKey& k) { k.ldc = 8192; });
  add([](GemmKey& k) { k.trans_a = true; });
  add([](GemmKey& k) { k.trans_b = false; });
  add([](GemmKey& k) { k.accumulate = true; });
  add([](GemmKey& k) { k.a = GemmDtype::kBF16; });
  add([](GemmKey& k) { k.b = GemmDtype::kBF16; });
  add([](GemmKey& k) { k.c = GemmDtype::kF32; });
  add([](GemmKey& k) { k.scale_a = GemmScale::kTensor; });
  add([](GemmKey& k) { k.scale_b = GemmScale::kTensor; });
  add([](GemmKey& k) { k.sm = 89; });
  return v;
}

TEST(GemmKey, EveryFieldTakesPart) {
  const GemmKey base = Base();
  std::unordered_set<size_t> hashes = {GemmKeyHash()(base)};
  for (const GemmKey& k : OneFieldVariants()) {
    EXPECT_FALSE(k == base) << k.ToString();
    EXPECT_TRUE(hashes.insert(GemmKeyHash()(k)).second) << "hash collision: " << k.ToString();
  }
  EXPECT_TRUE(Base() == base);
  EXPECT_EQ(GemmKeyHash()(Base()), GemmKeyHash()(base));
}

TEST(GemmKey, ToStringNamesTheProblem) {
  EXPECT_EQ(Base().ToString(),
            "4096x7168x2048 A e4m3 scale 1x128 lda 2048, B e4m3 (T) scale 128x128 ldb 2048, "
            "C bf16 ldc 7168, sm_90");
}

struct FakePlan {
  int id;
};

TEST(GemmPlanCache, BuildsEachPlanOnceAndReusesIt) {
  int built = 0;
  GemmPlanCache<FakePlan> cache([&](const GemmKey&) -> absl::StatusOr<std::unique_ptr<FakePlan>> {
    return std::make_unique<FakePlan>(FakePlan{built++});
  });
  auto a = cache.Get(Base());
  ASSERT_TRUE(a.ok());
  auto b = cache.Get(Base());
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*a, *b) << "the same plan object";
  for (const GemmKey& k : OneFieldVariants()) {
    auto p = cache.Get(k);
    ASSERT_TRUE(p.ok());
    EXPECT_NE(*p, *a) << k.ToString();
  }
  EXPECT_EQ(built, 1 + int(OneFieldVariants().size()));
  EXPECT_EQ(cache.misses(), built);
  EXPECT_EQ(cache.hits(), 1);
  EXPECT_EQ(cache.size(), size_t(built));
  for (const GemmKey& k : OneFieldVariants()) ASSERT_TRUE(cache.Get(k).ok());
  EXPECT_EQ(cache.hits(), 1 + int64_t(OneFieldVariants().size()));
  EXPECT_EQ(built, 1 + int(OneFieldVariants().size())) << "no rebuilds";
}

TEST(GemmPlanCache, FailuresAreReportedWithTheKeyAndNotCached) {
  int calls = 0;
  GemmPlanCache<FakePlan> cache([&](const GemmKey&) -> absl::StatusOr<std::unique_ptr<FakePlan>> {
    ++calls;
    return absl::UnimplementedError("no algorithm");
  });
  auto p = cache.Get(Base());
  ASSERT_FALSE(p.ok());
  EXPECT_TRUE(absl::IsUnimplemented(p.status()));
  EXPECT_NE(p.status().message().find("4096x7168x2048"), std::string::npos) << p.status();
  EXPECT_NE(p.status().message().find("no algorithm"), std::string::npos);
  EXPECT_FALSE(cache.Get(Base()).ok());
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(cache.size(), 0u);
}

}  // namespace
}  // namespace mt::cuda

// tests/gpu/gemm_plan_cache_test.cc: GEMM plan keys and the plan cache (host logic, CI).
#include "kernels/cuda/gemm_plan_cache.h"

#include <unordered_set>
#include <utility>
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

// ---- CheckFp8Linear: the cuBLAS documentation's rules for Fp8Linear, on the host ----------

// Fp8Linear's arguments for a problem cuBLASLt takes on sm_90; each test edits one.
struct Fp8Args {
  int sm = 90;
  GemmScale x_scale = GemmScale::kVec128, w_scale = GemmScale::kBlock128;
  GemmDtype y_dtype = GemmDtype::kF32;
  int64_t M = 200, N = 272, K = 304;  // none a multiple of 128
  uintptr_t x = 0x10000, x_scales = 0x20010, w = 0x30000, w_scales = 0x40020, y = 0x50000;
  absl::Status Check() const {
    return CheckFp8Linear(sm, x_scale, w_scale, y_dtype, M, N, K, x, x_scales, w, w_scales, y);
  }
};

TEST(CheckFp8Linear, TakesTheRecipesProblemOnSm90) {
  EXPECT_TRUE(Fp8Args().Check().ok()) << Fp8Args().Check();
  Fp8Args bf16;
  bf16.y_dtype = GemmDtype::kBF16;
  EXPECT_TRUE(bf16.Check().ok()) << bf16.Check();
  Fp8Args tensor;  // per-tensor scales: sm_89 and later
  tensor.x_scale = tensor.w_scale = GemmScale::kTensor;
  for (int sm : {89, 90, 100, 120}) {
    tensor.sm = sm;
    EXPECT_TRUE(tensor.Check().ok()) << sm << ": " << tensor.Check();
  }
}

// cuBLASLt's VEC128_32F / BLK128x128_32F modes are listed for compute capability 9.0 only
// (Blackwell's block scaling is MXFP8's): elsewhere the caller's kernel runs, unasked.
TEST(CheckFp8Linear, BlockScalesAreSm90sOnly) {
  EXPECT_TRUE(CublasLtHasBlockScaledFp8(90));
  for (int sm : {80, 89, 100, 103, 120}) {
    EXPECT_FALSE(CublasLtHasBlockScaledFp8(sm)) << sm;
    Fp8Args a;
    a.sm = sm;
    EXPECT_TRUE(absl::IsFailedPrecondition(a.Check())) << sm << ": " << a.Check();
  }
}

TEST(CheckFp8Linear, RefusesWhatCublasLtCannotTake) {
  std::vector<std::pair<const char*, Fp8Args>> refused;
  auto add = [&](const char* what, auto edit) {
    Fp8Args a;
    edit(a);
    refused.emplace_back(what, a);
  };
  add("empty M", [](Fp8Args& a) { a.M = 0; });
  add("K % 16", [](Fp8Args& a) { a.K = 300; });
  add("FP8 Y", [](Fp8Args& a) { a.y_dtype = GemmDtype::kE4M3; });
  add("f32 Y rows % 16 bytes", [](Fp8Args& a) { a.N = 270; });
  add("bf16 Y rows % 16 bytes", [](Fp8Args& a) {
    a.y_dtype = GemmDtype::kBF16;
    a.N = 276;
  });
  // Block scales: cuBLASLt's M and N (our N and M) multiples of 4, and our M of 8.
  add("M % 4", [](Fp8Args& a) { a.M = 201; });
  add("M % 8", [](Fp8Args& a) { a.M = 204; });
  add("mixed scales", [](Fp8Args& a) { a.w_scale = GemmScale::kTensor; });
  add("swapped modes", [](Fp8Args& a) { std::swap(a.x_scale, a.w_scale); });
  add("no scales", [](Fp8Args& a) { a.x_scale = a.w_scale = GemmScale::kNone; });
  add("X not 256-aligned", [](Fp8Args& a) { a.x += 16; });
  add("W not 256-aligned", [](Fp8Args& a) { a.w += 128; });
  add("Y not 256-aligned", [](Fp8Args& a) { a.y += 4; });
  add("X scales not 16-aligned", [](Fp8Args& a) { a.x_scales += 4; });
  add("W scales not 16-aligned", [](Fp8Args& a) { a.w_scales += 8; });
  for (const auto& [what, a] : refused) {
    const absl::Status s = a.Check();
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << what << ": " << s;
  }
  Fp8Args odd_m;  // per-tensor scales have no scale tensor: any M
  odd_m.x_scale = odd_m.w_scale = GemmScale::kTensor;
  odd_m.M = 201;
  EXPECT_TRUE(odd_m.Check().ok()) << odd_m.Check();
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

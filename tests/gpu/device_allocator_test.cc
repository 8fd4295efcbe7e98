// tests/gpu/device_allocator_test.cc: CachingAllocator's bookkeeping over a fake raw
// allocator (host memory with a byte budget), so it runs in CI without a GPU.
#include "kernels/cuda/device_allocator.h"

#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace mt::cuda {
namespace {

// malloc with a budget of live bytes: over it, ResourceExhausted, as cudaMalloc reports OOM.
class FakeRaw : public RawAllocator {
 public:
  explicit FakeRaw(size_t budget = size_t(1) << 40) : budget_(budget) {}
  ~FakeRaw() override { EXPECT_TRUE(live_.empty()) << "blocks never returned"; }
  absl::StatusOr<void*> Allocate(size_t bytes) override {
    ++calls;
    if (used_ + bytes > budget_) return absl::ResourceExhaustedError("fake OOM");
    void* p = std::malloc(bytes);
    live_.emplace(p, bytes);
    used_ += bytes;
    return p;
  }
  void Free(void* p) override {
    auto it = live_.find(p);
    ASSERT_NE(it, live_.end()) << "freed a block the fake never handed out";
    used_ -= it->second;
    live_.erase(it);
    std::free(p);
  }
  int calls = 0;
  size_t live() const { return live_.size(); }

 private:
  size_t budget_, used_ = 0;
  std::map<void*, size_t> live_;
};

TEST(CachingAllocator, SizeClassesRoundUpByAtMostAQuarter) {
  EXPECT_EQ(CachingAllocator::SizeClass(0), 0u);
  EXPECT_EQ(CachingAllocator::SizeClass(1), 512u);
  EXPECT_EQ(CachingAllocator::SizeClass(512), 512u);
  EXPECT_EQ(CachingAllocator::SizeClass(513), 640u);  // 512 + 128
  EXPECT_EQ(CachingAllocator::SizeClass(1024), 1024u);
  EXPECT_EQ(CachingAllocator::SizeClass(1025), 1280u);
  EXPECT_EQ(CachingAllocator::SizeClass(size_t(3) << 20), size_t(3) << 20);
  for (size_t b = 1; b < (size_t(1) << 22); b = b * 3 / 2 + 7) {
    const size_t c = CachingAllocator::SizeClass(b);
    EXPECT_GE(c, b);
    EXPECT_LE(c, std::max<size_t>(512, b + b / 4)) << b;
    EXPECT_EQ(CachingAllocator::SizeClass(c), c) << "a class must be its own class";
  }
}

TEST(CachingAllocator, ReusesFreedBlocksWithoutRawCalls) {
  FakeRaw raw;
  CachingAllocator alloc(&raw);
  // Warm-up step: three live buffers at once.
  std::vector<size_t> step = {1000, 70000, 1 << 20};
  for (int s = 0; s < 5; ++s) {
    if (s == 1) alloc.MarkWarmupDone();
    std::vector<void*> ptrs;
    for (size_t b : step) {
      auto p = alloc.Allocate(b);
      ASSERT_TRUE(p.ok()) << p.status();
      ptrs.push_back(*p);
    }
    for (void* p : ptrs) alloc.Free(p);
  }
  const auto st = alloc.stats();
  EXPECT_EQ(raw.calls, 3);
  EXPECT_EQ(st.raw_allocs, 3);
  EXPECT_EQ(st.raw_allocs_after_warmup, 0);
  EXPECT_EQ(st.cache_hits, 12);
  EXPECT_EQ(st.current_bytes, 0u);
  const size_t reserved = CachingAllocator::SizeClass(1000) + CachingAllocator::SizeClass(70000) +
                          CachingAllocator::SizeClass(1 << 20);
  EXPECT_EQ(st.reserved_bytes, reserved);
  EXPECT_EQ(st.peak_bytes, reserved);
}

TEST(CachingAllocator, SameClassDifferentSizesShareBlocks) {
  FakeRaw raw;
  CachingAllocator alloc(&raw);
  void* a = *alloc.Allocate(1100);  // class 1280
  alloc.Free(a);
  void* b = *alloc.Allocate(1279);
  EXPECT_EQ(a, b);
  void* c = *alloc.Allocate(1281);  // next class: a new block
  EXPECT_NE(b, c);
  EXPECT_EQ(raw.calls, 2);
  alloc.Free(b);
  alloc.Free(c);
}

// Routing moves an expert buffer between neighbouring classes from step to step: after
// warm-up the smaller request must reuse the larger cached block, not cudaMalloc.
TEST(CachingAllocator, ServesASmallerClassFromALargerCachedBlock) {
  FakeRaw raw;
  CachingAllocator alloc(&raw);
  void* big = *alloc.Allocate(100000);  // class 114688
  alloc.Free(big);
  alloc.MarkWarmupDone();
  void* a = *alloc.Allocate(60000);  // class 65536: the 114688 block is within twice that
  EXPECT_EQ(a, big);
  auto st = alloc.stats();
  EXPECT_EQ(st.raw_allocs_after_warmup, 0);
  EXPECT_EQ(st.oversize_hits, 1);
  EXPECT_EQ(st.current_bytes, 114688u) << "a block counts as its own class";
  alloc.Free(a);
  // The block went back to its own class: a request of that class finds it.
  void* b = *alloc.Allocate(114688);
  EXPECT_EQ(b, big);
  EXPECT_EQ(alloc.stats().oversize_hits, 1);
  alloc.Free(b);
  EXPECT_EQ(raw.calls, 1);
}

TEST(CachingAllocator, TakesTheSmallestLargerBlockAndNoneOverTwice) {
  FakeRaw raw;
  CachingAllocator alloc(&raw);
  void* huge = *alloc.Allocate(1 << 20);
  void* mid = *alloc.Allocate(3000);  // class 3072
  void* top = *alloc.Allocate(4096);
  alloc.Free(huge);
  alloc.Free(top);
  alloc.Free(mid);
  void* a = *alloc.Allocate(2000);  // class 2048: 3072 and 4096 both fit, 3072 is smaller
  EXPECT_EQ(a, mid);
  void* b = *alloc.Allocate(1000);  // class 1024: 4096 and 1 MiB are over twice, so raw
  EXPECT_NE(b, top);
  EXPECT_NE(b, huge);
  EXPECT_EQ(raw.calls, 4);
  EXPECT_EQ(alloc.stats().oversize_hits, 1);
  alloc.Free(a);
  alloc.Free(b);
}

TEST(CachingAllocator, OutOfMemoryTakesAnyLargerBlockBeforeReleasing) {
  FakeRaw raw(size_t(1) << 20);
  CachingAllocator alloc(&raw);
  void* huge = *alloc.Allocate(size_t(1) << 20);  // the whole budget
  alloc.Free(huge);
  void* a = *alloc.Allocate(1000);  // the fake is full: the cached 1 MiB block serves it
  EXPECT_EQ(a, huge);
  EXPECT_EQ(alloc.stats().raw_frees, 0) << "nothing released: that would synchronise";
  EXPECT_EQ(alloc.stats().oversize_hits, 1);
  alloc.Free(a);
}

TEST(CachingAllocator, CountsLateRawAllocationsAndPeak) {
  FakeRaw raw;
  CachingAllocator alloc(&raw);
  void* a = *alloc.Allocate(4096);
  alloc.MarkWarmupDone();
  void* b = *alloc.Allocate(8192);  // a size never seen in warm-up
  auto st = alloc.stats();
  EXPECT_EQ(st.raw_allocs_after_warmup, 1);
  EXPECT_EQ(st.current_bytes, 4096u + 8192u);
  EXPECT_EQ(st.peak_bytes, 4096u + 8192u);
  alloc.Free(b);
  alloc.ResetPeak();
  EXPECT_EQ(alloc.stats().peak_bytes, 4096u);
  alloc.Free(a);
  EXPECT_EQ(alloc.stats().current_bytes, 0u);
}

TEST(CachingAllocator, FitsWithoutReleasingWhenTheBudgetAllows) {
  FakeRaw raw(8192);
  CachingAllocator alloc(&raw);
  void* a = *alloc.Allocate(2048);
  alloc.Free(a);  // cached: 2048 of the 8192 stay held
  auto b = alloc.Allocate(4096);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(alloc.stats().raw_frees, 0);
  EXPECT_EQ(alloc.stats().reserved_bytes, 2048u + 4096u);
  alloc.Free(*b);
}

TEST(CachingAllocator, OutOfMemoryAfterReleaseIsAnErrorNamingTheRequest) {
  FakeRaw raw(3000);
  CachingAllocator alloc(&raw);
  void* a = *alloc.Allocate(2048);
  alloc.Free(a);                        // cached, 2048 of 3000 used at the fake
  auto b = alloc.Allocate(2048 + 512);  // class 2560: needs the cached block released first
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(alloc.stats().raw_frees, 1) << "the cached 2048 block went back to make room";
  EXPECT_EQ(alloc.stats().reserved_bytes, 2560u);
  auto c = alloc.Allocate(1 << 20);
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(absl::IsResourceExhausted(c.status()));
  EXPECT_NE(c.status().message().find("1048576 bytes"), std::string::npos) << c.status();
  alloc.Free(*b);
}

TEST(CachingAllocator, ReleaseCachedReturnsEverythingFree) {
  FakeRaw raw;
  {
    CachingAllocator alloc(&raw);
    void* a = *alloc.Allocate(100);
    void* b = *alloc.Allocate(100000);
    alloc.Free(a);
    alloc.ReleaseCached();
    EXPECT_EQ(raw.live(), 1u);
    EXPECT_EQ(alloc.stats().reserved_bytes, CachingAllocator::SizeClass(100000));
    alloc.Free(b);
  }  // the destructor releases b's cached block
  EXPECT_EQ(raw.live(), 0u);
}

TEST(CachingAllocator, ZeroBytesIsNull) {
  FakeRaw raw;
  CachingAllocator alloc(&raw);
  auto p = alloc.Allocate(0);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(*p, nullptr);
  alloc.Free(nullptr);
  EXPECT_EQ(raw.calls, 0);
}

TEST(CachingAllocatorDeathTest, FreeOfForeignPointerAborts) {
  FakeRaw raw;
  CachingAllocator alloc(&raw);
  int x = 0;
  EXPECT_DEATH(alloc.Free(&x), "did not hand out");
}

}  // namespace
}  // namespace mt::cuda

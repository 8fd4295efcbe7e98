// tests/gpu/runtime_test.cc: device selection rules (host logic) and, on a GPU machine,
// the streams, events and pinned buffers of kernels/cuda/runtime.h.
#include "kernels/cuda/runtime.h"

#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/cuda_check.h"

namespace mt::cuda {
namespace {

TEST(DeviceForLocalRank, OneVisibleDeviceServesEveryRank) {
  EXPECT_EQ(*DeviceForLocalRank(0, 1), 0);
  EXPECT_EQ(*DeviceForLocalRank(5, 1), 0);  // CUDA_VISIBLE_DEVICES set per rank
}

TEST(DeviceForLocalRank, LocalRankPicksItsDevice) {
  for (int r = 0; r < 8; ++r) EXPECT_EQ(*DeviceForLocalRank(r, 8), r);
}

TEST(DeviceForLocalRank, MoreRanksThanDevicesIsAClearError) {
  auto d = DeviceForLocalRank(4, 4);
  ASSERT_FALSE(d.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(d.status()));
  EXPECT_NE(d.status().message().find("local rank 4"), std::string::npos) << d.status();
  EXPECT_FALSE(DeviceForLocalRank(0, 0).ok());
  EXPECT_FALSE(DeviceForLocalRank(-1, 2).ok());
}

TEST(SelectDevice, WithoutADeviceItFailsInsteadOfAborting) {
  if (DeviceCount() > 0) GTEST_SKIP() << "a CUDA device is present; covered by the GPU test";
  auto info = SelectDevice(0);
  ASSERT_FALSE(info.ok());
  EXPECT_NE(info.status().message().find("no CUDA device"), std::string::npos) << info.status();
}

TEST(RuntimeGpu, StreamsEventsAndPinnedCopy) {
  if (DeviceCount() == 0) GTEST_SKIP() << "no CUDA device: GPU runtime test skipped";
  auto info = SelectDevice(0);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_GT(info->num_sms, 0);
  Streams streams;
  auto pinned = PinnedBuffer::Create(1 << 20);
  ASSERT_TRUE(pinned.ok()) << pinned.status();
  std::memset(pinned->data(), 0x5a, pinned->size());
  CudaRawAllocator raw;
  CachingAllocator alloc(&raw);
  void* dev = *alloc.Allocate(pinned->size());
  // compute: host -> device; comm waits, then device -> a second pinned buffer.
  CUDA_CHECK(cudaMemcpyAsync(dev, pinned->data(), pinned->size(), cudaMemcpyHostToDevice,
                             streams.compute()));
  streams.CommWaitsForCompute();
  auto back = PinnedBuffer::Create(pinned->size());
  ASSERT_TRUE(back.ok());
  CUDA_CHECK(
      cudaMemcpyAsync(back->data(), dev, back->size(), cudaMemcpyDeviceToHost, streams.comm()));
  streams.ComputeWaitsForComm();
  streams.Synchronize();
  EXPECT_EQ(std::memcmp(back->data(), pinned->data(), pinned->size()), 0);
  alloc.Free(dev);
  EXPECT_EQ(alloc.stats().current_bytes, 0u);
}

// Uploads through the pinned ring, more of them than it has slots, each from one host
// buffer rewritten right after the call: every device copy must hold what the buffer held
// at its call (a slot reused before its copy completed, or a copy that read the host
// buffer late, would show the next value).
TEST(RuntimeGpu, UploadStagingCopiesAreIndependentOfTheSource) {
  if (DeviceCount() == 0) GTEST_SKIP() << "no CUDA device: GPU runtime test skipped";
  ASSERT_TRUE(SelectDevice(0).ok());
  Streams streams;
  auto staging = UploadStaging::Create();
  ASSERT_TRUE(staging.ok()) << staging.status();
  constexpr int kCopies = 3 * UploadStaging::kSlots + 1;
  constexpr size_t kInts = 50000;  // 200 KB each
  CudaRawAllocator raw;
  CachingAllocator alloc(&raw);
  std::vector<void*> dev(kCopies);
  std::vector<int32_t> host(kInts);
  for (int c = 0; c < kCopies; ++c) {
    dev[c] = *alloc.Allocate(kInts * sizeof(int32_t));
    for (size_t i = 0; i < kInts; ++i) host[i] = static_cast<int32_t>(c * 1000003 + i);
    ASSERT_TRUE(
        (*staging)->Upload(host.data(), dev[c], kInts * sizeof(int32_t), streams.compute()));
  }
  EXPECT_FALSE((*staging)->Upload(host.data(), dev[0], UploadStaging::kSlotBytes + 1,
                                  streams.compute()));  // too large: the caller's to copy
  std::vector<int32_t> back(kInts);
  for (int c = 0; c < kCopies; ++c) {
    CUDA_CHECK(cudaMemcpyAsync(back.data(), dev[c], kInts * sizeof(int32_t), cudaMemcpyDeviceToHost,
                               streams.compute()));
    streams.Synchronize();
    for (size_t i = 0; i < kInts; i += 997)
      ASSERT_EQ(back[i], static_cast<int32_t>(c * 1000003 + i)) << "copy " << c << " at " << i;
    alloc.Free(dev[c]);
  }
}

}  // namespace
}  // namespace mt::cuda

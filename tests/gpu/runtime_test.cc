// tests/gpu/runtime_test.cc: device selection rules (host logic) and, on a GPU machine,
// the streams, events and pinned buffers of kernels/cuda/runtime.h.
#include "kernels/cuda/runtime.h"

#include <cstring>

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

}  // namespace
}  // namespace mt::cuda

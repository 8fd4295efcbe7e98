// tests/gpu/communicator_nccl_test.cc: the NCCL communicator. Type and op mapping and the
// no-device error run everywhere; on a GPU machine a one-rank communicator (bootstrapped
// over LocalCommunicator) runs every collective on device buffers.
#include "parallel/communicator_nccl.h"

#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/runtime.h"
#include "tests/gpu/gpu_test_util.h"

namespace mt {
namespace {

using cuda::test::DeviceBuffer;

TEST(NcclTypes, ReductionsUseTheRealTypeMovementUsesBytes) {
  EXPECT_EQ(NcclTypeForReduce(DType::kF32)->type, ncclFloat32);
  EXPECT_EQ(NcclTypeForReduce(DType::kBF16)->type, ncclBfloat16);
  EXPECT_EQ(NcclTypeForReduce(DType::kI64)->type, ncclInt64);
  EXPECT_FALSE(NcclTypeForReduce(DType::kF8E4M3).ok());
  EXPECT_FALSE(NcclTypeForReduce(DType::kU16).ok());
  EXPECT_EQ(NcclTypeForMove(DType::kF32).type, ncclUint8);
  EXPECT_EQ(NcclTypeForMove(DType::kF32).multiplier, 4);
  EXPECT_EQ(NcclTypeForMove(DType::kBF16).multiplier, 2);
  EXPECT_EQ(NcclTypeForMove(DType::kF8E4M3).multiplier, 1);
  EXPECT_EQ(NcclOp(ReduceOp::kSum), ncclSum);
  EXPECT_EQ(NcclOp(ReduceOp::kMax), ncclMax);
  EXPECT_EQ(NcclOp(ReduceOp::kMin), ncclMin);
}

TEST(NcclCommunicator, WithoutADeviceCreateIsAClearError) {
  if (cuda::DeviceCount() > 0) GTEST_SKIP() << "a CUDA device is present";
  LocalCommunicator boot;
  auto c = NcclCommunicator::Create(boot, nullptr, "world");
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(c.status()));
  EXPECT_NE(c.status().message().find("no CUDA device"), std::string::npos) << c.status();
}

TEST(NcclCommunicatorGpu, OneRankCollectivesOnDeviceBuffers) {
  if (cuda::DeviceCount() == 0) GTEST_SKIP() << "no CUDA device: NCCL test skipped";
  ASSERT_TRUE(cuda::SelectDevice(0).ok());
  cuda::Streams streams;
  LocalCommunicator boot;
  auto c = NcclCommunicator::Create(boot, streams.comm(), "world");
  ASSERT_TRUE(c.ok()) << c.status();
  NcclCommunicator& nccl = **c;
  EXPECT_EQ(nccl.size(), 1);
  EXPECT_EQ(nccl.name(), "nccl:world");
  const std::vector<float> x = {1.5f, -2.0f, 3.25f, 7.0f};
  DeviceBuffer<float> d(x), out(x.size());
  ASSERT_TRUE(nccl.AllReduce(OutBuffer::Of(d.get(), 4), ReduceOp::kSum).ok());
  EXPECT_EQ(d.ToHost(), x);  // one rank: the sum is the value
  ASSERT_TRUE(nccl.AllGather(InBuffer::Of(d.get(), 4), OutBuffer::Of(out.get(), 4)).ok());
  EXPECT_EQ(out.ToHost(), x);
  DeviceBuffer<float> out2(x.size());
  ASSERT_TRUE(
      nccl.AllToAllV(InBuffer::Of(d.get(), 4), {3}, {1}, OutBuffer::Of(out2.get(), 4), {3}, {0})
          .ok());
  EXPECT_EQ(out2.ToHost(), (std::vector<float>{-2.0f, 3.25f, 7.0f, 0.0f}));
  ASSERT_TRUE(nccl.Broadcast(OutBuffer::Of(d.get(), 4), 0).ok());
  ASSERT_TRUE(nccl.Barrier().ok());
  // A reduction of a type NCCL cannot reduce is refused before reaching NCCL.
  DeviceBuffer<uint8_t> codes(8);
  EXPECT_FALSE(nccl.AllReduce(OutBuffer(codes.get(), 8, DType::kF8E4M3), ReduceOp::kSum).ok());
}

}  // namespace
}  // namespace mt

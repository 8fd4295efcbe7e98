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

// A rank sending to itself is the smallest case of two sends that wait for each other's
// receive: launched alone, ncclSend to self would never finish; held back and launched with
// the receive (GroupedP2p), it completes. Messages match by order, not tag.
TEST(NcclCommunicatorGpu, HeldSendsGoOutWithTheNextReceive) {
  if (cuda::DeviceCount() == 0) GTEST_SKIP() << "no CUDA device: NCCL test skipped";
  ASSERT_TRUE(cuda::SelectDevice(0).ok());
  cuda::Streams streams;
  LocalCommunicator boot;
  // With the run's watchdog (a deadline nothing here comes near): the calls run under it.
  auto c = NcclCommunicator::Create(boot, streams.comm(), "pp",
                                    std::make_shared<CommWatchdog>(120, "rank 0"));
  ASSERT_TRUE(c.ok()) << c.status();
  NcclCommunicator& nccl = **c;
  const std::vector<float> a = {1.5f, -2.0f, 3.25f}, b = {7.0f, 8.0f};
  DeviceBuffer<float> da(a), db(b), ra(a.size()), rb(b.size());
  auto sa = nccl.ISend(InBuffer::Of(da.get(), 3), 0, 4);
  auto sb = nccl.ISend(InBuffer::Of(db.get(), 2), 0, 5);
  ASSERT_TRUE(sa.ok() && sb.ok());
  // A collective may not overtake the held sends.
  const absl::Status held = nccl.Barrier();
  EXPECT_TRUE(absl::IsFailedPrecondition(held)) << held;
  auto qa = nccl.IRecv(OutBuffer::Of(ra.get(), 3), 0, 4);
  ASSERT_TRUE(qa.ok());
  ASSERT_TRUE(nccl.Recv(OutBuffer::Of(rb.get(), 2), 0, 5).ok());  // one group of four
  EXPECT_TRUE((*qa)->Wait().ok());
  EXPECT_TRUE((*sa)->Wait().ok());
  EXPECT_TRUE((*sb)->Wait().ok());
  EXPECT_EQ(ra.ToHost(), a);
  EXPECT_EQ(rb.ToHost(), b);
  EXPECT_TRUE(nccl.Barrier().ok());
}

}  // namespace
}  // namespace mt

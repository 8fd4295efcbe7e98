// tests/gpu/communicator_nccl_test.cc: the NCCL communicator. Type and op mapping and the
// no-device error run everywhere; on a GPU machine a one-rank communicator (bootstrapped
// over LocalCommunicator) runs every collective on device buffers.
#include "parallel/communicator_nccl.h"

#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <utility>
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
  auto c = NcclCommunicator::Create(boot, nullptr, nullptr, "world");
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(c.status()));
  EXPECT_NE(c.status().message().find("no CUDA device"), std::string::npos) << c.status();
}

// A one-rank NCCL communicator named `group` on `streams` (the bootstrap serves Create only).
absl::StatusOr<std::unique_ptr<NcclCommunicator>> OneRank(
    const cuda::Streams& streams, const std::string& group,
    std::shared_ptr<CommWatchdog> watchdog = nullptr) {
  LocalCommunicator boot;
  return NcclCommunicator::Create(boot, streams.compute(), streams.comm(), group,
                                  std::move(watchdog));
}

// The GPU tests: device 0 selected, and its compute and communication streams.
class NcclCommunicatorGpu : public testing::Test {
 protected:
  void SetUp() override {
    if (cuda::DeviceCount() == 0) GTEST_SKIP() << "no CUDA device: NCCL test skipped";
    ASSERT_TRUE(cuda::SelectDevice(0).ok());
    streams_ = std::make_unique<cuda::Streams>();
  }
  std::unique_ptr<cuda::Streams> streams_;
};

TEST_F(NcclCommunicatorGpu, OneRankCollectivesOnDeviceBuffers) {
  cuda::Streams& streams = *streams_;
  auto c = OneRank(streams, "world");
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
TEST_F(NcclCommunicatorGpu, HeldSendsGoOutWithTheNextReceive) {
  cuda::Streams& streams = *streams_;
  // With the run's watchdog (a deadline nothing here comes near): the calls run under it.
  auto c = OneRank(streams, "pp", std::make_shared<CommWatchdog>(120, "rank 0"));
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

// The two streams' events: the exchange reads what compute wrote before the call even when
// compute is still busy (without the event NCCL, on its own stream, would send the zeros
// the buffer held), and a started exchange lets the host go on until its Wait.
TEST_F(NcclCommunicatorGpu, StartedExchangeWaitsForComputeAndOverlapsIt) {
  cuda::Streams& streams = *streams_;
  auto c = OneRank(streams, "ep");
  ASSERT_TRUE(c.ok()) << c.status();
  NcclCommunicator& nccl = **c;
  const std::vector<float> pattern = {4.0f, -1.0f, 0.5f, 9.0f, 2.0f};
  DeviceBuffer<float> src(pattern), send(pattern.size()), recv(pattern.size()),
      seen(pattern.size());
  DeviceBuffer<uint8_t> busy(size_t{256} << 20);  // [256 MiB]
  auto keep_compute_busy = [&] {
    for (int i = 0; i < 32; ++i)
      ASSERT_EQ(cudaMemsetAsync(busy.get(), i, size_t{256} << 20, streams.compute()), cudaSuccess);
  };
  keep_compute_busy();
  ASSERT_EQ(cudaMemcpyAsync(send.get(), src.get(), pattern.size() * sizeof(float),
                            cudaMemcpyDeviceToDevice, streams.compute()),
            cudaSuccess);
  auto r = nccl.IAllToAllV(InBuffer::Of(send.get(), 5), {5}, {0}, OutBuffer::Of(recv.get(), 5), {5},
                           {0});
  ASSERT_TRUE(r.ok()) << r.status();
  keep_compute_busy();  // overlaps the exchange: nothing orders it after
  ASSERT_TRUE((*r)->Wait().ok());
  EXPECT_TRUE((*r)->Wait().ok());  // a second Wait returns the first's status
  ASSERT_EQ(cudaMemcpyAsync(seen.get(), recv.get(), pattern.size() * sizeof(float),
                            cudaMemcpyDeviceToDevice, streams.compute()),
            cudaSuccess);
  EXPECT_EQ(seen.ToHost(), pattern);
  // The blocking form orders the same way.
  DeviceBuffer<float> recv2(pattern.size());
  keep_compute_busy();
  ASSERT_EQ(cudaMemsetAsync(send.get(), 0, pattern.size() * sizeof(float), streams.compute()),
            cudaSuccess);
  ASSERT_TRUE(
      nccl.AllToAllV(InBuffer::Of(send.get(), 5), {5}, {0}, OutBuffer::Of(recv2.get(), 5), {5}, {0})
          .ok());
  EXPECT_EQ(recv2.ToHost(), std::vector<float>(5, 0.0f));
  // A started exchange never waited for is waited for by its destructor.
  {
    auto dropped = nccl.IAllToAllV(InBuffer::Of(src.get(), 5), {5}, {0},
                                   OutBuffer::Of(recv.get(), 5), {5}, {0});
    ASSERT_TRUE(dropped.ok());
  }
  EXPECT_EQ(recv.ToHost(), pattern);
}

// Starts an exchange under a 0.5 s deadline and never waits for it (exits 4 or 5 if the
// setup fails, 0 if the watchdog did not end the process).
void StartAndNeverWait(const cuda::Streams& streams) {
  auto c = OneRank(streams, "ep", std::make_shared<CommWatchdog>(0.5, "rank 0"));
  if (!c.ok()) std::_Exit(4);
  DeviceBuffer<float> send(std::vector<float>{1.0f, 2.0f}), recv(2);
  auto r = (*c)->IAllToAllV(InBuffer::Of(send.get(), 2), {2}, {0}, OutBuffer::Of(recv.get(), 2),
                            {2}, {0});
  if (!r.ok()) std::_Exit(5);
  std::this_thread::sleep_for(std::chrono::seconds(5));
  std::_Exit(0);
}

// A started exchange is under the deadline until its Wait, not only while a call blocks:
// here the host never waits, as it would not if it hung in a device-wide wait behind a
// dead peer's exchange, and the watchdog still ends the process naming the call.
TEST_F(NcclCommunicatorGpu, StartedExchangeStaysUnderTheDeadlineUntilWaited) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // a fresh process: CUDA does not fork
  EXPECT_EXIT(StartAndNeverWait(*streams_), ::testing::ExitedWithCode(CommWatchdog::kExitCode),
              "rank 0: NCCL IAllToAllV on nccl:ep");
}

}  // namespace
}  // namespace mt

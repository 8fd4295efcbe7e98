// tests/parallel/expert_dispatch_fp8_mpi_test.cc: the FP8 expert dispatch (issue 6 item 4,
// docs/fp8.md "Expert dispatch in FP8") at the dispatcher level, run by CTest under
// `mpirun -np 2` (and as a world of one when run directly):
//  - packed E4M3 rows (kernels/quantize.h) unpack to exactly the codes and scales the
//    quantiser gave them, for any row range;
//  - tokens quantised by their own rank and dispatched as packed rows arrive as exactly the
//    operand each expert would have quantised from its gathered FP32 rows (codes and scales
//    bit for bit), and cost (H + 4 ceil(H/128)) / 4H of the FP32 dispatch's row bytes;
//  - the BF16 combine returns the BF16 rounding of the FP32 combine, in half its bytes;
//  - the backward passes of a packed dispatch move the compute dtype and equal the FP32
//    dispatch's bit for bit.
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/bf16.h"
#include "kernels/quantize.h"
#include "tests/parallel/expert_dispatch_checks.h"
#include "tests/parallel/mpi_test_util.h"

namespace mt {
namespace {

using dispatch_checks::RankTokens;
using dispatch_checks::RoutingCase;

// The trainer's fp8 activation scales (trainer/precision.cc): the recipe's round scaling.
constexpr QuantizeOptions kPow2{/*pow2_scales=*/true};

void ExpectSameQuantized(const QuantizedActivation& got, const QuantizedActivation& want,
                         const std::string& what) {
  ASSERT_EQ(got.rows, want.rows) << what;
  ASSERT_EQ(got.cols, want.cols) << what;
  EXPECT_EQ(std::memcmp(got.codes(), want.codes(), want.data.nbytes()), 0) << what << ": codes";
  EXPECT_EQ(std::memcmp(got.scales.data<float>(), want.scales.data<float>(), want.scales.nbytes()),
            0)
      << what << ": scales";
}

// Values whose 1x128 tiles have very different ranges, so each tile gets its own scale.
Tensor RandomRows(int64_t M, int64_t K, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  Tensor x({M, K});
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k)
      x.data<float>()[m * K + k] =
          value(rng) * std::ldexp(1.0f, static_cast<int>((m + k / 128) % 9) - 4);
  return x;
}

TEST(PackedRowsTest, UnpackGivesTheQuantisersCodesAndScales) {
  for (int64_t K : {1, 5, 128, 200, 300}) {
    const int64_t M = 13;
    const Tensor x = RandomRows(M, K, static_cast<uint64_t>(K));
    const QuantizedActivation q = QuantizeActivation(x.data<float>(), M, K, kPow2);
    const Tensor packed = PackActivationRows(q);
    ASSERT_EQ(packed.dtype(), DType::kU8);
    ASSERT_EQ(packed.dim(1), K + 4 * ((K + 127) / 128));
    ASSERT_EQ(PackedRowBytes(K), packed.dim(1));
    ExpectSameQuantized(UnpackActivationRows(packed, 0, M, K), q,
                        "all rows, K " + std::to_string(K));
    // A row range is the quantisation of those rows alone: the tiles are per row.
    const int64_t b = 3, e = 9;
    const QuantizedActivation sub = QuantizeActivation(x.data<float>() + b * K, e - b, K, kPow2);
    ExpectSameQuantized(UnpackActivationRows(packed, b, e, K), sub,
                        "rows [3, 9), K " + std::to_string(K));
    ExpectSameQuantized(UnpackActivationRows(packed, 4, 4, K),
                        QuantizeActivation(x.data<float>(), 0, K, kPow2), "no rows");
  }
}

class Fp8DispatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    LayoutSpec spec;
    spec.dp = mpi_test::Env().world_size;
    spec.ep = spec.dp;
    absl::StatusOr<ProcessGroups> g = mpi_test::MakeGroups(spec);
    ASSERT_TRUE(g.ok()) << g.status();
    groups_ = std::move(*g);
  }
  ProcessGroups groups_;
};

TEST_F(Fp8DispatchTest, ExpertsReceiveTheirOwnFp8OperandInAQuarterOfTheBytes) {
  Communicator& ep = *groups_.ep;
  for (int64_t H : {32, 200, 256}) {
    for (uint64_t seed : {1, 2}) {
      RoutingCase c;
      c.seed = seed;
      c.hidden = H;
      c.empty_rank = seed == 2 && ep.size() > 1 ? 1 : -1;
      const int64_t K = c.topk;
      ExpertDispatcher d = dispatch_checks::MakeDispatcher(ep, c);
      RankTokens mine = dispatch_checks::MakeTokens(c, ep.rank());
      const int64_t T = mine.x.dim(0);
      const QuantizedActivation q = QuantizeActivation(mine.x.data<float>(), T, H, kPow2);
      DispatchHandle h8, h32;
      absl::StatusOr<std::vector<Tensor>> in8 =
          d.Dispatch(PackActivationRows(q), mine.topk, DType::kF32, &h8);
      ASSERT_TRUE(in8.ok()) << in8.status();
      absl::StatusOr<std::vector<Tensor>> in32 = d.Dispatch(mine.x, mine.topk, &h32);
      ASSERT_TRUE(in32.ok()) << in32.status();

      // Each expert's operand = the quantisation of the FP32 rows it gets (the same rows, in
      // the same order, as the FP32 dispatch, which CheckDispatchAndCombine ties to the
      // single-process gather).
      for (int64_t le = 0; le < d.num_local_experts(); ++le) {
        const Tensor& rows32 = (*in32)[le];
        const int64_t n = rows32.dim(0);
        ASSERT_EQ((*in8)[le].dtype(), DType::kU8);
        ASSERT_EQ((*in8)[le].dim(0), n);
        ExpectSameQuantized(
            UnpackActivationRows((*in8)[le], 0, n, H),
            QuantizeActivation(rows32.data<float>(), n, H, kPow2),
            "H " + std::to_string(H) + " expert " + std::to_string(d.first_local_expert() + le));
      }

      // Bytes: the same rows, each PackedRowBytes(H) instead of 4H.
      ASSERT_EQ(h8.stats.rows_sent, h32.stats.rows_sent);
      ASSERT_EQ(h8.stats.rows_received, h32.stats.rows_received);
      EXPECT_EQ(h8.stats.row_bytes_sent, h8.stats.rows_sent * (H + 4 * ((H + 127) / 128)));
      EXPECT_EQ(h32.stats.row_bytes_sent, h32.stats.rows_sent * 4 * H);
      EXPECT_EQ(h8.stats.row_bytes_received, h8.stats.rows_received * PackedRowBytes(H));
      const int64_t sent8 =
          static_cast<int64_t>(dispatch_checks::AllSum(ep, h8.stats.row_bytes_sent));
      const int64_t sent32 =
          static_cast<int64_t>(dispatch_checks::AllSum(ep, h32.stats.row_bytes_sent));
      EXPECT_EQ(sent8 * 4 * H, sent32 * PackedRowBytes(H)) << "H " << H;

      // Combine in BF16: the BF16 rounding of the FP32 combine, half the bytes.
      std::vector<Tensor> out32, out16;
      for (int64_t le = 0; le < d.num_local_experts(); ++le) {
        Tensor y = (*in32)[le].Clone();
        for (int64_t i = 0; i < y.numel(); ++i)
          y.data<float>()[i] =
              dispatch_checks::ExpertFn(d.first_local_expert() + le, y.data<float>()[i]) / 3.0f;
        Tensor codes(y.shape(), DType::kBF16);
        FloatsToBf16(y.data<float>(), static_cast<uint16_t*>(codes.raw()), y.numel());
        out32.push_back(std::move(y));
        out16.push_back(std::move(codes));
      }
      absl::StatusOr<Tensor> slots32 = d.Combine(out32, h8);
      absl::StatusOr<Tensor> slots16 = d.Combine(out16, h8);
      ASSERT_TRUE(slots32.ok()) << slots32.status();
      ASSERT_TRUE(slots16.ok()) << slots16.status();
      ASSERT_EQ(slots16->dtype(), DType::kBF16);
      ASSERT_EQ(slots16->dim(0), T * K);
      EXPECT_EQ(slots16->nbytes() * 2, slots32->nbytes());
      std::vector<uint16_t> want(static_cast<size_t>(slots32->numel()));
      FloatsToBf16(slots32->data<float>(), want.data(), slots32->numel());
      EXPECT_EQ(std::memcmp(slots16->raw(), want.data(), want.size() * sizeof(uint16_t)), 0);

      // Backward of a packed dispatch: the compute dtype, identical to the FP32 dispatch's.
      absl::StatusOr<Tensor> dx8 = d.DispatchBackward(out32, h8);
      absl::StatusOr<Tensor> dx32 = d.DispatchBackward(out32, h32);
      ASSERT_TRUE(dx8.ok() && dx32.ok()) << dx8.status() << dx32.status();
      ASSERT_EQ(dx8->dtype(), DType::kF32);
      EXPECT_EQ(std::memcmp(dx8->raw(), dx32->raw(), dx32->nbytes()), 0);
      absl::StatusOr<std::vector<Tensor>> dc8 = d.CombineBackward(*slots32, h8);
      ASSERT_TRUE(dc8.ok()) << dc8.status();
      for (int64_t le = 0; le < d.num_local_experts(); ++le)
        EXPECT_EQ(std::memcmp((*dc8)[le].raw(), out32[le].raw(), out32[le].nbytes()), 0);
      // The packed rows are no gradients: BF16 expert-input gradients are refused.
      EXPECT_FALSE(d.DispatchBackward(out16, h8).ok());

      if (ep.rank() == 0 && seed == 1)
        std::printf(
            "[fp8 dispatch] H %ld, EP group of %d: %ld row bytes sent in FP8 (E4M3 + "
            "scales) vs %ld in FP32 (%.4f) and %ld in BF16 (%.4f)\n",
            static_cast<long>(H), ep.size(), static_cast<long>(sent8), static_cast<long>(sent32),
            static_cast<double>(sent8) / sent32, static_cast<long>(sent32 / 2),
            2.0 * sent8 / sent32);
    }
  }
}

// The per-row figure at DeepSeek-V3's hidden size (7168) and the layout tests' (32).
TEST(Fp8DispatchBytesTest, PerRowRatio) {
  for (int64_t H : {32, 7168}) {
    const double ratio = static_cast<double>(PackedRowBytes(H)) / (4.0 * H);
    EXPECT_EQ(PackedRowBytes(H), H + 4 * ((H + 127) / 128));
    if (mpi_test::Env().rank != 0) continue;
    std::printf(
        "[fp8 dispatch] H %ld: %ld bytes a row in FP8, %ld in FP32 (%.4f), %ld in BF16 "
        "(%.4f)\n",
        static_cast<long>(H), static_cast<long>(PackedRowBytes(H)), static_cast<long>(4 * H), ratio,
        static_cast<long>(2 * H), 2 * ratio);
  }
}

}  // namespace
}  // namespace mt

// tests/gpu/attention_choice_test.cc: attention.h's choice between cuDNN SDPA and the
// unfused cuBLAS path, and its once-per-shape log, on made-up capabilities (no GPU).
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_cudnn.h"
#include "kernels/cuda/cuda_check.h"  // MT_HAVE_CUDNN, CUDNN_VERSION

namespace mt::cuda {
namespace {

// DeepSeek-V3's MLA at the op table's small size.
AttentionShape Mla() { return {2, 128, 4, 192, 128, 0.1}; }

CudnnSdpaCaps Caps(int sm, int version = kCudnnSdpaMinVersion) { return {true, version, sm}; }

bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

TEST(CudnnSdpaSupports, RefusesWhatTheBuildOrDeviceLacks) {
  const AttentionShape sh = Mla();
  absl::Status s = CudnnSdpaSupports(sh, AttentionDtype::kBF16, {false, 0, 90});
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_TRUE(Contains(std::string(s.message()), "not built with cuDNN")) << s;

  s = CudnnSdpaSupports(sh, AttentionDtype::kBF16, Caps(90, 90100));
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_TRUE(Contains(std::string(s.message()), "cuDNN 9.1.0 < 9.19.0")) << s;

  s = CudnnSdpaSupports(sh, AttentionDtype::kBF16, Caps(75));
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_TRUE(Contains(std::string(s.message()), "sm_75")) << s;
}

TEST(CudnnSdpaSupports, RefusesWhatTheSupportMatrixExcludes) {
  AttentionShape sh = Mla();
  absl::Status s = CudnnSdpaSupports(sh, AttentionDtype::kF32, Caps(90));
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_TRUE(Contains(std::string(s.message()), "fp32 is not an SDPA dtype")) << s;

  // Ada: SDPA backward stops at head dim 128, MLA's Q/K is 192.
  s = CudnnSdpaSupports(sh, AttentionDtype::kBF16, Caps(89));
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_TRUE(Contains(std::string(s.message()), "exceed SDPA backward's 128 on sm_89")) << s;

  sh.Dqk = 196;
  s = CudnnSdpaSupports(sh, AttentionDtype::kBF16, Caps(90));
  EXPECT_TRUE(Contains(std::string(s.message()), "multiples of 8")) << s;

  sh = Mla();
  sh.Dqk = 320;
  s = CudnnSdpaSupports(sh, AttentionDtype::kBF16, Caps(90));
  EXPECT_TRUE(Contains(std::string(s.message()), "exceed SDPA backward's 256 on sm_90")) << s;
}

// Hopper with BF16 MLA is inside cuDNN's support matrix; what refuses it is moetrain's
// missing backend graph. When kCudnnSdpaGraphImplemented turns true this expects OK.
TEST(CudnnSdpaSupports, HopperBf16MlaDependsOnlyOnTheGraph) {
  const absl::Status s = CudnnSdpaSupports(Mla(), AttentionDtype::kBF16, Caps(90));
  if (kCudnnSdpaGraphImplemented) {
    EXPECT_TRUE(s.ok()) << s;
  } else {
    EXPECT_TRUE(absl::IsUnimplemented(s)) << s;
    EXPECT_TRUE(Contains(std::string(s.message()), "not built yet")) << s;
  }
}

TEST(ChooseAttentionPath, UnfusedCarriesCudnnsReason) {
  const AttentionChoice c = ChooseAttentionPath(Mla(), AttentionDtype::kF32, Caps(90));
  EXPECT_EQ(c.path, AttentionPath::kUnfusedCublas);
  EXPECT_EQ(AttentionChoiceLine(Mla(), AttentionDtype::kF32, c),
            "attention: unfused cuBLAS (cuDNN: fp32 is not an SDPA dtype (fp16/bf16/fp8 only)) "
            "[B=2 S=128 N=4 Dqk=192 Dv=128 fp32]");
}

TEST(ChooseAttentionPath, CudnnLine) {
  const AttentionChoice c{AttentionPath::kCudnnSdpa, ""};
  EXPECT_EQ(AttentionChoiceLine(Mla(), AttentionDtype::kBF16, c),
            "attention: cuDNN SDPA [B=2 S=128 N=4 Dqk=192 Dv=128 bf16]");
}

TEST(AttentionChooser, LogsOncePerShapeAndDtype) {
  std::vector<std::string> lines;
  AttentionChooser chooser(Caps(89), [&](const std::string& l) { lines.push_back(l); });
  AttentionShape sh = Mla();
  for (int i = 0; i < 3; ++i) chooser.Choose(sh, AttentionDtype::kBF16);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(Contains(lines[0], "attention: unfused cuBLAS (cuDNN: head dims")) << lines[0];
  chooser.Choose(sh, AttentionDtype::kF32);  // another dtype: another line
  sh.scale = 0.2;                            // the scale does not change the choice
  chooser.Choose(sh, AttentionDtype::kF32);
  sh.S = 256;  // another shape: another line
  chooser.Choose(sh, AttentionDtype::kF32);
  EXPECT_EQ(lines.size(), 3u);
  EXPECT_EQ(chooser.logged(), 3u);
}

TEST(CudnnSdpaCapsOfBuild, ReflectsTheHeaders) {
  const CudnnSdpaCaps caps = CudnnSdpaCapsOfBuild(90);
  EXPECT_EQ(caps.sm, 90);
#ifdef MT_HAVE_CUDNN
  EXPECT_TRUE(caps.built_with_cudnn);
  EXPECT_EQ(caps.cudnn_version, CUDNN_VERSION);
#else
  EXPECT_FALSE(caps.built_with_cudnn);
#endif
}

}  // namespace
}  // namespace mt::cuda

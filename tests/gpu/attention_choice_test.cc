// tests/gpu/attention_choice_test.cc: attention.h's choice between cuDNN SDPA and the
// unfused cuBLAS path, and its once-per-shape log, on made-up capabilities and verifiers
// (no GPU); on a GPU machine, also the real choice for MLA's shape (graph build and
// self-check on the device).
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_cudnn.h"
#include "kernels/cuda/attention_cudnn_backend.h"
#include "kernels/cuda/attention_cudnn_check.h"
#include "kernels/cuda/attention_cudnn_graph.h"
#include "kernels/cuda/cuda_check.h"  // MT_HAVE_CUDNN, CUDNN_VERSION
#include "kernels/cuda/runtime.h"

namespace mt::cuda {
namespace {

// DeepSeek-V3's MLA at the op table's small size.
AttentionShape Mla() { return {2, 128, 4, 192, 128, 0.1}; }

CudnnSdpaCaps Caps(int sm, int version = kCudnnSdpaMinVersion) { return {true, version, sm, ""}; }

bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

TEST(CudnnSdpaSupports, RefusesWhatTheBuildOrDeviceLacks) {
  const AttentionShape sh = Mla();
  absl::Status s = CudnnSdpaSupports(sh, AttentionDtype::kBF16, {false, 0, 90, ""});
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_TRUE(Contains(std::string(s.message()), "not built with cuDNN")) << s;

  s = CudnnSdpaSupports(sh, AttentionDtype::kBF16, Caps(90, 90100));
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_TRUE(Contains(std::string(s.message()), "cuDNN 9.1.0 < 9.16.0")) << s;

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

// The backward head-dim limits are per architecture family (cudnn-frontend's backward
// support surface), not "256 from sm_90 on": sm_12x stops at 128 like Ampere, and
// datacenter Blackwell goes above 128 only for MLA's 192/128.
TEST(CudnnSdpaSupports, HeadDimLimitsFollowTheArchitectureFamily) {
  absl::Status s = CudnnSdpaSupports(Mla(), AttentionDtype::kBF16, Caps(120));
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_TRUE(Contains(std::string(s.message()), "exceed SDPA backward's 128 on sm_120")) << s;

  AttentionShape sh = Mla();
  sh.Dv = 192;  // 192/192: Hopper takes it, Blackwell does not
  EXPECT_TRUE(CudnnSdpaSupports(sh, AttentionDtype::kBF16, Caps(90)).ok());
  s = CudnnSdpaSupports(sh, AttentionDtype::kBF16, Caps(100));
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_TRUE(Contains(std::string(s.message()), "exceed SDPA backward's 128 on sm_100")) << s;

  sh.Dqk = 256;
  sh.Dv = 128;
  EXPECT_TRUE(CudnnSdpaSupports(sh, AttentionDtype::kBF16, Caps(90)).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(CudnnSdpaSupports(sh, AttentionDtype::kBF16, Caps(103))));

  sh.Dqk = sh.Dv = 128;  // 128 and below: every family from sm_80
  for (int sm : {80, 89, 90, 100, 120}) {
    EXPECT_TRUE(CudnnSdpaSupports(sh, AttentionDtype::kBF16, Caps(sm)).ok()) << sm;
  }
}

// Hopper with BF16 MLA is inside cuDNN's support matrix and moetrain's graph: the
// capabilities accept it (the device still has to build and self-check it).
TEST(CudnnSdpaSupports, HopperBf16MlaIsAccepted) {
  EXPECT_TRUE(CudnnSdpaSupports(Mla(), AttentionDtype::kBF16, Caps(90)).ok());
  EXPECT_TRUE(CudnnSdpaSupports(Mla(), AttentionDtype::kBF16, Caps(100)).ok());
  AttentionShape sh = Mla();
  sh.S = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(CudnnSdpaSupports(sh, AttentionDtype::kBF16, Caps(90))));
}

TEST(CudnnSdpaSelfCheck, RunsAllHeadsShortAndFewHeadsLong) {
  AttentionShape sh{8, 4096, 128, 192, 128, 0.07};
  const std::vector<AttentionShape> checks = CudnnSdpaCheckShapes(sh);
  ASSERT_EQ(checks.size(), 2u);
  for (const AttentionShape& c : checks) {
    EXPECT_EQ(c.B, 1);
    EXPECT_EQ(c.Dqk, 192);
    EXPECT_EQ(c.Dv, 128);
    EXPECT_EQ(c.scale, 0.07);
  }
  EXPECT_EQ(checks[0].S, 128);
  EXPECT_EQ(checks[0].N, 128);
  EXPECT_EQ(checks[1].S, 4096);
  EXPECT_EQ(checks[1].N, 4);
  sh.S = 77;  // short sequences are checked whole, once
  ASSERT_EQ(CudnnSdpaCheckShapes(sh).size(), 1u);
  EXPECT_EQ(CudnnSdpaCheckShapes(sh)[0].S, 77);
}

TEST(ChooseAttentionPath, UnfusedCarriesCudnnsReason) {
  const AttentionChoice c = ChooseAttentionPath(Mla(), AttentionDtype::kF32, Caps(90));
  EXPECT_EQ(c.path, AttentionPath::kUnfusedCublas);
  EXPECT_EQ(AttentionChoiceLine(Mla(), AttentionDtype::kF32, c),
            "attention: unfused cuBLAS (cuDNN: fp32 is not an SDPA dtype (fp16/bf16/fp8 only)) "
            "[B=2 S=128 N=4 Dqk=192 Dv=128 fp32]");
}

TEST(ChooseAttentionPath, CudnnLine) {
  const AttentionChoice c{AttentionPath::kCudnnSdpa, "", ""};
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

// Verifiers stand in for the device: they run once per shape the capabilities give to
// cuDNN, never for the others, and their verdict decides the path and the log line.
TEST(AttentionChooser, VerifierDecidesAndRunsOncePerShape) {
  std::vector<std::string> lines;
  int calls = 0;
  AttentionChooser chooser(
      Caps(90), [&](const std::string& l) { lines.push_back(l); },
      [&](const AttentionShape& sh, AttentionDtype) -> absl::StatusOr<std::string> {
        ++calls;
        if (sh.S == 256) {
          return absl::InternalError("self-check B=1 S=128 N=4: dK differs from the unfused path");
        }
        return std::string("self-check B=1 S=128 N=4: max err O 0.004");
      });
  AttentionShape sh = Mla();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(chooser.Choose(sh, AttentionDtype::kBF16).path, AttentionPath::kCudnnSdpa);
  }
  EXPECT_EQ(calls, 1);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0],
            "attention: cuDNN SDPA [B=2 S=128 N=4 Dqk=192 Dv=128 bf16] self-check B=1 S=128 "
            "N=4: max err O 0.004");

  EXPECT_EQ(chooser.Choose(sh, AttentionDtype::kF32).path, AttentionPath::kUnfusedCublas);
  EXPECT_EQ(calls, 1);  // fp32 never reaches the verifier

  sh.S = 256;
  const AttentionChoice& refused = chooser.Choose(sh, AttentionDtype::kBF16);
  EXPECT_EQ(refused.path, AttentionPath::kUnfusedCublas);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(lines.back(),
            "attention: unfused cuBLAS (cuDNN: self-check B=1 S=128 N=4: dK differs from the "
            "unfused path) [B=2 S=256 N=4 Dqk=192 Dv=128 bf16]");
  chooser.Choose(sh, AttentionDtype::kBF16);
  EXPECT_EQ(calls, 2);  // a refusal is cached too
}

// Every tensor and operation descriptor of both graphs is finalized by cuDNN as it is
// added, and that needs no device: this catches attribute types, missing attributes and
// shapes cuDNN's operations reject, on the CPU. (Whether an engine takes the graph is
// only known on a GPU: AttentionOnDevice below.)
TEST(CudnnSdpaGraph, DescriptorsFinalizeWithoutADevice) {
  for (const AttentionShape& sh : {Mla(), AttentionShape{1, 77, 3, 192, 128, 0.1}}) {
    GraphBuilder fwd, bwd;
    AddSdpaForwardGraph(&fwd, sh);
    AddSdpaBackwardGraph(&bwd, sh);
    EXPECT_TRUE(fwd.status().ok()) << fwd.status();
    EXPECT_TRUE(bwd.status().ok()) << bwd.status();
    EXPECT_EQ(fwd.operations(), 14);
    EXPECT_EQ(bwd.operations(), 22);
  }
}

TEST(CudnnSdpaSupports, RefusesWhenTheLibraryIsMissing) {
  CudnnSdpaCaps caps = Caps(90);
  caps.cudnn_version = 0;
  caps.load_error = "libcudnn.so.9 not loadable (no such file)";
  const absl::Status s = CudnnSdpaSupports(Mla(), AttentionDtype::kBF16, caps);
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_EQ(s.message(), "libcudnn.so.9 not loadable (no such file)");
}

// This machine has cuDNN 9 (CI installs it with the toolkit), so the library loads.
TEST(CudnnSdpaCapsOfRuntime, ReportsTheLoadedLibrary) {
  const absl::StatusOr<const CudnnApi*> api = LoadCudnn();
  ASSERT_TRUE(api.ok()) << api.status();
  const CudnnSdpaCaps caps = CudnnSdpaCapsOfRuntime(90);
  EXPECT_EQ(caps.sm, 90);
  EXPECT_TRUE(caps.built_with_cudnn);
  EXPECT_TRUE(caps.load_error.empty()) << caps.load_error;
  EXPECT_EQ(caps.cudnn_version, static_cast<int>((*api)->GetVersion()));
  // dlopen took the major version the headers describe (the backend API's attribute
  // numbering is only stable within one).
  EXPECT_EQ(caps.cudnn_version / 10000, CUDNN_MAJOR);
}

// On a GPU: MLA's shape in BF16 goes through the real graph build and self-check. A
// refusal is a finding for the GPU session, not a broken build: the log line says why,
// and training still runs (unfused), so it fails only under MOETRAIN_REQUIRE_CUDNN_SDPA.
TEST(AttentionOnDevice, MlaBf16TakesCudnnSdpa) {
  if (DeviceCount() == 0) GTEST_SKIP() << "no CUDA device: the real cuDNN choice is skipped";
  absl::StatusOr<DeviceInfo> dev = SelectDevice(0);
  ASSERT_TRUE(dev.ok()) << dev.status();
  std::vector<std::string> lines;
  absl::StatusOr<std::unique_ptr<Attention>> attention =
      Attention::Create(dev->sm, [&](const std::string& l) {
        lines.push_back(l);
        StderrLogSink(l);
      });
  ASSERT_TRUE(attention.ok()) << attention.status();
  for (const AttentionShape& sh : {Mla(), AttentionShape{1, 77, 3, 192, 128, 0.1},
                                   AttentionShape{2, 512, 16, 192, 128, 0.07}}) {
    const AttentionChoice& c = (*attention)->Choose(sh, AttentionDtype::kBF16);
    std::printf("  %s\n", lines.back().c_str());
    if (dev->sm >= 90 && std::getenv("MOETRAIN_REQUIRE_CUDNN_SDPA") != nullptr) {
      EXPECT_EQ(c.path, AttentionPath::kCudnnSdpa) << lines.back();
    }
  }
}

}  // namespace
}  // namespace mt::cuda

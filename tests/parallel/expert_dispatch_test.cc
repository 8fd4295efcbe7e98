// tests/parallel/expert_dispatch_test.cc: the expert dispatcher on one process (EP = 1),
// its phases, and its input checks. The multi-rank cases are expert_dispatch_mpi_test.
#include "parallel/expert_dispatch.h"

#include <cstring>
#include <string>

#include "gtest/gtest.h"
#include "tests/parallel/expert_dispatch_checks.h"

namespace mt {
namespace {

using dispatch_checks::RoutingCase;

TEST(ExpertDispatchTest, SingleRankMatchesGatherAndRoundTrips) {
  LocalCommunicator ep("ep");
  RoutingCase c;
  c.num_experts = 6;
  c.topk = 2;
  ASSERT_NO_FATAL_FAILURE(dispatch_checks::CheckDispatchAndCombine(ep, c));
  ASSERT_NO_FATAL_FAILURE(dispatch_checks::CheckBackwardIsTranspose(ep, c));
  c.empty_rank = 0;  // no tokens at all
  ASSERT_NO_FATAL_FAILURE(dispatch_checks::CheckDispatchAndCombine(ep, c));
  ASSERT_NO_FATAL_FAILURE(dispatch_checks::CheckBackwardIsTranspose(ep, c));
}

// The three phases, run by hand, give the whole pass; on one rank the token exchange is the
// identity and each token is sent once however many of its experts it picked.
TEST(ExpertDispatchTest, PhasesComposeToTheWholePass) {
  LocalCommunicator ep("ep");
  RoutingCase c;
  c.topk = 4;
  ExpertDispatcher d = dispatch_checks::MakeDispatcher(ep, c);
  dispatch_checks::RankTokens tok = dispatch_checks::MakeTokens(c, 0);
  DispatchHandle h;
  absl::StatusOr<Tensor> send = d.DispatchPreprocess(tok.x, tok.topk, &h);
  ASSERT_TRUE(send.ok()) << send.status();
  EXPECT_EQ(send->dim(0), tok.x.dim(0));  // deduped: one row per token, not per slot
  absl::StatusOr<Tensor> recv = d.DispatchExchange(*send, &h);
  ASSERT_TRUE(recv.ok()) << recv.status();
  absl::StatusOr<std::vector<Tensor>> in = d.DispatchPostprocess(*recv, &h);
  ASSERT_TRUE(in.ok()) << in.status();
  int64_t rows = 0;
  for (const Tensor& t : *in) rows += t.dim(0);
  EXPECT_EQ(rows, tok.x.dim(0) * c.topk);  // fanned out on arrival
  EXPECT_EQ(h.stats.max_ranks_per_token, 1);

  DispatchHandle h2;
  absl::StatusOr<std::vector<Tensor>> whole = d.Dispatch(tok.x, tok.topk, &h2);
  ASSERT_TRUE(whole.ok());
  for (size_t e = 0; e < in->size(); ++e)
    ASSERT_EQ(std::memcmp((*in)[e].data<float>(), (*whole)[e].data<float>(), (*in)[e].nbytes()), 0);
}

TEST(ExpertDispatchTest, DoublePrecisionMatchesFloat) {
  LocalCommunicator ep("ep");
  RoutingCase c;
  c.topk = 4;
  ASSERT_NO_FATAL_FAILURE(dispatch_checks::CheckDoubleMatchesFloat(ep, c));
}

TEST(ExpertDispatchTest, BadInputsAreClearErrors) {
  LocalCommunicator ep("ep");
  auto expect = [](const absl::Status& s, const std::string& needle) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(std::string(s.message()).find(needle), std::string::npos) << s.message();
  };
  expect(ExpertDispatcher::Create(nullptr, {.num_experts = 4, .hidden = 2, .topk = 1}).status(),
         "no EP communicator");
  expect(ExpertDispatcher::Create(&ep, {.num_experts = 0, .hidden = 2, .topk = 1}).status(),
         "0 experts do not split evenly");
  expect(ExpertDispatcher::Create(&ep, {.num_experts = 4, .hidden = 2, .topk = 5}).status(),
         "topk at most 4");
  absl::StatusOr<ExpertDispatcher> d =
      ExpertDispatcher::Create(&ep, {.num_experts = 4, .hidden = 2, .topk = 2});
  ASSERT_TRUE(d.ok());
  DispatchHandle h;
  Tensor x({3, 2});
  expect(d->Dispatch(x, {0, 1, 2, 3, 0, 4}, &h).status(),
         "token 2 slot 1 picks expert 4, outside [0, 4)");
  expect(d->Dispatch(x, {0, 1}, &h).status(), "topk has 2 entries, expected T x K = 3 x 2");
  expect(d->Dispatch(Tensor({3, 5}), {0, 1, 2, 3, 0, 1}, &h).status(),
         "expected F32 or F64 [T, 2]");
  ASSERT_TRUE(d->Dispatch(x, {0, 1, 2, 3, 0, 1}, &h).ok());
  expect(d->Combine({Tensor({1, 2})}, h).status(), "got 1 tensors, expected one per local expert");
  expect(d->Combine({Tensor({2, 2}), Tensor({2, 2}), Tensor({9, 2}), Tensor({1, 2})}, h).status(),
         "local expert 2 (global 2) has [9, 2] F32, expected F32 [1, 2]");
  expect(d->CombineBackward(Tensor({5, 2}), h).status(), "expected F32 [T*K, H] = [6, 2]");
}

}  // namespace
}  // namespace mt

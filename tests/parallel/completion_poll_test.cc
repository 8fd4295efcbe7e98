// tests/parallel/completion_poll_test.cc: PollUntilDone ends on completion, on the work's
// own error, and on an error reported elsewhere while the work never finishes (the case a
// plain cudaStreamSynchronize would hang in).
#include "parallel/completion_poll.h"

#include <chrono>
#include <string>
#include <thread>

#include "gtest/gtest.h"

namespace mt {
namespace {

TEST(PollUntilDone, ReturnsOnceTheWorkFinishes) {
  int polls = 0, checks = 0;
  const absl::Status s = PollUntilDone(
      [&]() -> absl::StatusOr<bool> {
        if (polls == 100) std::this_thread::sleep_for(std::chrono::milliseconds(15));
        return ++polls == 5000;  // and on, past the spinning phase
      },
      [&] {
        ++checks;
        return absl::OkStatus();
      });
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(polls, 5000);
  EXPECT_EQ(checks, 4999);  // between polls, not after the last
}

TEST(PollUntilDone, AnAsyncErrorEndsAWaitThatWouldNeverFinish) {
  int checks = 0;
  const absl::Status s = PollUntilDone(
      []() -> absl::StatusOr<bool> { return false; },
      [&] {
        return ++checks < 3000 ? absl::OkStatus() : absl::UnavailableError("remote process exited");
      });
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(std::string(s.message()), "remote process exited");
  EXPECT_EQ(checks, 3000);
}

TEST(PollUntilDone, TheWorksOwnErrorEndsTheWait) {
  const absl::Status s =
      PollUntilDone([]() -> absl::StatusOr<bool> { return absl::InternalError("illegal address"); },
                    [] { return absl::OkStatus(); });
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace mt

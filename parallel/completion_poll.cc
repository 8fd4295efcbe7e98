// parallel/completion_poll.cc: PollUntilDone (completion_poll.h).
#include "parallel/completion_poll.h"

#include <chrono>
#include <thread>

#include "kernels/status.h"

namespace mt {

absl::Status PollUntilDone(const std::function<absl::StatusOr<bool>()>& done,
                           const std::function<absl::Status()>& async_error) {
  constexpr int kSpins = 2000;  // about the length of a small collective, yielding the core
  for (int poll = 0;; ++poll) {
    ASSIGN_OR_RETURN(const bool finished, done());
    if (finished) return absl::OkStatus();
    RETURN_IF_ERROR(async_error());
    if (poll < kSpins)
      std::this_thread::yield();
    else
      std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

}  // namespace mt

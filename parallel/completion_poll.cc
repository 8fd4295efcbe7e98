// parallel/completion_poll.cc: PollUntilDone (completion_poll.h).
#include "parallel/completion_poll.h"

#include <chrono>
#include <thread>

#include "kernels/status.h"

namespace mt {

absl::Status PollUntilDone(const std::function<absl::StatusOr<bool>()>& done,
                           const std::function<absl::Status()>& async_error) {
  // A wait shorter than this spins, as cudaStreamSynchronize does by default: the step's
  // many small collectives (each MoE layer's all-to-all) keep their latency. Past it the
  // wait is on a peer (a pipeline bubble, a straggler), and a sleep's overshoot costs nothing.
  constexpr auto kSpin = std::chrono::milliseconds(10);
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    ASSIGN_OR_RETURN(const bool finished, done());
    if (finished) return absl::OkStatus();
    RETURN_IF_ERROR(async_error());
    if (std::chrono::steady_clock::now() - start < kSpin)
      std::this_thread::yield();
    else
      std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

}  // namespace mt

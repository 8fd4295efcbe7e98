// parallel/communicator_watchdog.cc: the deadline thread (see communicator_watchdog.h).
#include "parallel/communicator_watchdog.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace mt {

CommWatchdog::CommWatchdog(double deadline_s, std::string who)
    : deadline_s_(deadline_s), who_(std::move(who)) {
  if (deadline_s_ > 0) thread_ = std::thread([this] { Loop(); });
}

CommWatchdog::~CommWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

CommWatchdog::Scope CommWatchdog::Watch(const std::string& what) {
  if (deadline_s_ <= 0) return Scope(nullptr);
  std::lock_guard<std::mutex> lock(mu_);
  if (depth_++ == 0) {
    what_ = what;
    start_ = std::chrono::steady_clock::now();
  }
  return Scope(this);
}

CommWatchdog::Scope::~Scope() {
  if (dog_ != nullptr) dog_->End();
}

void CommWatchdog::End() {
  std::lock_guard<std::mutex> lock(mu_);
  --depth_;
}

void CommWatchdog::Loop() {
  // Poll often enough that the job ends within ~10% of the deadline after it passes.
  const auto poll = std::chrono::duration<double>(std::clamp(deadline_s_ / 10, 0.01, 1.0));
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, poll);
    if (stop_ || depth_ == 0) continue;
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    if (waited < deadline_s_) continue;
    std::fprintf(stderr,
                 "[moetrain] %s: %s has not completed after %.1f s (communication deadline "
                 "%.1f s): a peer rank has probably died, hung or taken another code path; "
                 "ending this process so the launcher stops the job\n",
                 who_.c_str(), what_.c_str(), waited, deadline_s_);
    std::fflush(stderr);
    std::fflush(stdout);
    std::_Exit(kExitCode);
  }
}

}  // namespace mt

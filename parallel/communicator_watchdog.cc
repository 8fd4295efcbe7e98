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
    Call c{++calls_, what, std::chrono::steady_clock::now()};
    if (trace_.size() < kTraceLength)
      trace_.push_back(std::move(c));
    else
      trace_[(calls_ - 1) % kTraceLength] = std::move(c);
  }
  return Scope(this);
}

CommWatchdog::Scope::~Scope() {
  if (dog_ != nullptr) dog_->End();
}

void CommWatchdog::End() {
  std::lock_guard<std::mutex> lock(mu_);
  if (--depth_ == 0) {
    Call& c = trace_[(calls_ - 1) % kTraceLength];
    c.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - c.start).count();
  }
}

std::string CommWatchdog::Trace() {
  std::lock_guard<std::mutex> lock(mu_);
  return TraceLocked();
}

std::string CommWatchdog::TraceLocked() const {
  std::string out;
  const auto now = std::chrono::steady_clock::now();
  const uint64_t n = trace_.size();
  for (uint64_t i = 0; i < n; ++i) {  // oldest first
    const Call& c = trace_[(calls_ - n + i) % kTraceLength];
    char when[64];
    if (c.seconds >= 0)
      std::snprintf(when, sizeof(when), "%.3f s", c.seconds);
    else
      std::snprintf(when, sizeof(when), "running %.1f s",
                    std::chrono::duration<double>(now - c.start).count());
    out += (i ? "; #" : "#") + std::to_string(c.number) + " " + c.what + " (" + when + ")";
  }
  return out;
}

void CommWatchdog::Loop() {
  // Poll often enough that the job ends within ~10% of the deadline after it passes.
  const auto poll = std::chrono::duration<double>(std::clamp(deadline_s_ / 10, 0.01, 1.0));
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, poll);
    if (stop_ || depth_ == 0) continue;
    const Call& running = trace_[(calls_ - 1) % kTraceLength];
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - running.start).count();
    if (waited < deadline_s_) continue;
    std::fprintf(stderr,
                 "[moetrain] %s: %s has not completed after %.1f s (communication deadline "
                 "%.1f s): a peer rank has probably died, hung or taken another code path; "
                 "ending this process so the launcher stops the job\n"
                 "[moetrain] %s: its last communication calls, oldest first: %s\n",
                 who_.c_str(), running.what.c_str(), waited, deadline_s_, who_.c_str(),
                 TraceLocked().c_str());
    std::fflush(stderr);
    std::fflush(stdout);
    std::_Exit(kExitCode);
  }
}

}  // namespace mt

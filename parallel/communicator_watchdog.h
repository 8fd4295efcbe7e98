// parallel/communicator_watchdog.h: a deadline on every blocking communication call, so that
// a job whose peer died, hung or took another code path ends with a message instead of
// hanging forever (reliability.md §5.5).
//
// Open MPI's mpirun already aborts the whole job when a process exits abnormally, naming
// the rank ("process rank 1 ... exited on signal 9"). That does not cover a peer that is
// alive but stuck (a deadlock, a rank that skipped a collective, a launcher that does not
// kill the job on one task's exit, such as srun without --kill-on-bad-exit). The watchdog
// does: a thread checks the call in flight and, past the deadline, writes one line naming
// this rank, the call and the group to stderr and ends the process with kExitCode. The
// launcher then tears the job down (mpirun aborts on a non-zero exit), and any rank still
// waiting on this one trips its own watchdog.
//
// The thread never calls MPI (MPI is initialised MPI_THREAD_FUNNELED), so it ends the
// process with std::_Exit rather than MPI_Abort. Before it does, it prints the rank's last
// kTraceLength calls, numbered from the first (a flight recorder, reliability.md §5.5): every
// rank makes the same calls in the same order, so the ranks' numbers show which one diverged
// or where each stopped.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace mt {

class CommWatchdog {
 public:
  static constexpr int kExitCode = 124;  // like timeout(1)
  static constexpr int kTraceLength = 8;

  // `deadline_s` <= 0 disables the watchdog (no thread). `who` names this process in the
  // message, e.g. "rank 3".
  CommWatchdog(double deadline_s, std::string who);
  ~CommWatchdog();
  CommWatchdog(const CommWatchdog&) = delete;
  CommWatchdog& operator=(const CommWatchdog&) = delete;

  // Marks one blocking call from construction to destruction.
  class Scope {
   public:
    Scope() : dog_(nullptr) {}  // times nothing
    Scope(Scope&& other) noexcept : dog_(other.dog_) { other.dog_ = nullptr; }
    Scope& operator=(Scope&&) = delete;
    ~Scope();

   private:
    friend class CommWatchdog;
    explicit Scope(CommWatchdog* dog) : dog_(dog) {}
    CommWatchdog* dog_;
  };

  // `what` describes the call, e.g. "MPI_Allreduce on mpi:dp (group rank 1 of 2)". Calls
  // may nest (a Wait inside a larger exchange); the outermost one is timed.
  [[nodiscard]] Scope Watch(const std::string& what);

  double deadline_s() const { return deadline_s_; }
  // The trace the timeout prints: "#12 MPI_Allreduce on ... (0.003 s); #13 ... (running
  // 600.1 s)", oldest first.
  std::string Trace();

 private:
  struct Call {
    uint64_t number = 0;  // 1 for the process's first call
    std::string what;
    std::chrono::steady_clock::time_point start;
    double seconds = -1;  // -1 while running
  };
  void End();
  void Loop();
  std::string TraceLocked() const;

  const double deadline_s_;
  const std::string who_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  int depth_ = 0;  // calls in flight (nested)
  uint64_t calls_ = 0;
  std::vector<Call> trace_;  // ring of the last kTraceLength outermost calls
  std::thread thread_;
};

}  // namespace mt

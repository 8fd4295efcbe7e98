// parallel/completion_poll.h: waiting for work on a device by polling it, so that an error
// reported elsewhere while it runs ends the wait with that error instead of a hang.
//
// Why: an NCCL operation whose peer failed (a dead node, a remote abort, a network error)
// may never finish; cudaStreamSynchronize would wait forever. NCCL reports such failures
// through ncclCommGetAsyncError, which must be polled while the stream runs (PyTorch's NCCL
// watchdog does this under TORCH_NCCL_ASYNC_ERROR_HANDLING; reliability.md §5.5). Work that
// simply never finishes, with no error anywhere, is the CommWatchdog's (communicator_watchdog.h):
// the caller holds its Scope around the wait.
#pragma once

#include <functional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mt {

// Polls `done` (true: finished; an error ends the wait with it) and, between polls,
// `async_error` (non-OK ends the wait with it). Spins for the first 10 ms, then sleeps
// 50 us between polls, so that short collectives keep their latency and long waits cost
// no core.
absl::Status PollUntilDone(const std::function<absl::StatusOr<bool>()>& done,
                           const std::function<absl::Status()>& async_error);

}  // namespace mt

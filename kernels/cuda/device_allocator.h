// kernels/cuda/device_allocator.h: a caching allocator for device memory.
//
// The training step allocates the same sizes every step (activations, workspaces, expert
// buffers whose sizes vary with routing but fall into a few size classes). cudaMalloc and
// cudaFree synchronise the device, so after the first steps ("warm-up") every request must
// be served from blocks freed earlier. Requests are rounded up to a size class (4 classes
// per power of two, at least 512 bytes: at most 25% waste); each class has a free list.
// A request whose class has no free block takes the smallest free block of a larger class
// up to twice its own: expert buffers sized by routing move between neighbouring classes
// from step to step, and a cudaMalloc for each new class would synchronise the device
// mid-step. Only a request no cached block can serve goes to the raw allocator; if that
// fails, a cached block of any larger class is taken, and only then is every cached block
// released and the raw allocation retried once.
//
// The bookkeeping is plain C++ over an injected RawAllocator, so it is tested on the CPU
// (tests/gpu/device_allocator_test.cc); kernels/cuda/runtime.h supplies the cudaMalloc one.
//
// NOTE: blocks are stream-ordered to one stream (the compute stream): a block freed by the
// host may be handed out again while kernels that used it are still queued, which is safe
// only when its next user runs on the same stream. A block used on the communication
// stream must be freed only after an event on that stream has been waited for.
//
// Example:
//   CudaRawAllocator raw;                  // runtime.h
//   CachingAllocator alloc(&raw);
//   ASSIGN_OR_RETURN(void* p, alloc.Allocate(bytes));
//   ...
//   alloc.Free(p);                          // back to its free list, not to cudaFree
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"

namespace mt::cuda {

// Where the memory really comes from (cudaMalloc on a GPU; a fake in tests).
class RawAllocator {
 public:
  virtual ~RawAllocator() = default;
  // ResourceExhausted when the device is out of memory.
  virtual absl::StatusOr<void*> Allocate(size_t bytes) = 0;
  virtual void Free(void* ptr) = 0;
};

class CachingAllocator {
 public:
  struct Stats {
    size_t current_bytes = 0;   // handed out to callers now (in size-class bytes)
    size_t peak_bytes = 0;      // max of current_bytes since construction or ResetPeak
    size_t reserved_bytes = 0;  // held from the raw allocator (in use + cached)
    int64_t raw_allocs = 0;     // calls that reached the raw allocator (successful)
    int64_t raw_frees = 0;
    int64_t cache_hits = 0;               // requests served from a free list
    int64_t oversize_hits = 0;            // ... of those, from a larger class's block
    int64_t raw_allocs_after_warmup = 0;  // raw allocations since MarkWarmupDone(): want 0
  };

  explicit CachingAllocator(RawAllocator* raw) : raw_(raw) {}
  // Returns every cached block; blocks still handed out are leaked to the raw allocator's
  // owner (freeing memory a kernel may still use would be worse).
  ~CachingAllocator();
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // The size class a request of `bytes` is rounded up to (0 stays 0).
  static size_t SizeClass(size_t bytes);

  // A block of at least `bytes` (nullptr for 0 bytes). ResourceExhausted names the request,
  // what is in use and what is reserved.
  absl::StatusOr<void*> Allocate(size_t bytes);
  // Back to its size class's free list. Aborts on a pointer this allocator did not hand out.
  void Free(void* ptr);
  // Returns every cached (free) block to the raw allocator.
  void ReleaseCached();
  // From now on raw allocations are counted in Stats::raw_allocs_after_warmup.
  void MarkWarmupDone();
  void ResetPeak();
  Stats stats() const;

 private:
  void ReleaseCachedLocked();
  // Pops the smallest cached block of class in [lo, hi]; nullptr if there is none. Its
  // class goes to *size.
  void* TakeCachedLocked(size_t lo, size_t hi, size_t* size);

  RawAllocator* raw_;  // not owned
  mutable std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;  // size class -> cached blocks
  std::unordered_map<void*, size_t> in_use_;   // block -> its size class
  bool warm_ = false;
  Stats stats_;
};

}  // namespace mt::cuda

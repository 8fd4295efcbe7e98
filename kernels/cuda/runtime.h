// kernels/cuda/runtime.h: the device a rank uses, its streams and events, pinned host
// memory, and the cudaMalloc-backed raw allocator under CachingAllocator.
//
// One process drives one GPU. The launcher's local rank (parallel/launch_env.h reads it from
// Open MPI, Slurm or torchrun variables) picks the device: with one visible device (the
// launcher set CUDA_VISIBLE_DEVICES per rank) every rank takes device 0, otherwise local
// rank r takes device r. Two streams: compute (kernels, GEMMs) and comm (NCCL), ordered by
// events, so the expert all-to-all can overlap the next micro-batch's compute.
//
// Failures that a user can cause (no device, more ranks than devices, out of memory) return
// a Status; a failing CUDA call after that aborts through CUDA_CHECK (cuda_check.h).
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <memory>

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/cuda/device_allocator.h"

namespace mt::cuda {

struct DeviceInfo {
  int index = -1;
  std::string name;        // "NVIDIA H200"
  int sm = 0;              // compute capability as 10 * major + minor: 90, 89, ...
  int num_sms = 0;         // multiprocessors
  size_t total_bytes = 0;  // global memory
  size_t l2_bytes = 0;
};

// The number of visible CUDA devices; 0 (not an error) when there is no driver or device.
int DeviceCount();
// The device for `local_rank` among `count` visible devices (the rule above), or
// FailedPrecondition naming both when the node has fewer devices than ranks.
absl::StatusOr<int> DeviceForLocalRank(int local_rank, int count);
// Picks the device for `local_rank`, makes it current (cudaSetDevice) and describes it.
absl::StatusOr<DeviceInfo> SelectDevice(int local_rank);

// cudaMalloc / cudaFree on the current device.
class CudaRawAllocator : public RawAllocator {
 public:
  absl::StatusOr<void*> Allocate(size_t bytes) override;
  void Free(void* ptr) override;
};

// A timing-free event (cheapest to record and wait on); with timing for benchmarks.
class Event {
 public:
  explicit Event(bool timing = false);
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  void Record(cudaStream_t stream);
  // `stream` waits (on the device, the host does not block) until this event completes.
  void BlockStream(cudaStream_t stream) const;
  void Synchronize() const;
  // Milliseconds from `start` to this event (both recorded with timing = true).
  float ElapsedMsSince(const Event& start) const;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

// The compute and communication streams of one rank. The comm stream has the higher
// priority: a pending all-to-all should not queue behind a long GEMM's blocks.
class Streams {
 public:
  Streams();
  ~Streams();
  Streams(const Streams&) = delete;
  Streams& operator=(const Streams&) = delete;

  cudaStream_t compute() const { return compute_; }
  cudaStream_t comm() const { return comm_; }
  // The comm stream waits for everything enqueued on compute so far (e.g. the dispatch
  // buffer is written), and the other way round (e.g. the received tokens have landed).
  void CommWaitsForCompute();
  void ComputeWaitsForComm();
  void Synchronize() const;

 private:
  cudaStream_t compute_ = nullptr;
  cudaStream_t comm_ = nullptr;
  Event compute_done_, comm_done_;
};

// Page-locked host memory: the only kind cudaMemcpyAsync copies without a staging copy,
// so the data loader's token batches go to the device while the previous step runs.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  // ResourceExhausted when the host cannot lock `bytes`.
  static absl::StatusOr<PinnedBuffer> Create(size_t bytes);
  ~PinnedBuffer();
  PinnedBuffer(PinnedBuffer&& other) noexcept;
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  void* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

// Host-to-device copies of small pageable buffers through a ring of pinned slots. From
// pageable memory cudaMemcpyAsync first waits for the stream, so each micro-batch's token
// ids (and the MTP modules' shifted ones, mid-forward) would stall the host until the GPU
// drained its queue; through a slot the copy is queued like a kernel. A slot is written
// again only after the copy that last read it has completed (its event).
class UploadStaging {
 public:
  static constexpr int kSlots = 8;
  static constexpr size_t kSlotBytes = size_t{1} << 20;
  // ResourceExhausted when the host cannot lock the slots.
  static absl::StatusOr<std::unique_ptr<UploadStaging>> Create();
  // Copies src [bytes] to device dst in stream order; src may be reused at once. False,
  // doing nothing, when bytes > kSlotBytes (the caller copies from pageable memory).
  bool Upload(const void* src, void* dst, size_t bytes, cudaStream_t stream);

 private:
  UploadStaging() = default;
  PinnedBuffer pinned_;                  // [kSlots * kSlotBytes]
  std::array<Event, kSlots> read_done_;  // per slot: its last copy has completed
  int next_ = 0;
};

}  // namespace mt::cuda

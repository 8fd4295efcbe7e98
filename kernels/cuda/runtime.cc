// kernels/cuda/runtime.cc: device selection, streams, events, pinned memory, cudaMalloc.
#include "kernels/cuda/runtime.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/status.h"

namespace mt::cuda {

int DeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // "no device" / "no driver" is sticky until read; clear it
    return 0;
  }
  return count;
}

absl::StatusOr<int> DeviceForLocalRank(int local_rank, int count) {
  if (count <= 0) return absl::FailedPreconditionError("no CUDA device is visible");
  if (local_rank < 0) {
    return absl::InvalidArgumentError(absl::StrCat("local rank ", local_rank, " is negative"));
  }
  if (count == 1) return 0;  // the launcher gave each rank its own CUDA_VISIBLE_DEVICES
  if (local_rank >= count) {
    return absl::FailedPreconditionError(
        absl::StrCat("local rank ", local_rank, " has no GPU: this node shows ", count,
                     " CUDA devices; start at most ", count,
                     " ranks per node or give each rank one device with CUDA_VISIBLE_DEVICES"));
  }
  return local_rank;
}

absl::StatusOr<DeviceInfo> SelectDevice(int local_rank) {
  ASSIGN_OR_RETURN(const int device, DeviceForLocalRank(local_rank, DeviceCount()));
  CUDA_CHECK(cudaSetDevice(device));
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  DeviceInfo info;
  info.index = device;
  info.name = prop.name;
  info.sm = prop.major * 10 + prop.minor;
  info.num_sms = prop.multiProcessorCount;
  info.total_bytes = prop.totalGlobalMem;
  info.l2_bytes = static_cast<size_t>(prop.l2CacheSize);
  return info;
}

absl::StatusOr<void*> CudaRawAllocator::Allocate(size_t bytes) {
  void* ptr = nullptr;
  const cudaError_t err = cudaMalloc(&ptr, bytes);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // an OOM is recoverable: clear it so later checks do not trip
    return absl::ResourceExhaustedError(absl::StrCat("cudaMalloc(", bytes, "): out of memory"));
  }
  CUDA_CHECK(err);
  return ptr;
}

void CudaRawAllocator::Free(void* ptr) { CUDA_CHECK(cudaFree(ptr)); }

Event::Event(bool timing) {
  CUDA_CHECK(cudaEventCreateWithFlags(&event_, timing ? cudaEventDefault : cudaEventDisableTiming));
}

Event::~Event() {
  if (event_ != nullptr) cudaEventDestroy(event_);
}

void Event::Record(cudaStream_t stream) { CUDA_CHECK(cudaEventRecord(event_, stream)); }

void Event::BlockStream(cudaStream_t stream) const {
  CUDA_CHECK(cudaStreamWaitEvent(stream, event_, 0));
}

void Event::Synchronize() const { CUDA_CHECK(cudaEventSynchronize(event_)); }

float Event::ElapsedMsSince(const Event& start) const {
  float ms = 0;
  CUDA_CHECK(cudaEventElapsedTime(&ms, start.event_, event_));
  return ms;
}

Streams::Streams() {
  int least = 0, greatest = 0;  // numerically lower = higher priority
  CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  CUDA_CHECK(cudaStreamCreateWithPriority(&compute_, cudaStreamNonBlocking, least));
  CUDA_CHECK(cudaStreamCreateWithPriority(&comm_, cudaStreamNonBlocking, greatest));
}

Streams::~Streams() {
  if (compute_ != nullptr) cudaStreamDestroy(compute_);
  if (comm_ != nullptr) cudaStreamDestroy(comm_);
}

void Streams::CommWaitsForCompute() {
  compute_done_.Record(compute_);
  compute_done_.BlockStream(comm_);
}

void Streams::ComputeWaitsForComm() {
  comm_done_.Record(comm_);
  comm_done_.BlockStream(compute_);
}

void Streams::Synchronize() const {
  CUDA_CHECK(cudaStreamSynchronize(compute_));
  CUDA_CHECK(cudaStreamSynchronize(comm_));
}

absl::StatusOr<PinnedBuffer> PinnedBuffer::Create(size_t bytes) {
  PinnedBuffer b;
  if (bytes == 0) return b;
  const cudaError_t err = cudaHostAlloc(&b.data_, bytes, cudaHostAllocDefault);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return absl::ResourceExhaustedError(
        absl::StrCat("cudaHostAlloc(", bytes, "): ", cudaGetErrorString(err)));
  }
  b.size_ = bytes;
  return b;
}

absl::StatusOr<std::unique_ptr<UploadStaging>> UploadStaging::Create() {
  std::unique_ptr<UploadStaging> s(new UploadStaging());
  ASSIGN_OR_RETURN(s->pinned_, PinnedBuffer::Create(kSlots * kSlotBytes));
  return s;
}

bool UploadStaging::Upload(const void* src, void* dst, size_t bytes, cudaStream_t stream) {
  if (bytes > kSlotBytes) return false;
  if (bytes == 0) return true;
  const int slot = next_;
  next_ = (next_ + 1) % kSlots;
  read_done_[slot].Synchronize();  // an event never recorded is complete
  char* staged = static_cast<char*>(pinned_.data()) + slot * kSlotBytes;
  std::memcpy(staged, src, bytes);
  CUDA_CHECK(cudaMemcpyAsync(dst, staged, bytes, cudaMemcpyHostToDevice, stream));
  read_done_[slot].Record(stream);
  return true;
}

PinnedBuffer::~PinnedBuffer() {
  if (data_ != nullptr) cudaFreeHost(data_);
}

PinnedBuffer::PinnedBuffer(PinnedBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) cudaFreeHost(data_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

}  // namespace mt::cuda

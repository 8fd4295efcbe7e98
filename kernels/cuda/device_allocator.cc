// kernels/cuda/device_allocator.cc: size classes, free lists and the statistics.
#include "kernels/cuda/device_allocator.h"

#include <algorithm>
#include <bit>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/status.h"

namespace mt::cuda {
namespace {

constexpr size_t kMinBlock = 512;  // cudaMalloc aligns to 256; 512 keeps tiny requests apart
constexpr int kClassesPerOctave = 4;
// A request may take a cached block of up to this many times its class (see the header).
constexpr size_t kMaxOversize = 2;
static_assert(std::has_single_bit(kMinBlock) && kMinBlock >= kClassesPerOctave,
              "the minimum block must split evenly into the classes of its octave");

}  // namespace

size_t CachingAllocator::SizeClass(size_t bytes) {
  if (bytes == 0) return 0;
  if (bytes <= kMinBlock) return kMinBlock;
  // Octave [2^e, 2^(e+1)) is split into kClassesPerOctave equal steps of 2^e / 4.
  const size_t octave = std::bit_floor(bytes);
  const size_t step = octave / kClassesPerOctave;
  return (bytes + step - 1) / step * step;
}

CachingAllocator::~CachingAllocator() {
  std::lock_guard<std::mutex> lock(mu_);
  ReleaseCachedLocked();
}

absl::StatusOr<void*> CachingAllocator::Allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  const size_t want = SizeClass(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  size_t size = want;  // the class of the block handed out
  void* ptr = TakeCachedLocked(want, kMaxOversize * want, &size);
  if (ptr == nullptr) {
    absl::StatusOr<void*> raw = raw_->Allocate(want);
    if (!raw.ok() && absl::IsResourceExhausted(raw.status())) {
      // Out of memory: a larger cached block of any class beats releasing them all (which
      // synchronises the device); failing that, the cached blocks may add up to what is
      // missing, so give them back.
      ptr = TakeCachedLocked(want, SIZE_MAX, &size);
      if (ptr == nullptr) {
        ReleaseCachedLocked();
        raw = raw_->Allocate(want);
      }
    }
    if (ptr == nullptr) {
      if (!raw.ok()) {
        return absl::Status(
            raw.status().code(),
            absl::StrCat("device allocation of ", bytes, " bytes (class ", want, ") failed with ",
                         stats_.current_bytes, " bytes in use and ", stats_.reserved_bytes,
                         " reserved: ", raw.status().message()));
      }
      ptr = *raw;
      ++stats_.raw_allocs;
      if (warm_) ++stats_.raw_allocs_after_warmup;
      stats_.reserved_bytes += want;
    }
  }
  in_use_.emplace(ptr, size);
  stats_.current_bytes += size;
  stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.current_bytes);
  return ptr;
}

void* CachingAllocator::TakeCachedLocked(size_t lo, size_t hi, size_t* size) {
  for (auto it = free_.lower_bound(lo); it != free_.end() && it->first <= hi; ++it) {
    if (it->second.empty()) continue;
    void* ptr = it->second.back();
    it->second.pop_back();
    *size = it->first;
    ++stats_.cache_hits;
    if (it->first != lo) ++stats_.oversize_hits;
    return ptr;
  }
  return nullptr;
}

void CachingAllocator::Free(void* ptr) {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = in_use_.find(ptr);
  MT_CHECK(it != in_use_.end(), "CachingAllocator::Free of a pointer it did not hand out");
  free_[it->second].push_back(ptr);
  stats_.current_bytes -= it->second;
  in_use_.erase(it);
}

void CachingAllocator::ReleaseCached() {
  std::lock_guard<std::mutex> lock(mu_);
  ReleaseCachedLocked();
}

void CachingAllocator::ReleaseCachedLocked() {
  for (auto& [size, blocks] : free_) {
    for (void* p : blocks) {
      raw_->Free(p);
      ++stats_.raw_frees;
      stats_.reserved_bytes -= size;
    }
    blocks.clear();
  }
  free_.clear();
}

void CachingAllocator::MarkWarmupDone() {
  std::lock_guard<std::mutex> lock(mu_);
  warm_ = true;
}

void CachingAllocator::ResetPeak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_bytes = stats_.current_bytes;
}

CachingAllocator::Stats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace mt::cuda

// trainer/rng.h: layout-invariant random numbers.
//
// Every random number is a pure function of (seed, stream, index): the stream is a hash of
// a global name (a tensor's Hugging Face name, "data", "generate"), the index a global
// position (element index, sample index). No generator state depends on rank or call
// order, so any parallel layout starts from the same weights and sees the same data, which
// is what makes "PP2 x EP2 x DP2 equals one process" testable.
#pragma once

#include <cstdint>
#include <string_view>

namespace mt {

// SplitMix64 finaliser: a bijective 64-bit mix with good avalanche.
inline uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// FNV-1a, to turn a name into a stream id.
inline uint64_t HashName(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

inline uint64_t RandomBits(uint64_t seed, uint64_t stream, uint64_t index) {
  return Mix64(Mix64(seed ^ Mix64(stream)) ^ index);
}

// Uniform in (0, 1): never exactly 0, so log() is safe.
inline double RandomUniform(uint64_t seed, uint64_t stream, uint64_t index) {
  return (static_cast<double>(RandomBits(seed, stream, index) >> 11) + 0.5) * 0x1.0p-53;
}

// Standard normal by Box-Muller over two independent uniforms.
double RandomNormal(uint64_t seed, uint64_t stream, uint64_t index);

}  // namespace mt

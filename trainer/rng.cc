#include "trainer/rng.h"

#include <cmath>
#include <numbers>

namespace mt {

double RandomNormal(uint64_t seed, uint64_t stream, uint64_t index) {
  double u1 = RandomUniform(seed, stream, 2 * index);
  double u2 = RandomUniform(seed, stream, 2 * index + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

}  // namespace mt

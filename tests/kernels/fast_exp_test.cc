// FastExp (kernels/fast_exp.h) against std::exp on its whole domain x <= 0.
#include <cmath>
#include <limits>

#include "gtest/gtest.h"
#include "kernels/fast_exp.h"

namespace mt {
namespace {

TEST(FastExp, WithinTwoUlpOnTheNormalRange) {
  double worst = 0;
  for (float x = -87.0f; x <= 0.0f; x += 0.0009765625f) {
    const double want = std::exp(static_cast<double>(x));
    const double rel = std::fabs(FastExp(x) - want) / want;
    worst = std::max(worst, rel);
  }
  EXPECT_LT(worst, 2.5e-7) << "2 ulp of float is 2.4e-7";
  EXPECT_EQ(FastExp(0.0f), 1.0f);
}

TEST(FastExp, UnderflowsToZeroNotGarbage) {
  for (float x : {-88.0f, -100.0f, -1000.0f, -1e6f})
    EXPECT_GE(FastExp(x), 0.0f) << x;
  EXPECT_EQ(FastExp(-1000.0f), 0.0f);
  EXPECT_EQ(FastExp(-1e7f), 0.0f);  // the documented domain ends here
}

TEST(FastExp, DoubleStaysExact) {
  EXPECT_EQ(ExpNonPositive(-1.5), std::exp(-1.5));
}

}  // namespace
}  // namespace mt

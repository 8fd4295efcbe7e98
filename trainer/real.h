// trainer/real.h: the element type of the model code, chosen at compile time.
//
// The trainer library is compiled twice: with float (what training runs) and with double
// (MT_REAL_F64, what the finite-difference gradient checks run, so a check is not drowned
// in float32 rounding). The inline namespace keeps the two builds' symbols apart, so one
// test binary can never silently mix them.
#pragma once

#include "kernels/tensor.h"

#ifdef MT_REAL_F64
#define MT_REAL_NS r64
#else
#define MT_REAL_NS r32
#endif

namespace mt {
inline namespace MT_REAL_NS {
#ifdef MT_REAL_F64
using Real = double;
#else
using Real = float;
#endif
inline constexpr DType kRealDType = DTypeOf<Real>();
}  // namespace MT_REAL_NS
}  // namespace mt

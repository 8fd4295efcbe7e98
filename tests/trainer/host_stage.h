// tests/trainer/host_stage.h: one pipeline stage of the module model (ModelChunk) with its own
// parameters, copied by name from a whole Model, for the device stage tests to run beside
// DeviceModel stages or to hand one (device_stage_test.cc, device_pipeline_mpi_test.cc).
#pragma once

#include <cstring>

#include "gtest/gtest.h"
#include "trainer/model.h"
#include "trainer/model_chunk.h"

namespace mt::testing_stage {

inline ParamStore& WithPrecision(ParamStore& ps, const PrecisionPolicy* precision) {
  ps.set_precision(precision);
  return ps;
}

// Stage `stage` of `num_stages` with the whole model's values, by name; `precision` (and
// `dispatcher`, with which the stage holds only its EP rank's experts) must outlive it.
struct HostStage {
  HostStage(const ModelConfig& m, int stage, Model& whole, const PrecisionPolicy* precision,
            int num_stages = 2, ExpertDispatcher* dispatcher = nullptr)
      : ps(/*seed=*/1, m.initializer_range),
        chunk(WithPrecision(ps, precision), m, MakeStageSpec(m, stage, num_stages), dispatcher) {
    for (const auto& p : ps.all()) {
      const Param* src = whole.params().Find(p->name);
      EXPECT_NE(src, nullptr) << p->name;
      if (src) std::memcpy(p->value.raw(), src->value.raw(), p->value.nbytes());
    }
  }
  ParamStore ps;
  ModelChunk chunk;  // registers the stage's parameters in ps
};

inline bool SameBits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// Every trainable gradient of `a` equals the same parameter's in `b` bit for bit; returns
// how many were compared.
inline int ExpectSameGrads(ParamStore& a, ParamStore& b, const std::string& when) {
  int n = 0;
  for (const auto& p : a.all()) {
    if (!p->trainable) continue;
    const Param* q = b.Find(p->name);
    EXPECT_NE(q, nullptr) << p->name;
    if (!q) continue;
    EXPECT_TRUE(SameBits(p->grad, q->grad)) << when << ": " << p->name;
    ++n;
  }
  return n;
}

}  // namespace mt::testing_stage

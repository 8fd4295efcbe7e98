// trainer/config_json.h: a validated Config as JSON, in the shape of its YAML (the model
// section as Hugging Face config.json keys, schedules as their segment lists), so that a
// run's metrics file can carry the configuration it ran with (see metrics.h).
#pragma once

#include "nlohmann/json.hpp"
#include "trainer/config.h"

namespace mt {

nlohmann::json ConfigToJson(const Config& config);

}  // namespace mt

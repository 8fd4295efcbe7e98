// trainer/report_png.h: a report Figure as a PNG file, drawn with Cairo (`report --png`).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "trainer/report_figure.h"

namespace mt::report {

// Writes `figure` at its pixel size (times `scale`) to `path`.
absl::Status WriteFigurePng(const Figure& figure, const std::string& path, double scale = 1.0);

}  // namespace mt::report

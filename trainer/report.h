// trainer/report.h: `moetrain report`: one self-contained HTML page (inline SVG, no
// scripts, nothing fetched) about a training run, and optionally the same charts as PNGs.
//
// Charts: training and validation loss, MTP loss, balance loss, learning rate, grad norm,
// tokens/s and MFU against tokens; per MoE layer a heatmap of expert load / mean load
// (experts x logged steps) and the router biases' trajectories; then the run's summary,
// checkpoints and configuration.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "trainer/report_data.h"
#include "trainer/report_figure.h"

namespace mt::report {

// Every chart of the report, in page order. Heatmap ids are "layerNN_load", bias charts
// "layerNN_bias" (NN: the model layer index).
std::vector<Figure> ReportFigures(const RunData& run);

// The whole page.
std::string ReportHtml(const RunData& run, const std::vector<Figure>& figures);

// Writes the page to html_path and, if png_dir is not empty, each figure to
// png_dir/<id>.png (png_dir is created).
absl::Status WriteReport(const RunData& run, const std::string& html_path,
                         const std::string& png_dir);

}  // namespace mt::report

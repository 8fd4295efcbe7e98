// trainer/report_figure.h: the charts of `moetrain report` as plain drawing lists.
//
// A Figure is rectangles, polylines and text in pixel coordinates (origin top left),
// drawn in that order; report_svg.cc turns one into inline SVG and report_png.cc into a
// PNG through Cairo, so the HTML report and the PNG files show the same pictures.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace mt::report {

struct Color {
  uint8_t r = 0, g = 0, b = 0;
};

struct Rect {
  double x = 0, y = 0, w = 0, h = 0;
  Color fill;
  std::string cls;    // SVG class ("cell" for heatmap cells), empty for none
  std::string title;  // hover text in the HTML report
};

struct Polyline {
  std::vector<std::pair<double, double>> points;
  Color stroke;
  double width = 1;
  bool dashed = false;
};

struct Text {
  enum class Anchor { kStart, kMiddle, kEnd };
  double x = 0, y = 0;  // baseline position of the anchor
  std::string text;
  double size = 12;
  Anchor anchor = Anchor::kStart;
  bool bold = false;
  bool vertical = false;  // rotated 90 degrees counter-clockwise about (x, y)
  Color color{40, 40, 40};
};

struct Figure {
  std::string id;    // file stem of its PNG, HTML element id
  std::string kind;  // "chart" or "heatmap": SVG class
  double width = 0, height = 0;
  std::vector<Rect> rects;
  std::vector<Polyline> lines;
  std::vector<Text> texts;
};

// One curve of a line chart; non-finite points are left out.
struct Series {
  std::string name;
  std::vector<double> x, y;
  Color color;
  bool dashed = false;
  bool markers = false;  // small squares at the points (sparse series such as validation)
};

struct LineChartOptions {
  std::string id, title, x_label, y_label;
  double width = 560, height = 300;
  bool legend = true;
};

Figure LineChart(const LineChartOptions& options, const std::vector<Series>& series);

// Experts (rows) x records (columns); ratio[t][e] = load of expert e / mean load in record
// t. Colour is log2(ratio) on a diverging scale: white at 1 (balanced), red above, blue
// below, saturating at 4x and 1/4x. More than max_columns records are averaged into
// max_columns columns, so the cell count is experts x min(records, max_columns).
struct HeatmapOptions {
  std::string id, title;
  double width = 1160;
  int max_columns = 300;
};
Figure Heatmap(const HeatmapOptions& options, const std::vector<int64_t>& steps,
               const std::vector<std::vector<double>>& ratio);

// The colour of a load / mean ratio on the heatmap's scale.
Color LoadColor(double ratio);

// Distinct colours for series k of n.
Color SeriesColor(size_t k, size_t n);

// Ticks at 1, 2 or 5 times a power of ten covering [lo, hi] (about `target` of them).
std::vector<double> NiceTicks(double lo, double hi, int target);

// Short tick labels: 1.5M, 20K, 0.003, 1e-05.
std::string FormatTick(double v);

}  // namespace mt::report

#include "trainer/report_figure.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace mt::report {
namespace {

constexpr Color kWhite{255, 255, 255};
constexpr Color kGrid{225, 225, 225};
constexpr Color kAxis{120, 120, 120};

Color Mix(Color a, Color b, double t) {
  auto ch = [t](uint8_t x, uint8_t y) {
    return static_cast<uint8_t>(std::lround(x + (static_cast<double>(y) - x) * t));
  };
  return {ch(a.r, b.r), ch(a.g, b.g), ch(a.b, b.b)};
}

Text Label(double x, double y, std::string s, double size,
           Text::Anchor anchor = Text::Anchor::kStart) {
  Text t;
  t.x = x;
  t.y = y;
  t.text = std::move(s);
  t.size = size;
  t.anchor = anchor;
  return t;
}

Polyline Segment(double x0, double y0, double x1, double y1, Color c, double width = 1) {
  return {{{x0, y0}, {x1, y1}}, c, width, false};
}

// [lo, hi] of the finite values, widened when empty or flat so that a scale exists.
std::pair<double, double> Range(const std::vector<Series>& series, bool x_axis) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const Series& s : series)
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      const double v = x_axis ? s.x[i] : s.y[i];
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  if (lo > hi) return {0, 1};
  if (lo == hi) {
    const double pad = lo == 0 ? 1 : std::abs(lo) * 0.1;
    return {lo - pad, hi + pad};
  }
  if (!x_axis) {  // a little air above and below the curves
    const double pad = (hi - lo) * 0.05;
    return {lo - pad, hi + pad};
  }
  return {lo, hi};
}

}  // namespace

std::vector<double> NiceTicks(double lo, double hi, int target) {
  std::vector<double> ticks;
  if (!(hi > lo) || target < 1) return ticks;
  const double raw = (hi - lo) / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * mag) {
      step = m * mag;
      break;
    }
  // Multiples of step, not a running sum, so that errors do not accumulate.
  for (double k = std::ceil(lo / step); k * step <= hi + step * 1e-9; ++k)
    ticks.push_back(k * step);
  return ticks;
}

std::string FormatTick(double v) {
  const double a = std::abs(v);
  if (a >= 1e9) return absl::StrFormat("%gB", v / 1e9);
  if (a >= 1e6) return absl::StrFormat("%gM", v / 1e6);
  if (a >= 1e4) return absl::StrFormat("%gK", v / 1e3);
  return absl::StrFormat("%.4g", v);
}

Color SeriesColor(size_t k, size_t n) {
  // Tableau 10 for a few series; hues around the wheel for many (e.g. 256 experts).
  static constexpr Color kPalette[] = {
      {31, 119, 180}, {255, 127, 14},  {44, 160, 44},   {214, 39, 40},  {148, 103, 189},
      {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}};
  if (n <= 10) return kPalette[k % 10];
  const double h = 6.0 * static_cast<double>(k) / static_cast<double>(n);
  const double x = 1 - std::abs(std::fmod(h, 2.0) - 1);
  double r = 0, g = 0, b = 0;
  switch (static_cast<int>(h)) {
    case 0:
      r = 1, g = x;
      break;
    case 1:
      r = x, g = 1;
      break;
    case 2:
      g = 1, b = x;
      break;
    case 3:
      g = x, b = 1;
      break;
    case 4:
      r = x, b = 1;
      break;
    default:
      r = 1, b = x;
      break;
  }
  auto ch = [](double c) { return static_cast<uint8_t>(std::lround(40 + 170 * c)); };
  return {ch(r), ch(g), ch(b)};
}

Color LoadColor(double ratio) {
  constexpr Color kHigh{178, 24, 43}, kLow{33, 102, 172};
  const double t = ratio > 0 ? std::clamp(std::log2(ratio) / 2.0, -1.0, 1.0) : -1.0;
  return t >= 0 ? Mix(kWhite, kHigh, t) : Mix(kWhite, kLow, -t);
}

Figure LineChart(const LineChartOptions& o, const std::vector<Series>& series) {
  Figure f;
  f.id = o.id;
  f.kind = "chart";
  f.width = o.width;
  f.height = o.height;
  const double left = 62, right = 14, top = 30, bottom = 42;
  const double pw = o.width - left - right, ph = o.height - top - bottom;
  f.rects.push_back({0, 0, o.width, o.height, kWhite, "", ""});
  Text title = Label(left, 19, o.title, 14);
  title.bold = true;
  f.texts.push_back(title);

  const auto [x0, x1] = Range(series, true);
  const auto [y0, y1] = Range(series, false);
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
  auto py = [&](double y) { return top + ph - (y - y0) / (y1 - y0) * ph; };
  for (double t : NiceTicks(x0, x1, 6)) {
    f.lines.push_back(Segment(px(t), top, px(t), top + ph, kGrid));
    f.texts.push_back(Label(px(t), top + ph + 15, FormatTick(t), 11, Text::Anchor::kMiddle));
  }
  for (double t : NiceTicks(y0, y1, 5)) {
    f.lines.push_back(Segment(left, py(t), left + pw, py(t), kGrid));
    f.texts.push_back(Label(left - 5, py(t) + 4, FormatTick(t), 11, Text::Anchor::kEnd));
  }
  f.lines.push_back({{{left, top}, {left, top + ph}, {left + pw, top + ph}}, kAxis, 1, false});
  f.texts.push_back(Label(left + pw / 2, o.height - 6, o.x_label, 12, Text::Anchor::kMiddle));
  Text yl = Label(14, top + ph / 2, o.y_label, 12, Text::Anchor::kMiddle);
  yl.vertical = true;
  f.texts.push_back(yl);

  bool any = false;
  for (const Series& s : series) {
    Polyline line{{}, s.color, 1.6, s.dashed};
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      line.points.emplace_back(px(s.x[i]), py(s.y[i]));
      if (s.markers)
        f.rects.push_back({px(s.x[i]) - 3, py(s.y[i]) - 3, 6, 6, s.color, "",
                           absl::StrCat(s.name, ": ", FormatTick(s.y[i]))});
    }
    any = any || !line.points.empty();
    if (line.points.size() == 1)  // one point still shows: a short horizontal dash
      line.points.emplace_back(line.points[0].first + 2, line.points[0].second);
    if (!line.points.empty()) f.lines.push_back(std::move(line));
  }
  if (!any)
    f.texts.push_back(Label(left + pw / 2, top + ph / 2, "no data", 13, Text::Anchor::kMiddle));
  if (o.legend && series.size() > 1) {
    double y = top + 12;
    for (const Series& s : series) {
      f.lines.push_back(
          {{{left + pw - 120, y - 4}, {left + pw - 100, y - 4}}, s.color, 2, s.dashed});
      f.texts.push_back(Label(left + pw - 95, y, s.name, 11));
      y += 15;
    }
  }
  return f;
}

Figure Heatmap(const HeatmapOptions& o, const std::vector<int64_t>& steps,
               const std::vector<std::vector<double>>& ratio) {
  Figure f;
  f.id = o.id;
  f.kind = "heatmap";
  const size_t records = ratio.size();
  const size_t experts = records ? ratio[0].size() : 0;
  const size_t cols = std::min(records, static_cast<size_t>(std::max(1, o.max_columns)));
  const double left = 70, right = 14, top = 30;
  const double row_h = experts ? std::clamp(320.0 / experts, 2.0, 22.0) : 0;
  const double pw = o.width - left - right, ph = row_h * experts;
  f.width = o.width;
  f.height = top + ph + 86;
  f.rects.push_back({0, 0, f.width, f.height, kWhite, "", ""});
  Text title = Label(left, 19, o.title, 14);
  title.bold = true;
  f.texts.push_back(title);
  if (cols == 0 || experts == 0) {
    f.texts.push_back(Label(left, top + 20, "no expert-load records", 13));
    return f;
  }
  // Column c averages records [c * records / cols, (c + 1) * records / cols).
  const double cw = pw / static_cast<double>(cols);
  for (size_t c = 0; c < cols; ++c) {
    const size_t r0 = c * records / cols, r1 = (c + 1) * records / cols;
    for (size_t e = 0; e < experts; ++e) {
      double sum = 0;
      for (size_t r = r0; r < r1; ++r) sum += ratio[r][e];
      const double v = sum / static_cast<double>(r1 - r0);
      f.rects.push_back({left + cw * c, top + row_h * e, cw, row_h, LoadColor(v), "cell",
                         absl::StrFormat("expert %d, step %d: %.2fx mean", e, steps[r1 - 1], v)});
    }
  }
  const size_t label_every = std::max<size_t>(1, (experts + 15) / 16);
  for (size_t e = 0; e < experts; e += label_every)
    f.texts.push_back(Label(left - 5, top + row_h * (e + 0.5) + 4, absl::StrCat("expert ", e), 10,
                            Text::Anchor::kEnd));
  const size_t tick_every = std::max<size_t>(1, (cols + 7) / 8);
  for (size_t c = 0; c < cols; c += tick_every) {
    const size_t r = (c + 1) * records / cols - 1;
    f.texts.push_back(Label(left + cw * (c + 0.5), top + ph + 14, FormatTick(steps[r]), 10,
                            Text::Anchor::kMiddle));
  }
  f.texts.push_back(Label(left + pw / 2, top + ph + 30, "step", 12, Text::Anchor::kMiddle));
  // Colour bar: load / mean from 1/4 to 4 on the log scale the cells use.
  const double bar_y = top + ph + 46, bar_w = 240, bar_x = left;
  constexpr int kSteps = 48;
  for (int i = 0; i < kSteps; ++i) {
    const double ratio_i = std::exp2(-2.0 + 4.0 * (i + 0.5) / kSteps);
    f.rects.push_back({bar_x + bar_w * i / kSteps, bar_y, bar_w / kSteps + 0.5, 12,
                       LoadColor(ratio_i), "legend", ""});
  }
  const char* kBarLabels[] = {"1/4", "1/2", "1", "2", "4"};
  for (int i = 0; i < 5; ++i)
    f.texts.push_back(
        Label(bar_x + bar_w * i / 4, bar_y + 26, kBarLabels[i], 10, Text::Anchor::kMiddle));
  f.texts.push_back(
      Label(bar_x + bar_w + 14, bar_y + 10, "expert load / mean load (white: balanced)", 11));
  return f;
}

}  // namespace mt::report

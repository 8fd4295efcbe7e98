#include "trainer/report_png.h"

#include <cairo.h>

#include <cmath>
#include <memory>

#include "absl/strings/str_cat.h"

namespace mt::report {
namespace {

void SetColor(cairo_t* cr, Color c) {
  cairo_set_source_rgb(cr, c.r / 255.0, c.g / 255.0, c.b / 255.0);
}

}  // namespace

absl::Status WriteFigurePng(const Figure& f, const std::string& path, double scale) {
  const int w = static_cast<int>(std::ceil(f.width * scale));
  const int h = static_cast<int>(std::ceil(f.height * scale));
  std::unique_ptr<cairo_surface_t, void (*)(cairo_surface_t*)> surface(
      cairo_image_surface_create(CAIRO_FORMAT_RGB24, w, h), cairo_surface_destroy);
  if (cairo_surface_status(surface.get()) != CAIRO_STATUS_SUCCESS)
    return absl::InternalError(
        absl::StrCat("cairo: cannot create a ", w, "x", h,
                     " image: ", cairo_status_to_string(cairo_surface_status(surface.get()))));
  std::unique_ptr<cairo_t, void (*)(cairo_t*)> ctx(cairo_create(surface.get()), cairo_destroy);
  cairo_t* cr = ctx.get();
  cairo_scale(cr, scale, scale);
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  for (const Rect& r : f.rects) {
    SetColor(cr, r.fill);
    cairo_rectangle(cr, r.x, r.y, r.w, r.h);
    cairo_fill(cr);
  }
  cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
  for (const Polyline& l : f.lines) {
    if (l.points.size() < 2) continue;
    SetColor(cr, l.stroke);
    cairo_set_line_width(cr, l.width);
    const double dash[] = {5, 3};
    cairo_set_dash(cr, dash, l.dashed ? 2 : 0, 0);
    cairo_move_to(cr, l.points[0].first, l.points[0].second);
    for (size_t i = 1; i < l.points.size(); ++i)
      cairo_line_to(cr, l.points[i].first, l.points[i].second);
    cairo_stroke(cr);
  }
  cairo_set_dash(cr, nullptr, 0, 0);
  for (const Text& t : f.texts) {
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL,
                           t.bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, t.size);
    cairo_text_extents_t ext;
    cairo_text_extents(cr, t.text.c_str(), &ext);
    const double shift = t.anchor == Text::Anchor::kMiddle ? ext.x_advance / 2
                         : t.anchor == Text::Anchor::kEnd  ? ext.x_advance
                                                           : 0;
    cairo_save(cr);
    cairo_translate(cr, t.x, t.y);
    if (t.vertical) cairo_rotate(cr, -M_PI / 2);
    SetColor(cr, t.color);
    cairo_move_to(cr, -shift, 0);
    cairo_show_text(cr, t.text.c_str());
    cairo_restore(cr);
  }
  cairo_surface_flush(surface.get());
  const cairo_status_t st = cairo_surface_write_to_png(surface.get(), path.c_str());
  if (st != CAIRO_STATUS_SUCCESS)
    return absl::InternalError(absl::StrCat("writing ", path, ": ", cairo_status_to_string(st)));
  return absl::OkStatus();
}

}  // namespace mt::report

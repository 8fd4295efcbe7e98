#include "trainer/report_svg.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace mt::report {
namespace {

std::string Rgb(Color c) { return absl::StrFormat("#%02x%02x%02x", c.r, c.g, c.b); }

// Two decimals keep a 300-column heatmap small without visible seams.
std::string Num(double v) { return absl::StrFormat("%.2f", v); }

}  // namespace

std::string EscapeXml(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string FigureToSvg(const Figure& f) {
  std::string s = absl::StrCat("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"", f.kind,
                               "\" id=\"", EscapeXml(f.id), "\" width=\"", Num(f.width),
                               "\" height=\"", Num(f.height), "\" viewBox=\"0 0 ", Num(f.width),
                               " ", Num(f.height), "\" font-family=\"sans-serif\">\n");
  for (const Rect& r : f.rects) {
    absl::StrAppend(&s, "<rect", r.cls.empty() ? "" : absl::StrCat(" class=\"", r.cls, "\""),
                    " x=\"", Num(r.x), "\" y=\"", Num(r.y), "\" width=\"", Num(r.w), "\" height=\"",
                    Num(r.h), "\" fill=\"", Rgb(r.fill), "\"");
    if (r.title.empty()) {
      s += "/>\n";
    } else {
      absl::StrAppend(&s, "><title>", EscapeXml(r.title), "</title></rect>\n");
    }
  }
  for (const Polyline& l : f.lines) {
    s += "<polyline fill=\"none\" points=\"";
    for (const auto& [x, y] : l.points) absl::StrAppend(&s, Num(x), ",", Num(y), " ");
    absl::StrAppend(&s, "\" stroke=\"", Rgb(l.stroke), "\" stroke-width=\"", Num(l.width), "\"",
                    l.dashed ? " stroke-dasharray=\"5,3\"" : "", "/>\n");
  }
  for (const Text& t : f.texts) {
    const char* anchor = t.anchor == Text::Anchor::kMiddle ? "middle"
                         : t.anchor == Text::Anchor::kEnd  ? "end"
                                                           : "start";
    absl::StrAppend(
        &s, "<text x=\"", Num(t.x), "\" y=\"", Num(t.y), "\" font-size=\"", Num(t.size),
        "\" text-anchor=\"", anchor, "\" fill=\"", Rgb(t.color), "\"",
        t.bold ? " font-weight=\"bold\"" : "",
        t.vertical ? absl::StrCat(" transform=\"rotate(-90 ", Num(t.x), " ", Num(t.y), ")\"") : "",
        ">", EscapeXml(t.text), "</text>\n");
  }
  s += "</svg>\n";
  return s;
}

}  // namespace mt::report

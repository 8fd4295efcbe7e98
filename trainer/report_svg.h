// trainer/report_svg.h: a report Figure as an inline <svg> element for the HTML report.
#pragma once

#include <string>

#include "trainer/report_figure.h"

namespace mt::report {

// <svg class="{kind}" id="{id}" ...>: heatmap cells are <rect class="cell"> with a <title>.
std::string FigureToSvg(const Figure& figure);

// Text with &, <, >, " and ' escaped for HTML and SVG.
std::string EscapeXml(const std::string& text);

}  // namespace mt::report

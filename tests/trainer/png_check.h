// tests/trainer/png_check.h: checks on PNG files for the report tests: the signature and
// IHDR size read by hand from the bytes, then a full decode (libpng through Cairo) and how
// much of the picture is not background.
#pragma once

#include <cairo.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

namespace mt::pngcheck {

struct PngInfo {
  std::string error;               // empty if the file is a PNG that decodes
  uint32_t width = 0, height = 0;  // from IHDR
  double non_background = 0;       // fraction of pixels unlike the top-left one
  size_t colours = 0;              // distinct colours (capped at 1000)
};

inline uint32_t BigEndian32(const std::string& b, size_t at) {
  return (uint32_t(uint8_t(b[at])) << 24) | (uint32_t(uint8_t(b[at + 1])) << 16) |
         (uint32_t(uint8_t(b[at + 2])) << 8) | uint32_t(uint8_t(b[at + 3]));
}

inline PngInfo Inspect(const std::string& path) {
  PngInfo info;
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string b = ss.str();
  // Signature, then the IHDR chunk: length 13, "IHDR", width, height (big-endian).
  if (b.size() < 33 || b.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0) {
    info.error = path + ": no PNG signature";
    return info;
  }
  if (BigEndian32(b, 8) != 13 || b.compare(12, 4, "IHDR") != 0) {
    info.error = path + ": first chunk is not IHDR";
    return info;
  }
  info.width = BigEndian32(b, 16);
  info.height = BigEndian32(b, 20);
  cairo_surface_t* s = cairo_image_surface_create_from_png(path.c_str());
  if (cairo_surface_status(s) != CAIRO_STATUS_SUCCESS) {
    info.error = path + ": does not decode: " + cairo_status_to_string(cairo_surface_status(s));
    cairo_surface_destroy(s);
    return info;
  }
  const int w = cairo_image_surface_get_width(s), h = cairo_image_surface_get_height(s);
  const int stride = cairo_image_surface_get_stride(s);
  const unsigned char* data = cairo_image_surface_get_data(s);
  if (w != static_cast<int>(info.width) || h != static_cast<int>(info.height))
    info.error = path + ": decoded size differs from IHDR";
  std::set<uint32_t> colours;
  size_t differ = 0;
  auto pixel = [&](int x, int y) {  // ARGB32/RGB24: native-endian uint32, alpha ignored
    uint32_t p;
    std::memcpy(&p, data + static_cast<size_t>(y) * stride + 4 * x, 4);
    return p & 0xffffff;
  };
  const uint32_t background = pixel(0, 0);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const uint32_t p = pixel(x, y);
      differ += p != background;
      if (colours.size() < 1000) colours.insert(p);
    }
  info.non_background = w && h ? static_cast<double>(differ) / (static_cast<double>(w) * h) : 0;
  info.colours = colours.size();
  cairo_surface_destroy(s);
  return info;
}

}  // namespace mt::pngcheck

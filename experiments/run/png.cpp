#include "experiments/run/png.hpp"

#include <fmt/format.h>
#include <png.h>
#include <unistd.h>

#include <csetjmp>
#include <cstdio>
#include <memory>
#include <stdexcept>

namespace diffode {
namespace {

struct File {
  std::FILE* f = nullptr;
  ~File() {
    if (f) std::fclose(f);
  }
};

// libpng reports errors by longjmp; its message is kept here so the exception can carry it.
void on_error(png_structp png, png_const_charp message) {
  auto* text = static_cast<std::string*>(png_get_error_ptr(png));
  if (text) *text = message;
  png_longjmp(png, 1);
}
void on_warning(png_structp, png_const_charp) {}

}  // namespace

void write_png(const std::filesystem::path& path, const PngImage& image) {
  if (image.width < 1 || image.height < 1 || (image.channels != 1 && image.channels != 3) ||
      image.bytes.size() != static_cast<std::size_t>(image.width * image.height * image.channels))
    throw std::invalid_argument(fmt::format("write_png: a {}x{} image of {} channels with {} bytes", image.width, image.height, image.channels,
                                            image.bytes.size()));
  const std::filesystem::path temporary = path.string() + fmt::format(".tmp-{}", ::getpid());
  std::string error;
  {
    File file;
    file.f = std::fopen(temporary.c_str(), "wb");
    if (!file.f) throw std::runtime_error(fmt::format("{}: cannot create the PNG file", path.string()));
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &error, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : nullptr;
    if (!png || !info) {
      png_destroy_write_struct(&png, nullptr);
      std::filesystem::remove(temporary);
      throw std::runtime_error(fmt::format("{}: libpng could not start", path.string()));
    }
    bool failed = false;
    if (setjmp(png_jmpbuf(png))) {
      failed = true;
    } else {
      png_init_io(png, file.f);
      png_set_IHDR(png, info, static_cast<png_uint_32>(image.width), static_cast<png_uint_32>(image.height), 8,
                   image.channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                   PNG_FILTER_TYPE_DEFAULT);
      png_write_info(png, info);
      for (Index r = 0; r < image.height; ++r)
        png_write_row(png, const_cast<png_bytep>(image.bytes.data() + static_cast<std::size_t>(r * image.width * image.channels)));
      png_write_end(png, nullptr);
    }
    png_destroy_write_struct(&png, &info);
    if (!failed && std::fflush(file.f) != 0) failed = true, error = "cannot write it out";
    if (failed) {
      std::error_code ignored;
      std::filesystem::remove(temporary, ignored);
      throw std::runtime_error(fmt::format("{}: cannot write the PNG: {}", path.string(), error));
    }
  }
  std::error_code ec;
  std::filesystem::rename(temporary, path, ec);
  if (ec) {
    std::filesystem::remove(temporary, ec);
    throw std::runtime_error(fmt::format("{}: cannot write the PNG (rename failed)", path.string()));
  }
}

PngImage read_png(const std::filesystem::path& path) {
  File file;
  file.f = std::fopen(path.c_str(), "rb");
  if (!file.f) throw std::runtime_error(fmt::format("{}: no such file (or not readable)", path.string()));
  std::string error;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &error, on_error, on_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!png || !info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    throw std::runtime_error(fmt::format("{}: libpng could not start", path.string()));
  }
  PngImage image;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw std::runtime_error(fmt::format("{}: not a readable PNG: {}", path.string(), error));
  }
  png_init_io(png, file.f);
  png_read_info(png, info);
  const int depth = png_get_bit_depth(png, info), type = png_get_color_type(png, info);
  if (depth != 8 || (type != PNG_COLOR_TYPE_GRAY && type != PNG_COLOR_TYPE_RGB)) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw std::runtime_error(fmt::format("{}: a PNG of bit depth {} and colour type {} (8-bit grey or RGB only)", path.string(), depth, type));
  }
  image.width = png_get_image_width(png, info);
  image.height = png_get_image_height(png, info);
  image.channels = type == PNG_COLOR_TYPE_GRAY ? 1 : 3;
  image.bytes.resize(static_cast<std::size_t>(image.width * image.height * image.channels));
  for (Index r = 0; r < image.height; ++r)
    png_read_row(png, image.bytes.data() + static_cast<std::size_t>(r * image.width * image.channels), nullptr);
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return image;
}

}  // namespace diffode

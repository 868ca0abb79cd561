// `diffode grid SAMPLES.h5 OUT.png`: the rows of a sample file (or the Fashion-MNIST data) as a grid
// of images in one PNG (experiments/run/png.hpp): pixels in [-1, 1] to bytes as the data were
// scaled (models/fashion_mnist.hpp's pixel_byte), one grid row per class with --rows-by-label.
#include "experiments/cli/commands.hpp"
#include "experiments/run/features.hpp"
#include "experiments/run/png.hpp"
#include "experiments/run/output.hpp"
#include "models/fashion_mnist.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <iostream>
#include <map>

namespace diffode {

std::string grid_help() {
  return "The input is a sample file (its rows: --dataset, by default 'samples') or fashion_mnist:test / fashion_mnist:train.\n"
         "Each row is one image of --image C,H,W (channel-major, C = 1 grey or 3 RGB; default 1,28,28), its values in [-1, 1]\n"
         "mapped to bytes by round(255 (x + 1) / 2), clamped. Tiles are separated by --padding white pixels. Without\n"
         "--rows-by-label, the first --count rows fill the grid row by row, --columns per row. With --rows-by-label (needs the\n"
         "integer dataset --labels, default 'labels'), one grid row per class present, in class order, holding that class's\n"
         "first --columns rows.\n"
         "Exit: 0 done, 2 bad input (a missing file or dataset, an image shape that does not fit the rows, no labels).";
}

int run_grid_command(const GridOptions& o) {
  try {
    if (o.columns < 1) throw ConfigError("--columns: must be >= 1");
    if (o.count < 1) throw ConfigError("--count: must be >= 1");
    if (o.padding < 0 || o.padding > 64) throw ConfigError("--padding: 0 to 64 pixels");
    const RowSource source = open_rows(o.input, o.dataset, o.labels);
    const std::vector<Index> shape = parse_shape(o.image.empty() ? "1,28,28" : o.image, "--image");
    if (shape.size() != 3 || (shape[0] != 1 && shape[0] != 3))
      throw ConfigError(fmt::format("--image '{}': C,H,W with C = 1 (grey) or 3 (RGB)", o.image));
    const Index channels = shape[0], height = shape[1], width = shape[2];
    if (channels * height * width != source.cols)
      throw ConfigError(fmt::format("--image {},{},{}: {} values per image, but {} has rows of {}", channels, height, width, channels * height * width,
                                    source.name, source.cols));
    if (source.rows < 1) throw ConfigError(fmt::format("{}: no rows", source.name));
    // The rows of each grid row, in order.
    std::vector<std::vector<Index>> layout;
    if (o.rows_by_label) {
      if (!source.has_labels)
        throw ConfigError(fmt::format("--rows-by-label: {} has no dataset '{}' (the requested class of each row)", o.input, o.labels));
      const std::vector<std::int64_t> labels = source.labels();
      std::map<std::int64_t, std::vector<Index>> by_class;
      for (Index i = 0; i < static_cast<Index>(labels.size()); ++i)
        if (static_cast<long long>(by_class[labels[i]].size()) < o.columns) by_class[labels[i]].push_back(i);
      for (auto& [label, rows] : by_class) layout.push_back(rows);
    } else {
      const Index n = std::min<Index>(source.rows, o.count);
      for (Index i = 0; i < n; ++i) {
        if (i % o.columns == 0) layout.emplace_back();
        layout.back().push_back(i);
      }
    }
    const Index grid_columns = std::min<Index>(o.columns, std::max_element(layout.begin(), layout.end(), [](const auto& a, const auto& b) {
                                                            return a.size() < b.size();
                                                          })->size());
    const Index pad = o.padding;
    PngImage image;
    image.channels = channels;
    image.width = grid_columns * width + (grid_columns + 1) * pad;
    image.height = static_cast<Index>(layout.size()) * height + (static_cast<Index>(layout.size()) + 1) * pad;
    if (image.width > 65535 || image.height > 65535) throw ConfigError(fmt::format("a grid of {}x{} pixels: too large for one PNG", image.width, image.height));
    image.bytes.assign(static_cast<std::size_t>(image.width * image.height * channels), 255);
    check_output_option("PNG output", o.output, static_cast<double>(image.bytes.size()) + (1 << 16));
    for (std::size_t r = 0; r < layout.size(); ++r)
      for (std::size_t c = 0; c < layout[r].size(); ++c) {
        const Batch row = source.read(layout[r][c], 1);
        if (!row.isFinite().all()) throw ConfigError(fmt::format("{}: row {} holds non-finite values", source.name, layout[r][c]));
        const Index top = pad + static_cast<Index>(r) * (height + pad), left = pad + static_cast<Index>(c) * (width + pad);
        for (Index k = 0; k < channels; ++k)
          for (Index y = 0; y < height; ++y)
            for (Index x = 0; x < width; ++x)
              image.bytes[static_cast<std::size_t>(((top + y) * image.width + left + x) * channels + k)] = pixel_byte(row(0, (k * height + y) * width + x));
      }
    write_png(o.output, image);
    std::cout << fmt::format("{} images of {} in {} rows -> {} ({}x{} pixels)\n", [&] {
      std::size_t n = 0;
      for (const auto& row : layout) n += row.size();
      return n;
    }(), source.name, layout.size(), o.output, image.width, image.height);
    return 0;
  } catch (const ConfigError& e) {
    std::cerr << "diffode grid: " << e.what() << "\n";
    return 2;
  } catch (const std::runtime_error& e) {
    std::cerr << "diffode grid: " << e.what() << "\n";
    return 2;
  }
}

}  // namespace diffode

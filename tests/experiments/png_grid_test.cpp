// PNG files (experiments/run/png.hpp) and `diffode grid`: an image written and read back by
// libpng, and grids whose size and every pixel are checked against the rows they were drawn from.
#include "experiments/run/png.hpp"

#include "experiments/cli/commands.hpp"
#include "experiments/run/hdf5_file.hpp"
#include "models/fashion_mnist.hpp"
#include "tests/support/hdf5_int64.hpp"
#include "tests/support/temp_folder.hpp"

#include <gtest/gtest.h>

#include <cstdint>

namespace diffode {
namespace {

// Row i's pixel p is the byte (37 i + 3 p) mod 256, stored as 2 b / 255 - 1.
std::uint8_t byte_of(Index i, Index p) { return static_cast<std::uint8_t>((37 * i + 3 * p) % 256); }

class GridTest : public testing::TempFolderTest {
 protected:
  // `n` images of 1 x 4 x 3 (or 3 x 2 x 2 with rgb) with labels when given.
  std::string write_samples(Index n, const std::vector<std::int64_t>& labels, Index values = 12) {
    Batch x(n, values);
    for (Index i = 0; i < n; ++i)
      for (Index p = 0; p < values; ++p) x(i, p) = 2.0 * byte_of(i, p) / 255.0 - 1.0;
    const auto path = dir_ / "samples.h5";
    {
      Hdf5File h5(path, Hdf5File::Mode::create);
      h5.write_matrix("samples", x);
    }
    if (!labels.empty()) testing::write_int64(path, "labels", labels);
    return path.string();
  }
};

TEST_F(GridTest, PngRoundTrip) {
  PngImage grey{.width = 5, .height = 3, .channels = 1, .bytes = {}};
  for (int i = 0; i < 15; ++i) grey.bytes.push_back(static_cast<std::uint8_t>(17 * i));
  write_png(dir_ / "grey.png", grey);
  const PngImage back = read_png(dir_ / "grey.png");
  EXPECT_EQ(back.width, 5);
  EXPECT_EQ(back.height, 3);
  EXPECT_EQ(back.channels, 1);
  EXPECT_EQ(back.bytes, grey.bytes);
  PngImage rgb{.width = 2, .height = 2, .channels = 3, .bytes = {255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 99, 199}};
  write_png(dir_ / "rgb.png", rgb);
  EXPECT_EQ(read_png(dir_ / "rgb.png").bytes, rgb.bytes);
  EXPECT_THROW(read_png(dir_ / "missing.png"), std::runtime_error);
  EXPECT_THROW(write_png(dir_ / "bad.png", PngImage{.width = 2, .height = 2, .channels = 1, .bytes = {1, 2, 3}}), std::invalid_argument);
}

TEST_F(GridTest, RowsFillTheGridInOrder) {
  const std::string samples = write_samples(7, {});
  GridOptions o;
  o.input = samples;
  o.output = (dir_ / "grid.png").string();
  o.image = "1,4,3";
  o.columns = 3;
  o.padding = 1;
  ASSERT_EQ(run_grid_command(o), 0);
  const PngImage png = read_png(o.output);
  ASSERT_EQ(png.channels, 1);
  ASSERT_EQ(png.width, 3 * 3 + 4 * 1);   // 3 tiles of width 3, 4 paddings
  ASSERT_EQ(png.height, 3 * 4 + 4 * 1);  // 7 images in rows of 3: 3 rows of height 4
  for (Index r = 0; r < 3; ++r)
    for (Index c = 0; c < 3; ++c) {
      const Index i = 3 * r + c;
      for (Index y = 0; y < 4; ++y)
        for (Index x = 0; x < 3; ++x) {
          const std::uint8_t expected = i < 7 ? byte_of(i, 3 * y + x) : 255;  // slots past the rows stay white
          EXPECT_EQ(png.at(1 + r * 5 + y, 1 + c * 4 + x), expected) << "image " << i << " y " << y << " x " << x;
        }
    }
  for (Index x = 0; x < png.width; ++x) EXPECT_EQ(png.at(0, x), 255);  // the padding
  // The byte mapping is models/fashion_mnist.hpp's.
  EXPECT_EQ(pixel_byte(-1.0), 0);
  EXPECT_EQ(pixel_byte(1.0), 255);
}

TEST_F(GridTest, RowsByLabelAndRgb) {
  const std::string samples = write_samples(7, {2, 0, 2, 1, 0, 2, 2});
  GridOptions o;
  o.input = samples;
  o.output = (dir_ / "by_label.png").string();
  o.image = "1,4,3";
  o.columns = 2;
  o.padding = 0;
  o.rows_by_label = true;
  ASSERT_EQ(run_grid_command(o), 0);
  const PngImage png = read_png(o.output);
  ASSERT_EQ(png.width, 2 * 3);
  ASSERT_EQ(png.height, 3 * 4);  // classes 0, 1, 2
  // Row k holds the first two rows of class k: class 0 rows 1, 4; class 1 row 3; class 2 rows 0, 2.
  const std::vector<std::vector<Index>> layout{{1, 4}, {3}, {0, 2}};
  for (Index r = 0; r < 3; ++r)
    for (Index c = 0; c < 2; ++c)
      for (Index y = 0; y < 4; ++y)
        for (Index x = 0; x < 3; ++x) {
          const std::uint8_t expected = c < static_cast<Index>(layout[r].size()) ? byte_of(layout[r][c], 3 * y + x) : 255;
          EXPECT_EQ(png.at(r * 4 + y, c * 3 + x), expected);
        }
  // The same 12 values as 3 x 2 x 2 colour images: channel-major rows, interleaved in the PNG.
  o.rows_by_label = false;
  o.image = "3,2,2";
  o.output = (dir_ / "rgb.png").string();
  ASSERT_EQ(run_grid_command(o), 0);
  const PngImage rgb = read_png(o.output);
  ASSERT_EQ(rgb.channels, 3);
  EXPECT_EQ(rgb.width, 4);
  for (Index k = 0; k < 3; ++k) EXPECT_EQ(rgb.at(1, 1, k), byte_of(0, k * 4 + 2 + 1));
}

TEST_F(GridTest, BadInputIsExitTwoNamingIt) {
  const std::string samples = write_samples(4, {});
  GridOptions o;
  o.input = (dir_ / "missing.h5").string();
  o.output = (dir_ / "g.png").string();
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(run_grid_command(o), 2);
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("missing.h5"), std::string::npos);
  o.input = samples;  // 12 values per row: not 1 x 28 x 28
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(run_grid_command(o), 2);
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("--image"), std::string::npos);
  o.image = "1,4,3";
  o.rows_by_label = true;  // no labels dataset
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(run_grid_command(o), 2);
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("labels"), std::string::npos);
  o.rows_by_label = false;
  o.image = "2,3,2";  // 12 values, but 2 channels
  EXPECT_EQ(run_grid_command(o), 2);
  EXPECT_FALSE(std::filesystem::exists(o.output));
}

}  // namespace
}  // namespace diffode

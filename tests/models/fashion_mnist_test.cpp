// The Fashion-MNIST reader (models/fashion_mnist.hpp) on Debian's package files, and its errors on
// files that are missing or not IDX.
#include "models/fashion_mnist.hpp"

#include <gtest/gtest.h>
#include <zlib.h>

#include <array>
#include <filesystem>
#include <fstream>

namespace diffode {
namespace {

TEST(FashionMnist, TestSplitHasTheDatasetsShapeLabelsAndScale) {
  const ImageSet test = read_fashion_mnist("test");
  ASSERT_EQ(test.count(), 10000);
  EXPECT_EQ(test.channels, 1);
  EXPECT_EQ(test.height, 28);
  EXPECT_EQ(test.width, 28);
  ASSERT_EQ(test.pixels.cols(), 784);
  // The test split holds exactly 1000 images of each class; its first image is an ankle boot.
  std::array<int, kFashionMnistClasses> per_class{};
  for (const auto label : test.labels) ++per_class.at(label);
  for (const int n : per_class) EXPECT_EQ(n, 1000);
  EXPECT_EQ(test.labels.front(), 9);
  EXPECT_EQ(fashion_mnist_class_names()[9], "Ankle boot");
  // Bytes 0 and 255 both occur, and map to the ends of [-1, 1].
  EXPECT_EQ(test.pixels.minCoeff(), -1.0);
  EXPECT_EQ(test.pixels.maxCoeff(), 1.0);
  // The grey levels round-trip through the scaling.
  for (const int byte : {0, 1, 127, 128, 254, 255}) EXPECT_EQ(pixel_byte(byte / 127.5 - 1.0), byte);
}

TEST(FashionMnist, TrainSplitHasSixtyThousandBalancedImages) {
  const ImageSet train = read_fashion_mnist("train");
  ASSERT_EQ(train.count(), 60000);
  std::array<int, kFashionMnistClasses> per_class{};
  for (const auto label : train.labels) ++per_class.at(label);
  for (const int n : per_class) EXPECT_EQ(n, 6000);
}

TEST(FashionMnist, MissingFilesNameThePathAndThePackage) {
  const auto empty = std::filesystem::temp_directory_path() / "diffode_fashion_mnist_missing";
  std::filesystem::create_directories(empty);
  try {
    read_fashion_mnist("test", empty);
    FAIL() << "no error for a directory without the files";
  } catch (const std::runtime_error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find((empty / "t10k-images-idx3-ubyte.gz").string()), std::string::npos) << message;
    EXPECT_NE(message.find("dataset-fashion-mnist"), std::string::npos) << message;
  }
  EXPECT_THROW(read_fashion_mnist("validation"), std::invalid_argument);
}

TEST(FashionMnist, FilesThatAreNotIdxOrAreCutShortAreRefusedByName) {
  const auto dir = std::filesystem::temp_directory_path() / "diffode_fashion_mnist_bad";
  std::filesystem::create_directories(dir);
  const auto not_idx = dir / "not_idx";
  std::ofstream(not_idx) << "PK this is a zip";
  try {
    read_idx(not_idx);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(not_idx.string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not an IDX"), std::string::npos) << e.what();
  }
  // A gzip-compressed IDX header that promises 2 x 2 x 2 bytes and holds 3.
  const auto short_file = dir / "short.gz";
  {
    gzFile out = gzopen(short_file.c_str(), "wb");
    const unsigned char bytes[] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3};
    gzwrite(out, bytes, sizeof bytes);
    gzclose(out);
  }
  try {
    read_idx(short_file);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
  // The same header with all 8 bytes reads.
  {
    gzFile out = gzopen(short_file.c_str(), "wb");
    const unsigned char bytes[] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8};
    gzwrite(out, bytes, sizeof bytes);
    gzclose(out);
  }
  const IdxArray array = read_idx(short_file);
  EXPECT_EQ(array.shape, (std::vector<std::uint32_t>{2, 2, 2}));
  EXPECT_EQ(array.bytes.back(), 8);
}

}  // namespace
}  // namespace diffode

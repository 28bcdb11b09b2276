#include "moescope/data/image.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <algorithm>
#include <string>
#include <vector>

#include "data/helpers.hpp"
#include "moescope/data/split.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using testing::expect_input_error;
using testing::TempDir;
using testing::write_bytes;
using testing::write_gzip;
using testing::write_text;
using Bytes = std::vector<std::uint8_t>;

void put_be32(Bytes& b, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<std::uint8_t>(v >> s));
}

Bytes pixels_for(std::size_t count) {
  Bytes p(count);
  for (std::size_t i = 0; i < count; ++i) p[i] = static_cast<std::uint8_t>((i * 31 + 7) & 0xff);
  return p;
}

// An IDX image file; `pixels` may disagree with the dims on purpose.
Bytes idx_images(std::uint32_t n, std::uint32_t h, std::uint32_t w, const Bytes& pixels,
                 std::uint32_t magic = 0x00000803) {
  Bytes b;
  put_be32(b, magic);
  put_be32(b, n);
  put_be32(b, h);
  put_be32(b, w);
  b.insert(b.end(), pixels.begin(), pixels.end());
  return b;
}

Bytes idx_labels(const Bytes& labels, std::uint32_t magic = 0x00000801) {
  Bytes b;
  put_be32(b, magic);
  put_be32(b, static_cast<std::uint32_t>(labels.size()));
  b.insert(b.end(), labels.begin(), labels.end());
  return b;
}

TEST(Idx, RoundTripRaw) {
  TempDir d;
  const Bytes px = pixels_for(5 * 3 * 4);
  write_bytes(d.file("img"), idx_images(5, 3, 4, px));
  write_bytes(d.file("lbl"), idx_labels({2, 0, 1, 2, 1}));
  const ImageSet s = read_idx(d.file("img"), d.file("lbl"));
  EXPECT_EQ(s.n, 5);
  EXPECT_EQ(s.channels, 1);
  EXPECT_EQ(s.height, 3);
  EXPECT_EQ(s.width, 4);
  EXPECT_EQ(s.image_bytes(), 12);
  EXPECT_EQ(s.pixels, px);
  EXPECT_EQ(s.labels, (std::vector<std::int64_t>{2, 0, 1, 2, 1}));
  EXPECT_EQ(s.classes, 3);  // inferred: max label + 1
  EXPECT_EQ(s.class_names, (std::vector<std::string>{"0", "1", "2"}));
  EXPECT_EQ(read_idx(d.file("img"), d.file("lbl"), 7).classes, 7);
}

TEST(Idx, RoundTripGzipAndMixed) {
  TempDir d;
  const Bytes px = pixels_for(4 * 28 * 28);
  write_gzip(d.file("train-images-idx3-ubyte.gz"), idx_images(4, 28, 28, px));
  write_gzip(d.file("train-labels-idx1-ubyte.gz"), idx_labels({9, 0, 3, 3}));
  write_bytes(d.file("raw-labels"), idx_labels({9, 0, 3, 3}));
  const ImageSet s = read_idx(d.file("train-images-idx3-ubyte.gz"), d.file("train-labels-idx1-ubyte.gz"), 10);
  EXPECT_EQ(s.pixels, px);
  EXPECT_EQ(s.labels, (std::vector<std::int64_t>{9, 0, 3, 3}));
  const ImageSet mixed = read_idx(d.file("train-images-idx3-ubyte.gz"), d.file("raw-labels"), 10);
  EXPECT_EQ(mixed.pixels, px);
  EXPECT_EQ(mixed.labels, s.labels);
}

TEST(Idx, BadMagic) {
  TempDir d;
  write_bytes(d.file("img"), idx_images(2, 2, 2, pixels_for(8), 0x00000802));
  write_bytes(d.file("lbl"), idx_labels({0, 1}));
  expect_input_error([&] { read_idx(d.file("img"), d.file("lbl")); }, {d.file("img"), "offset 0", "bad magic 0x00000802"});
  write_bytes(d.file("img"), idx_images(2, 2, 2, pixels_for(8)));
  write_bytes(d.file("lbl"), idx_labels({0, 1}, 0x00000803));  // images magic in a label file
  expect_input_error([&] { read_idx(d.file("img"), d.file("lbl")); }, {d.file("lbl"), "offset 0", "bad magic"});
  write_bytes(d.file("text"), Bytes{'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd', '!', '!', '!', '!', '!'});
  expect_input_error([&] { read_idx(d.file("text"), d.file("lbl")); }, {d.file("text"), "bad magic"});
}

TEST(Idx, TruncatedHeaders) {
  TempDir d;
  write_bytes(d.file("img"), {0, 0, 8, 3, 0, 0});
  write_bytes(d.file("lbl"), idx_labels({0}));
  expect_input_error([&] { read_idx(d.file("img"), d.file("lbl")); }, {d.file("img"), "6 bytes", "16-byte"});
  write_bytes(d.file("img"), idx_images(1, 1, 1, {5}));
  write_bytes(d.file("lbl"), {0, 0, 8, 1});
  expect_input_error([&] { read_idx(d.file("img"), d.file("lbl")); }, {d.file("lbl"), "4 bytes", "8-byte"});
  write_bytes(d.file("empty"), {});
  expect_input_error([&] { read_idx(d.file("empty"), d.file("lbl")); }, {d.file("empty"), "0 bytes"});
}

TEST(Idx, TruncatedOrOverlongPixelsNameTheOffset) {
  TempDir d;
  write_bytes(d.file("lbl"), idx_labels(Bytes(10, 0)));
  write_bytes(d.file("train-images-idx3-ubyte"), idx_images(10, 3, 4, pixels_for(50)));
  expect_input_error([&] { read_idx(d.file("train-images-idx3-ubyte"), d.file("lbl")); },
                     {"train-images-idx3-ubyte", "offset 16: expected 120 bytes of pixels (10 x 3 x 4), file has 50"});
  write_bytes(d.file("long"), idx_images(10, 3, 4, pixels_for(121)));
  expect_input_error([&] { read_idx(d.file("long"), d.file("lbl")); }, {d.file("long"), "file has 121"});
  // the same checks apply to the decompressed bytes of a gzip file
  write_gzip(d.file("cut.gz"), idx_images(10, 3, 4, pixels_for(100)));
  expect_input_error([&] { read_idx(d.file("cut.gz"), d.file("lbl")); }, {d.file("cut.gz"), "file has 100"});
  write_bytes(d.file("lbl-short"), [] {
    Bytes b = idx_labels(Bytes(10, 0));
    b.resize(b.size() - 3);
    return b;
  }());
  write_bytes(d.file("img"), idx_images(10, 3, 4, pixels_for(120)));
  expect_input_error([&] { read_idx(d.file("img"), d.file("lbl-short")); },
                     {d.file("lbl-short"), "offset 8: expected 10 bytes of labels, file has 7"});
}

TEST(Idx, HugeOrZeroDimsFailWithoutAllocating) {
  TempDir d;
  write_bytes(d.file("lbl"), idx_labels({0}));
  write_bytes(d.file("huge"), idx_images(0xffffffffu, 0xffffffffu, 0xffffffffu, pixels_for(10)));
  expect_input_error([&] { read_idx(d.file("huge"), d.file("lbl")); }, {d.file("huge"), "more than 2^64", "file has 10"});
  write_bytes(d.file("big"), idx_images(60000, 0x10000, 0x10000, pixels_for(10)));
  expect_input_error([&] { read_idx(d.file("big"), d.file("lbl")); }, {d.file("big"), "offset 16", "file has 10"});
  write_bytes(d.file("zero"), idx_images(1, 0, 4, {}));
  expect_input_error([&] { read_idx(d.file("zero"), d.file("lbl")); }, {d.file("zero"), "offset 8", "rows is 0"});
  write_bytes(d.file("none"), idx_images(0, 2, 2, {}));
  expect_input_error([&] { read_idx(d.file("none"), d.file("lbl")); }, {d.file("none"), "offset 4", "image count is 0"});
}

TEST(Idx, LabelCountMustMatchImageCount) {
  TempDir d;
  write_bytes(d.file("img"), idx_images(3, 2, 2, pixels_for(12)));
  write_bytes(d.file("lbl"), idx_labels({0, 1}));
  expect_input_error([&] { read_idx(d.file("img"), d.file("lbl")); },
                     {d.file("lbl"), "2 labels", d.file("img"), "3 images"});
}

TEST(Idx, LabelOutOfRangeNamesTheOffset) {
  TempDir d;
  write_bytes(d.file("img"), idx_images(3, 2, 2, pixels_for(12)));
  write_bytes(d.file("lbl"), idx_labels({0, 9, 10}));
  expect_input_error([&] { read_idx(d.file("img"), d.file("lbl"), 10); },
                     {d.file("lbl"), "offset 10: label 10 is out of range [0, 10)"});
  EXPECT_EQ(read_idx(d.file("img"), d.file("lbl")).classes, 11);
  expect_input_error([&] { read_idx(d.file("img"), d.file("lbl"), -1); }, {">= 0"});
}

TEST(Idx, BadGzipIsInputErrorNamingTheFile) {
  TempDir d;
  write_gzip(d.file("img.gz"), idx_images(2, 2, 2, pixels_for(8)));
  Bytes gz = testing::read_bytes(d.file("img.gz"));
  gz.resize(gz.size() - 10);
  write_bytes(d.file("img.gz"), gz);
  write_bytes(d.file("lbl"), idx_labels({0, 1}));
  expect_input_error([&] { read_idx(d.file("img.gz"), d.file("lbl")); }, {d.file("img.gz"), "gzip"});
  write_bytes(d.file("lbl.gz"), {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff, 0xff});
  write_bytes(d.file("img"), idx_images(2, 2, 2, pixels_for(8)));
  expect_input_error([&] { read_idx(d.file("img"), d.file("lbl.gz")); }, {d.file("lbl.gz"), "gzip"});
}

void write_fake_fashion(const TempDir& d, const std::string& prefix, std::uint32_t n, bool gz) {
  const Bytes img = idx_images(n, 28, 28, pixels_for(n * 784));
  Bytes lbl(n);
  for (std::uint32_t i = 0; i < n; ++i) lbl[i] = static_cast<std::uint8_t>(i % 10);
  if (gz) {
    write_gzip(d.file(prefix + "-images-idx3-ubyte.gz"), img);
    write_gzip(d.file(prefix + "-labels-idx1-ubyte.gz"), idx_labels(lbl));
  } else {
    write_bytes(d.file(prefix + "-images-idx3-ubyte"), img);
    write_bytes(d.file(prefix + "-labels-idx1-ubyte"), idx_labels(lbl));
  }
}

TEST(FashionMnist, ReadsGzipOrRawFilesFromAFolder) {
  TempDir d;
  write_fake_fashion(d, "train", 20, true);
  write_fake_fashion(d, "t10k", 10, false);
  const ImageSet train = read_fashion_mnist(d.path(), Split::train);
  EXPECT_EQ(train.n, 20);
  EXPECT_EQ(train.classes, 10);
  EXPECT_EQ(train.class_names, fashion_mnist_class_names());
  EXPECT_EQ(train.class_names[0], "T-shirt/top");
  EXPECT_EQ(train.class_names[9], "Ankle boot");
  const ImageSet test = read_fashion_mnist(d.path(), Split::test);
  EXPECT_EQ(test.n, 10);
  EXPECT_EQ(test.labels[7], 7);
}

TEST(FashionMnist, MissingFilesAndWrongSizesAreInputErrors) {
  TempDir d;
  expect_input_error([&] { read_fashion_mnist(d.file("absent"), Split::train); }, {"absent", "no such directory"});
  expect_input_error([&] { read_fashion_mnist(d.path(), Split::test); }, {"t10k-images-idx3-ubyte"});
  write_bytes(d.file("train-images-idx3-ubyte"), idx_images(1, 32, 32, pixels_for(1024)));
  write_bytes(d.file("train-labels-idx1-ubyte"), idx_labels({3}));
  expect_input_error([&] { read_fashion_mnist(d.path(), Split::train); }, {"train-images-idx3-ubyte", "28 x 28"});
}

TEST(FashionMnist, RealTestSplitIfInstalled) {
  if (!std::filesystem::exists(std::string(kFashionMnistDir) + "/t10k-images-idx3-ubyte.gz") &&
      !std::filesystem::exists(std::string(kFashionMnistDir) + "/t10k-images-idx3-ubyte")) {
    GTEST_SKIP() << "Fashion-MNIST is not installed under " << kFashionMnistDir;
  }
  const ImageSet s = read_fashion_mnist(kFashionMnistDir, Split::test);
  EXPECT_EQ(s.n, 10000);
  EXPECT_EQ(s.channels, 1);
  EXPECT_EQ(s.height, 28);
  EXPECT_EQ(s.width, 28);
  EXPECT_EQ(s.classes, 10);
  EXPECT_EQ(s.pixels.size(), 10000u * 784u);
  std::vector<int> per_class(10, 0);
  for (std::int64_t l : s.labels) ++per_class[static_cast<std::size_t>(l)];
  for (int c : per_class) EXPECT_EQ(c, 1000);
  // real images: both black background and bright pixels occur
  EXPECT_EQ(*std::min_element(s.pixels.begin(), s.pixels.end()), 0);
  EXPECT_EQ(*std::max_element(s.pixels.begin(), s.pixels.end()), 255);
}

Bytes cifar_records(const std::vector<std::uint8_t>& labels, std::uint8_t salt) {
  Bytes b;
  for (std::size_t r = 0; r < labels.size(); ++r) {
    b.push_back(labels[r]);
    for (std::size_t i = 0; i < 3072; ++i) b.push_back(static_cast<std::uint8_t>((i + r * 13 + salt) & 0xff));
  }
  return b;
}

TEST(Cifar10, TestBatchRoundTripWithStandardNames) {
  TempDir d;
  write_bytes(d.file("test_batch.bin"), cifar_records({3, 9, 0}, 1));
  const ImageSet s = read_cifar10(d.path(), Split::test);
  EXPECT_EQ(s.n, 3);
  EXPECT_EQ(s.channels, 3);
  EXPECT_EQ(s.height, 32);
  EXPECT_EQ(s.width, 32);
  EXPECT_EQ(s.classes, 10);
  EXPECT_EQ(s.labels, (std::vector<std::int64_t>{3, 9, 0}));
  EXPECT_EQ(s.class_names, cifar10_class_names());
  EXPECT_EQ(s.class_names[1], "automobile");
  // record r's pixel i is at r * 3072 + i: channel-major, copied as stored
  for (std::size_t r = 0; r < 3; ++r) {
    for (std::size_t i : {0u, 1023u, 1024u, 3071u}) {
      EXPECT_EQ(s.pixels[r * 3072 + i], static_cast<std::uint8_t>((i + r * 13 + 1) & 0xff));
    }
  }
}

TEST(Cifar10, TrainConcatenatesBatchesInOrderAndReadsMeta) {
  TempDir d;
  for (int b = 1; b <= 5; ++b) {
    write_bytes(d.file("data_batch_" + std::to_string(b) + ".bin"),
                cifar_records({static_cast<std::uint8_t>(b), static_cast<std::uint8_t>(b + 1)}, 0));
  }
  write_text(d.file("batches.meta.txt"), "a\nb\nc\nd\ne\nf\ng\nh\ni\n  j  \r\n\n\n");
  const ImageSet s = read_cifar10(d.path(), Split::train);
  EXPECT_EQ(s.n, 10);
  EXPECT_EQ(s.labels, (std::vector<std::int64_t>{1, 2, 2, 3, 3, 4, 4, 5, 5, 6}));
  EXPECT_EQ(s.class_names, (std::vector<std::string>{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}));
  EXPECT_EQ(s.pixels.size(), 10u * 3072u);
}

TEST(Cifar10, LengthNotAMultipleNamesFileAndLength) {
  TempDir d;
  Bytes b = cifar_records({1, 2}, 0);
  b.pop_back();
  write_bytes(d.file("test_batch.bin"), b);
  expect_input_error([&] { read_cifar10(d.path(), Split::test); }, {"test_batch.bin", "length 6145", "3073"});
  write_bytes(d.file("test_batch.bin"), {});
  expect_input_error([&] { read_cifar10(d.path(), Split::test); }, {"test_batch.bin", "length 0"});
}

TEST(Cifar10, LabelOutOfRangeNamesTheOffset) {
  TempDir d;
  write_bytes(d.file("test_batch.bin"), cifar_records({1, 10}, 0));
  expect_input_error([&] { read_cifar10(d.path(), Split::test); },
                     {"test_batch.bin", "offset 3073: label 10 of record 1 is out of range [0, 10)"});
}

TEST(Cifar10, MissingBatchAndBadMetaAreInputErrors) {
  TempDir d;
  for (int b = 1; b <= 4; ++b) write_bytes(d.file("data_batch_" + std::to_string(b) + ".bin"), cifar_records({0}, 0));
  expect_input_error([&] { read_cifar10(d.path(), Split::train); }, {"data_batch_5.bin"});
  write_bytes(d.file("test_batch.bin"), cifar_records({0}, 0));
  write_text(d.file("batches.meta.txt"), "a\nb\nc\n");
  expect_input_error([&] { read_cifar10(d.path(), Split::test); }, {"batches.meta.txt", "found 3"});
}

TEST(Subset, PicksImagesAndLabels) {
  TempDir d;
  write_bytes(d.file("test_batch.bin"), cifar_records({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 5));
  const ImageSet all = read_cifar10(d.path(), Split::test);
  const IndexSplit parts = split_indices(all.n, 0.3, 1);
  const ImageSet v = subset(all, parts.valid);
  const ImageSet t = subset(all, parts.train);
  EXPECT_EQ(v.n, 3);
  EXPECT_EQ(t.n, 7);
  for (std::size_t k = 0; k < parts.valid.size(); ++k) {
    const auto i = static_cast<std::size_t>(parts.valid[k]);
    EXPECT_EQ(v.labels[k], all.labels[i]);
    EXPECT_TRUE(std::equal(v.pixels.begin() + k * 3072, v.pixels.begin() + (k + 1) * 3072, all.pixels.begin() + i * 3072));
  }
  EXPECT_EQ(t.class_names, all.class_names);
  EXPECT_THROW(subset(all, {10}), std::out_of_range);
  EXPECT_THROW(subset(all, {-1}), std::out_of_range);
}

}  // namespace
}  // namespace moescope

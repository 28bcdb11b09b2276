#pragma once
// Image classification sets as plain bytes: IDX (MNIST / Fashion-MNIST, raw or gzip) and the CIFAR-10
// binary version. Tensors are made from these structs elsewhere; nothing here needs torch.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace moescope {

/// Which files of a data set to read. Validation sets are carved from train with split_indices().
enum class Split { train, test };

/// N images of C x H x W unsigned bytes with integer labels.
struct ImageSet {
  std::int64_t n = 0;
  std::int64_t channels = 0;
  std::int64_t height = 0;
  std::int64_t width = 0;
  std::vector<std::uint8_t> pixels;  // N x C x H x W, channel-major within an image
  std::vector<std::int64_t> labels;  // N values in [0, classes)
  std::int64_t classes = 0;
  std::vector<std::string> class_names;  // `classes` names ("0", "1", ... when the format has none)

  /// Bytes per image: C * H * W.
  std::int64_t image_bytes() const { return channels * height * width; }
};

/// Where Debian-style installs put Fashion-MNIST.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST's classes in label order.
const std::vector<std::string>& fashion_mnist_class_names();
/// CIFAR-10's classes in label order (used when batches.meta.txt is absent).
const std::vector<std::string>& cifar10_class_names();

/// Parses an IDX unsigned-byte image file (magic 0x00000803, big-endian dims N, H, W, then N*H*W bytes)
/// into an ImageSet with C = 1 and no labels. `file` names the data in errors. Throws InputError on a
/// short header, bad magic, a zero dimension, or a length other than 16 + N*H*W.
ImageSet parse_idx_images(const std::uint8_t* data, std::size_t size, const std::string& file);

/// Parses an IDX unsigned-byte label file (magic 0x00000801, big-endian count N, then N bytes).
std::vector<std::int64_t> parse_idx_labels(const std::uint8_t* data, std::size_t size, const std::string& file);

/// Reads an IDX image file and its label file (each raw or gzip, detected by content). With classes > 0
/// every label must be below it; with classes == 0 it is max(label) + 1. Throws InputError naming the file
/// (and the byte offset where one applies) on any format problem or when the counts differ.
ImageSet read_idx(const std::string& images_path, const std::string& labels_path, std::int64_t classes = 0);

/// Reads {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] from `dir`: 10 classes, 1 x 28 x 28.
ImageSet read_fashion_mnist(const std::string& dir = kFashionMnistDir, Split split = Split::train);

/// Parses CIFAR-10 binary records (1 label byte + 3072 pixel bytes, 3 x 32 x 32 channel-major) with the
/// standard class names. Throws InputError when the length is not a positive multiple of 3073 or a label
/// is not below 10.
ImageSet parse_cifar10(const std::uint8_t* data, std::size_t size, const std::string& file);

/// Reads data_batch_1.bin .. data_batch_5.bin (train, in that order) or test_batch.bin from `dir`
/// (the extracted cifar-10-batches-bin). Class names come from batches.meta.txt when present (its
/// non-blank lines, exactly 10 of them).
ImageSet read_cifar10(const std::string& dir, Split split);

/// The images at `indices` (in that order), e.g. the parts of split_indices(). Throws std::out_of_range
/// for an index outside [0, n).
ImageSet subset(const ImageSet& set, const std::vector<std::int64_t>& indices);

}  // namespace moescope

#include "moescope/data/image.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <stdexcept>
#include <utility>

#include "moescope/data/bytes.hpp"
#include "moescope/util/error.hpp"

namespace moescope {

namespace {

constexpr std::uint32_t kIdxU8Images = 0x00000803;  // unsigned byte, 3 dimensions
constexpr std::uint32_t kIdxU8Labels = 0x00000801;  // unsigned byte, 1 dimension
constexpr std::size_t kIdxImageHeader = 16;
constexpr std::size_t kIdxLabelHeader = 8;
constexpr std::size_t kCifarPixels = 3 * 32 * 32;
constexpr std::size_t kCifarRecord = 1 + kCifarPixels;
constexpr std::int64_t kCifarClasses = 10;

std::uint32_t be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
}

std::string hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

std::string at(std::uint64_t offset) { return "offset " + std::to_string(offset) + ": "; }

std::vector<std::string> numbered_names(std::int64_t classes) {
  std::vector<std::string> names;
  for (std::int64_t c = 0; c < classes; ++c) names.push_back(std::to_string(c));
  return names;
}

bool is_file(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec);
}

void require_dir(const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) fail_input(dir, "no such directory");
}

// `dir/name.gz` if it exists, else `dir/name`; an error naming both when neither does.
std::string find_maybe_gz(const std::string& dir, const std::string& name) {
  const std::string plain = dir + "/" + name;
  if (is_file(plain + ".gz")) return plain + ".gz";
  if (is_file(plain)) return plain;
  fail_input(dir, "has neither " + name + " nor " + name + ".gz");
}

std::string trim(const std::string& s) {
  const char* ws = " \t\r\n\v\f";
  const auto b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

std::vector<std::string> read_cifar_meta(const std::string& path) {
  const FileBytes f = read_file_bytes(path, std::uint64_t{1} << 20);
  std::vector<std::string> names;
  std::string line;
  for (std::size_t i = 0; i <= f.bytes.size(); ++i) {
    if (i == f.bytes.size() || f.bytes[i] == '\n') {
      std::string t = trim(line);
      if (!t.empty()) names.push_back(std::move(t));
      line.clear();
    } else {
      line += static_cast<char>(f.bytes[i]);
    }
  }
  if (static_cast<std::int64_t>(names.size()) != kCifarClasses) {
    fail_input(path, "expected 10 class names (one per non-blank line), found " + std::to_string(names.size()));
  }
  return names;
}

}  // namespace

const std::vector<std::string>& fashion_mnist_class_names() {
  static const std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                 "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return names;
}

const std::vector<std::string>& cifar10_class_names() {
  static const std::vector<std::string> names = {"airplane", "automobile", "bird",  "cat",  "deer",
                                                 "dog",      "frog",       "horse", "ship", "truck"};
  return names;
}

ImageSet parse_idx_images(const std::uint8_t* data, std::size_t size, const std::string& file) {
  if (size < kIdxImageHeader) {
    fail_input(file, "file has " + std::to_string(size) + " bytes, too short for the 16-byte IDX image header");
  }
  const std::uint32_t magic = be32(data);
  if (magic != kIdxU8Images) {
    fail_input(file, at(0) + "bad magic " + hex32(magic) + ", expected " + hex32(kIdxU8Images) +
                         " (IDX unsigned-byte images, 3 dimensions)");
  }
  const std::uint64_t n = be32(data + 4), h = be32(data + 8), w = be32(data + 12);
  const char* what[] = {"image count", "rows", "columns"};
  const std::uint64_t dims[] = {n, h, w};
  for (int d = 0; d < 3; ++d) {
    if (dims[d] == 0) fail_input(file, at(4 + 4 * d) + what[d] + " is 0");
  }
  // h * w < 2^64; only the last product can overflow, and then it cannot match the file either
  const std::uint64_t hw = h * w;
  const bool overflow = hw > std::numeric_limits<std::uint64_t>::max() / n;
  const std::uint64_t have = size - kIdxImageHeader;
  if (overflow || n * hw != have) {
    fail_input(file, at(kIdxImageHeader) + "expected " +
                         (overflow ? std::string("more than 2^64") : std::to_string(n * hw)) + " bytes of pixels (" +
                         std::to_string(n) + " x " + std::to_string(h) + " x " + std::to_string(w) +
                         "), file has " + std::to_string(have));
  }
  ImageSet s;
  s.n = static_cast<std::int64_t>(n);
  s.channels = 1;
  s.height = static_cast<std::int64_t>(h);
  s.width = static_cast<std::int64_t>(w);
  s.pixels.assign(data + kIdxImageHeader, data + size);
  return s;
}

std::vector<std::int64_t> parse_idx_labels(const std::uint8_t* data, std::size_t size, const std::string& file) {
  if (size < kIdxLabelHeader) {
    fail_input(file, "file has " + std::to_string(size) + " bytes, too short for the 8-byte IDX label header");
  }
  const std::uint32_t magic = be32(data);
  if (magic != kIdxU8Labels) {
    fail_input(file, at(0) + "bad magic " + hex32(magic) + ", expected " + hex32(kIdxU8Labels) +
                         " (IDX unsigned-byte labels, 1 dimension)");
  }
  const std::uint64_t n = be32(data + 4);
  if (n == 0) fail_input(file, at(4) + "label count is 0");
  const std::uint64_t have = size - kIdxLabelHeader;
  if (n != have) {
    fail_input(file, at(kIdxLabelHeader) + "expected " + std::to_string(n) + " bytes of labels, file has " +
                         std::to_string(have));
  }
  return std::vector<std::int64_t>(data + kIdxLabelHeader, data + size);
}

ImageSet read_idx(const std::string& images_path, const std::string& labels_path, std::int64_t classes) {
  if (classes < 0) fail_input(labels_path, "class count must be >= 0, got " + std::to_string(classes));
  ImageSet s;
  {
    const FileBytes images = read_file_bytes(images_path);
    s = parse_idx_images(images.bytes.data(), images.bytes.size(), images_path);
  }
  const FileBytes labels = read_file_bytes(labels_path);
  s.labels = parse_idx_labels(labels.bytes.data(), labels.bytes.size(), labels_path);
  if (static_cast<std::int64_t>(s.labels.size()) != s.n) {
    fail_input(labels_path, "has " + std::to_string(s.labels.size()) + " labels but " + images_path + " has " +
                                std::to_string(s.n) + " images");
  }
  if (classes > 0) {
    for (std::size_t i = 0; i < s.labels.size(); ++i) {
      if (s.labels[i] >= classes) {
        fail_input(labels_path, at(kIdxLabelHeader + i) + "label " + std::to_string(s.labels[i]) +
                                    " is out of range [0, " + std::to_string(classes) + ")");
      }
    }
    s.classes = classes;
  } else {
    s.classes = *std::max_element(s.labels.begin(), s.labels.end()) + 1;
  }
  s.class_names = numbered_names(s.classes);
  return s;
}

ImageSet read_fashion_mnist(const std::string& dir, Split split) {
  require_dir(dir);
  const std::string prefix = split == Split::train ? "train" : "t10k";
  const std::string images = find_maybe_gz(dir, prefix + "-images-idx3-ubyte");
  const std::string labels = find_maybe_gz(dir, prefix + "-labels-idx1-ubyte");
  ImageSet s = read_idx(images, labels, 10);
  if (s.height != 28 || s.width != 28) {
    fail_input(images, "expected 28 x 28 Fashion-MNIST images, file has " + std::to_string(s.height) + " x " +
                           std::to_string(s.width));
  }
  s.class_names = fashion_mnist_class_names();
  return s;
}

ImageSet parse_cifar10(const std::uint8_t* data, std::size_t size, const std::string& file) {
  if (size == 0 || size % kCifarRecord != 0) {
    fail_input(file, "file length " + std::to_string(size) +
                         " is not a positive multiple of the 3073-byte CIFAR-10 record (1 label + 3072 pixels)");
  }
  const std::size_t n = size / kCifarRecord;
  ImageSet s;
  s.n = static_cast<std::int64_t>(n);
  s.channels = 3;
  s.height = 32;
  s.width = 32;
  s.classes = kCifarClasses;
  s.class_names = cifar10_class_names();
  s.labels.resize(n);
  s.pixels.resize(n * kCifarPixels);
  for (std::size_t r = 0; r < n; ++r) {
    const std::uint8_t* rec = data + r * kCifarRecord;
    if (rec[0] >= kCifarClasses) {
      fail_input(file, at(r * kCifarRecord) + "label " + std::to_string(rec[0]) + " of record " + std::to_string(r) +
                           " is out of range [0, 10)");
    }
    s.labels[r] = rec[0];
    std::copy(rec + 1, rec + kCifarRecord, s.pixels.begin() + static_cast<std::ptrdiff_t>(r * kCifarPixels));
  }
  return s;
}

ImageSet read_cifar10(const std::string& dir, Split split) {
  require_dir(dir);
  std::vector<std::string> files;
  if (split == Split::train) {
    for (int b = 1; b <= 5; ++b) files.push_back("data_batch_" + std::to_string(b) + ".bin");
  } else {
    files.push_back("test_batch.bin");
  }
  ImageSet all;
  for (const std::string& name : files) {
    const std::string path = dir + "/" + name;
    if (!is_file(path)) fail_input(dir, "has no " + name);
    const FileBytes f = read_file_bytes(path);
    ImageSet part = parse_cifar10(f.bytes.data(), f.bytes.size(), path);
    if (all.n == 0) {
      all = std::move(part);
    } else {
      all.n += part.n;
      all.pixels.insert(all.pixels.end(), part.pixels.begin(), part.pixels.end());
      all.labels.insert(all.labels.end(), part.labels.begin(), part.labels.end());
    }
  }
  const std::string meta = dir + "/batches.meta.txt";
  if (is_file(meta)) all.class_names = read_cifar_meta(meta);
  return all;
}

ImageSet subset(const ImageSet& set, const std::vector<std::int64_t>& indices) {
  ImageSet s;
  s.n = static_cast<std::int64_t>(indices.size());
  s.channels = set.channels;
  s.height = set.height;
  s.width = set.width;
  s.classes = set.classes;
  s.class_names = set.class_names;
  const auto stride = static_cast<std::size_t>(set.image_bytes());
  s.pixels.resize(indices.size() * stride);
  s.labels.resize(indices.size());
  for (std::size_t k = 0; k < indices.size(); ++k) {
    const std::int64_t i = indices[k];
    if (i < 0 || i >= set.n) {
      throw std::out_of_range("subset: index " + std::to_string(i) + " outside [0, " + std::to_string(set.n) + ")");
    }
    const auto src = set.pixels.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(i) * stride);
    std::copy(src, src + static_cast<std::ptrdiff_t>(stride),
              s.pixels.begin() + static_cast<std::ptrdiff_t>(k * stride));
    s.labels[k] = set.labels[static_cast<std::size_t>(i)];
  }
  return s;
}

}  // namespace moescope

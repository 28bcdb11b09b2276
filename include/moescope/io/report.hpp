#pragma once
// HDF5 reports: one file per command run, written to "<path>.tmp" and renamed on commit(), so a crash never
// leaves a half file in place of a good one. Paths are HDF5 paths ("/geometry/layer_03/overlap");
// intermediate groups are created as needed. Datasets are float64 (or int64 / strings), row-major.
#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include <Eigen/Core>

namespace moescope {

/// An attribute value.
using AttrValue = std::variant<std::int64_t, double, std::string, std::vector<double>, std::vector<std::int64_t>>;

/// The provenance every report carries as root attributes.
struct Provenance {
  std::string command_line;      // the full command line, shell-quoted
  std::string checkpoint;        // input path(s), "" when none
  std::string checkpoint_sha256; // hex digest, or "" when not computed
  std::string hash_scope;        // what the digest covers: "file", "index", "header", "none"
  std::int64_t seed = 0;
  std::string device = "cpu";
  std::int64_t threads = 1;
};

class ReportWriter {
 public:
  /// Opens "<path>.tmp" for writing (truncating a stale one). Throws InputError if the folder is not writable.
  explicit ReportWriter(std::string path);
  /// Without commit(), the temporary file is closed and removed.
  ~ReportWriter();
  ReportWriter(const ReportWriter&) = delete;
  ReportWriter& operator=(const ReportWriter&) = delete;

  /// Root attributes: moescope_version, command_line, created_utc (ISO 8601), checkpoint, checkpoint_sha256,
  /// checkpoint_hash_scope, seed, device, threads.
  void write_provenance(const Provenance& p);

  /// A float64 dataset of the given dims (empty dims = scalar). data.size() must equal the product of dims.
  void write(const std::string& path, const std::vector<double>& data, const std::vector<std::size_t>& dims);
  void write_scalar(const std::string& path, double value);
  /// A matrix as a [rows, cols] dataset, row-major (h5py's m[i, j] is m(i, j)).
  void write_matrix(const std::string& path, const Eigen::MatrixXd& m);
  /// A vector as a [n] dataset.
  void write_vector(const std::string& path, const Eigen::VectorXd& v);
  void write_int(const std::string& path, const std::vector<std::int64_t>& data, const std::vector<std::size_t>& dims);
  /// A 1-D dataset of variable-length UTF-8 strings.
  void write_strings(const std::string& path, const std::vector<std::string>& values);
  /// Creates the group if needed.
  void create_group(const std::string& path);
  /// Attribute on a group or dataset (the object must exist; "/" is the root).
  void set_attr(const std::string& object_path, const std::string& name, const AttrValue& value);

  /// Flushes, closes and renames "<path>.tmp" to path. Afterwards the writer accepts nothing more.
  void commit();
  const std::string& path() const { return path_; }

 private:
  struct Impl;
  std::string path_;
  std::unique_ptr<Impl> impl_;
};

/// Reads reports (tests, `correlate`, `plot`).
class ReportReader {
 public:
  /// Throws InputError naming the file if it is missing or not HDF5.
  explicit ReportReader(const std::string& path);
  ~ReportReader();
  ReportReader(const ReportReader&) = delete;
  ReportReader& operator=(const ReportReader&) = delete;

  bool exists(const std::string& path) const;
  /// Dataset as float64 (converting from any numeric type); dims filled when given.
  std::vector<double> read(const std::string& path, std::vector<std::size_t>* dims = nullptr) const;
  double read_scalar(const std::string& path) const;
  /// A 2-D dataset as a matrix; throws InputError naming the file and the path when it is not 2-D.
  Eigen::MatrixXd read_matrix(const std::string& path) const;
  std::vector<std::string> read_strings(const std::string& path) const;
  /// Names of the members of a group, sorted.
  std::vector<std::string> list(const std::string& group_path) const;
  AttrValue attr(const std::string& object_path, const std::string& name) const;
  bool has_attr(const std::string& object_path, const std::string& name) const;

 private:
  struct Impl;
  std::string path_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moescope

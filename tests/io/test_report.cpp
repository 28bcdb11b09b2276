#include "moescope/io/report.hpp"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <csignal>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <regex>
#include <stdexcept>
#include <string>
#include <vector>

#include "moescope/util/error.hpp"
#include "moescope/version.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using testing::file_exists;
using testing::read_bytes;
using testing::TempDir;

template <class Fn>
std::string input_error_message(Fn fn) {
  try {
    fn();
  } catch (const InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected InputError";
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

Provenance sample_provenance() {
  Provenance p;
  p.command_line = "moescope geometry --checkpoint 'a b.safetensors' -o out.h5";
  p.checkpoint = "a b.safetensors";
  p.checkpoint_sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  p.hash_scope = "file";
  p.seed = 1234567890123LL;
  p.device = "cuda:0";
  p.threads = 8;
  return p;
}

TEST(Report, RoundTripDatasets) {
  TempDir dir;
  const std::string path = dir.file("r.h5");
  const std::vector<double> matrix = {0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 20, 21, 22, 23, 24.5};
  {
    ReportWriter w(path);
    w.write_scalar("/stats/trace", 3.25);
    w.write("/geometry/layer_00/load", {0.5, -1.5, 1e300}, {3});
    w.write("/geometry/layer_00/overlap", matrix, {3, 5});
    w.write_int("/train/step", {1, -2, std::numeric_limits<std::int64_t>::max()}, {3});
    w.write_strings("/names", {"alpha", "", "βγ unicode ✓"});
    w.write("/empty", {}, {0});
    w.commit();
  }
  ReportReader r(path);
  std::vector<std::size_t> dims;
  EXPECT_EQ(r.read("/stats/trace", &dims), std::vector<double>{3.25});
  EXPECT_TRUE(dims.empty());
  EXPECT_EQ(r.read_scalar("/stats/trace"), 3.25);

  EXPECT_EQ(r.read("/geometry/layer_00/load", &dims), (std::vector<double>{0.5, -1.5, 1e300}));
  EXPECT_EQ(dims, std::vector<std::size_t>{3});

  EXPECT_EQ(r.read("/geometry/layer_00/overlap", &dims), matrix);
  EXPECT_EQ(dims, (std::vector<std::size_t>{3, 5}));

  // Integers come back as doubles through read(), and exactly through attr() (tested below).
  const auto steps = r.read("train/step", &dims);  // leading slash optional
  ASSERT_EQ(steps.size(), 3u);
  EXPECT_EQ(steps[0], 1.0);
  EXPECT_EQ(steps[1], -2.0);

  EXPECT_EQ(r.read_strings("/names"), (std::vector<std::string>{"alpha", "", "βγ unicode ✓"}));
  EXPECT_TRUE(r.read("/empty", &dims).empty());
  EXPECT_EQ(dims, std::vector<std::size_t>{0});

  EXPECT_THROW(r.read_scalar("/geometry/layer_00/load"), InputError);
  EXPECT_THROW(r.read("/names"), InputError);
  EXPECT_THROW(r.read_strings("/stats/trace"), InputError);
  EXPECT_TRUE(contains(input_error_message([&] { r.read("/stats/nope"); }), "/stats/nope"));
  EXPECT_TRUE(contains(input_error_message([&] { r.read("/stats"); }), "not a dataset"));
}

TEST(Report, LargeDatasetIsChunkedAndRoundTrips) {
  TempDir dir;
  const std::string path = dir.file("big.h5");
  const std::size_t rows = 300, cols = 700;  // 210000 elements, over the 65536 threshold
  std::vector<double> data(rows * cols);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = std::sin(0.001 * static_cast<double>(i)) + (i % 7);
  std::vector<std::int64_t> ints(100000);
  for (std::size_t i = 0; i < ints.size(); ++i) ints[i] = static_cast<std::int64_t>(i * i) - 5;
  {
    ReportWriter w(path);
    w.write("/big", data, {rows, cols});
    w.write_int("/ints", ints, {ints.size()});
    w.commit();
  }
  ReportReader r(path);
  std::vector<std::size_t> dims;
  EXPECT_EQ(r.read("/big", &dims), data);
  EXPECT_EQ(dims, (std::vector<std::size_t>{rows, cols}));
  const auto back = r.read("/ints");
  ASSERT_EQ(back.size(), ints.size());
  for (std::size_t i = 0; i < ints.size(); i += 997) EXPECT_EQ(back[i], static_cast<double>(ints[i]));
  // The data is repetitive enough that gzip must shrink the file well below the raw 1.68 MB + 0.8 MB.
  EXPECT_LT(read_bytes(path).size(), (rows * cols + ints.size()) * 8);
}

TEST(Report, AttributesOfEveryKindOnRootGroupAndDataset) {
  TempDir dir;
  const std::string path = dir.file("attrs.h5");
  const std::vector<AttrValue> values = {
      AttrValue{std::int64_t{-42}},
      AttrValue{2.5},
      AttrValue{std::string("spectra ✓")},
      AttrValue{std::vector<double>{1.5, -2.0, 1e-300}},
      AttrValue{std::vector<std::int64_t>{7, 8, std::numeric_limits<std::int64_t>::min()}},
      AttrValue{std::vector<double>{}},
  };
  const std::vector<std::string> objects = {"/", "/hessian/train", "/hessian/train/eigenvalues"};
  {
    ReportWriter w(path);
    w.write("/hessian/train/eigenvalues", {3, 2, 1}, {3});
    for (const auto& obj : objects) {
      for (std::size_t i = 0; i < values.size(); ++i) w.set_attr(obj, "a" + std::to_string(i), values[i]);
    }
    w.set_attr("/", "a0", std::string("replaced"));  // setting again replaces, even with another type
    w.commit();
  }
  ReportReader r(path);
  for (const auto& obj : objects) {
    for (std::size_t i = 0; i < values.size(); ++i) {
      const std::string name = "a" + std::to_string(i);
      ASSERT_TRUE(r.has_attr(obj, name)) << obj << "@" << name;
      if (obj == "/" && i == 0) continue;
      EXPECT_EQ(r.attr(obj, name), values[i]) << obj << "@" << name;
    }
  }
  EXPECT_EQ(std::get<std::string>(r.attr("/", "a0")), "replaced");
  EXPECT_FALSE(r.has_attr("/", "nope"));
  EXPECT_FALSE(r.has_attr("/no/such/object", "a0"));
  EXPECT_TRUE(contains(input_error_message([&] { r.attr("/hessian", "nope"); }), "nope"));
}

TEST(Report, LargeAttributeArray) {
  // Over 64 KiB: needs dense attribute storage (the 1.8 file format).
  TempDir dir;
  const std::string path = dir.file("bigattr.h5");
  std::vector<double> v(20000);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = 0.5 * static_cast<double>(i);
  {
    ReportWriter w(path);
    w.set_attr("/", "grid", v);
    w.commit();
  }
  EXPECT_EQ(std::get<std::vector<double>>(ReportReader(path).attr("/", "grid")), v);
}

TEST(Report, ProvenanceAttributes) {
  TempDir dir;
  const std::string path = dir.file("prov.h5");
  const Provenance p = sample_provenance();
  {
    ReportWriter w(path);
    w.write_provenance(p);
    w.commit();
  }
  ReportReader r(path);
  EXPECT_EQ(std::get<std::string>(r.attr("/", "moescope_version")), kVersion);
  EXPECT_EQ(std::get<std::string>(r.attr("/", "command_line")), p.command_line);
  EXPECT_EQ(std::get<std::string>(r.attr("/", "checkpoint")), p.checkpoint);
  EXPECT_EQ(std::get<std::string>(r.attr("/", "checkpoint_sha256")), p.checkpoint_sha256);
  EXPECT_EQ(std::get<std::string>(r.attr("/", "checkpoint_hash_scope")), "file");
  EXPECT_EQ(std::get<std::int64_t>(r.attr("/", "seed")), p.seed);
  EXPECT_EQ(std::get<std::string>(r.attr("/", "device")), "cuda:0");
  EXPECT_EQ(std::get<std::int64_t>(r.attr("/", "threads")), 8);
  const std::string created = std::get<std::string>(r.attr("/", "created_utc"));
  EXPECT_TRUE(std::regex_match(created, std::regex(R"(20\d\d-[01]\d-[0-3]\dT[0-2]\d:[0-5]\d:[0-6]\dZ)"))) << created;
}

TEST(Report, TmpFileUntilCommit) {
  TempDir dir;
  const std::string path = dir.file("r.h5");
  ReportWriter w(path);
  EXPECT_EQ(w.path(), path);
  w.write_scalar("/x", 1.0);
  EXPECT_TRUE(file_exists(path + ".tmp"));
  EXPECT_FALSE(file_exists(path));
  w.commit();
  EXPECT_FALSE(file_exists(path + ".tmp"));
  EXPECT_TRUE(file_exists(path));
  EXPECT_EQ(ReportReader(path).read_scalar("/x"), 1.0);

  EXPECT_THROW(w.write_scalar("/y", 2.0), std::logic_error);
  EXPECT_THROW(w.set_attr("/", "a", 1.0), std::logic_error);
  EXPECT_THROW(w.create_group("/g"), std::logic_error);
  EXPECT_THROW(w.write_provenance(sample_provenance()), std::logic_error);
  EXPECT_THROW(w.commit(), std::logic_error);
}

TEST(Report, UncommittedWriterLeavesGoodFileUntouched) {
  TempDir dir;
  const std::string path = dir.file("r.h5");
  {
    ReportWriter w(path);
    w.write("/good", {1, 2, 3}, {3});
    w.commit();
  }
  const auto before = read_bytes(path);
  {
    ReportWriter w(path);
    w.write("/bad", {9, 9}, {2});
    EXPECT_TRUE(file_exists(path + ".tmp"));
  }
  EXPECT_FALSE(file_exists(path + ".tmp"));
  EXPECT_EQ(read_bytes(path), before);
  EXPECT_EQ(ReportReader(path).read("/good"), (std::vector<double>{1, 2, 3}));
}

TEST(Report, StaleTmpIsTruncated) {
  TempDir dir;
  const std::string path = dir.file("r.h5");
  testing::write_text(path + ".tmp", "left over by a crash");
  {
    ReportWriter w(path);
    w.write_scalar("/x", 4.0);
    w.commit();
  }
  EXPECT_EQ(ReportReader(path).read_scalar("/x"), 4.0);
}

TEST(Report, WriterIntoMissingFolderNamesThePath) {
  TempDir dir;
  const std::string path = dir.file("no/such/folder/r.h5");
  const std::string msg = input_error_message([&] { ReportWriter w(path); });
  EXPECT_TRUE(contains(msg, path)) << msg;
  EXPECT_TRUE(contains(msg, "cannot create report")) << msg;
}

TEST(Report, WritingAnExistingPathFails) {
  TempDir dir;
  ReportWriter w(dir.file("r.h5"));
  w.write_scalar("/a/b", 1.0);
  EXPECT_TRUE(contains(input_error_message([&] { w.write_scalar("/a/b", 2.0); }), "/a/b"));
  EXPECT_TRUE(contains(input_error_message([&] { w.write("/a", {1}, {1}); }), "/a"));
  // A dataset cannot hold children.
  EXPECT_TRUE(contains(input_error_message([&] { w.write_scalar("/a/b/c", 1.0); }), "/a/b"));
  EXPECT_TRUE(contains(input_error_message([&] { w.set_attr("/missing", "x", 1.0); }), "/missing"));
  EXPECT_THROW(w.write("/m", {1, 2, 3}, {2, 2}), std::invalid_argument);
  EXPECT_THROW(w.write_scalar("/", 1.0), std::invalid_argument);
  EXPECT_THROW(w.write_strings("/s", {std::string("a\0b", 3)}), std::invalid_argument);
  w.create_group("/a");  // existing group: nothing to do
  w.commit();
}

TEST(Report, ReaderOnMissingFile) {
  TempDir dir;
  const std::string path = dir.file("missing.h5");
  const std::string msg = input_error_message([&] { ReportReader r(path); });
  EXPECT_TRUE(contains(msg, path)) << msg;
}

TEST(Report, ReaderOnTextFile) {
  TempDir dir;
  const std::string path = dir.file("notes.txt");
  testing::write_text(path, "this is not HDF5\n");
  const std::string msg = input_error_message([&] { ReportReader r(path); });
  EXPECT_TRUE(contains(msg, path)) << msg;
}

TEST(Report, NestedGroupsListAndExists) {
  TempDir dir;
  const std::string path = dir.file("nested.h5");
  {
    ReportWriter w(path);
    w.create_group("/geometry/layer_10");
    w.write_scalar("/geometry/layer_02/mso", 0.5);
    w.write_scalar("/geometry/layer_01/mso", 0.25);
    w.write("/geometry/layer_01/overlap", {1, 0, 0, 1}, {2, 2});
    w.create_group("/a/b/c/d");
    w.commit();
  }
  ReportReader r(path);
  EXPECT_EQ(r.list("/"), (std::vector<std::string>{"a", "geometry"}));
  EXPECT_EQ(r.list("/geometry"), (std::vector<std::string>{"layer_01", "layer_02", "layer_10"}));
  EXPECT_EQ(r.list("/geometry/layer_01"), (std::vector<std::string>{"mso", "overlap"}));
  EXPECT_TRUE(r.list("/geometry/layer_10").empty());
  EXPECT_EQ(r.list("/a/b/c"), std::vector<std::string>{"d"});
  EXPECT_THROW(r.list("/geometry/layer_01/mso"), InputError);
  EXPECT_THROW(r.list("/nope"), InputError);

  EXPECT_TRUE(r.exists("/"));
  EXPECT_TRUE(r.exists("/a/b/c/d"));
  EXPECT_TRUE(r.exists("/geometry/layer_01/overlap"));
  EXPECT_FALSE(r.exists("/geometry/layer_03"));
  EXPECT_FALSE(r.exists("/nope/deeper/still"));
  EXPECT_FALSE(r.exists("/geometry/layer_01/mso/child"));  // below a dataset
}

// h5py is how researchers read reports: check the types it sees, not just our own reader.
TEST(Report, InteropWithH5py) {
  if (std::system("/usr/bin/python3 -c 'import h5py' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "/usr/bin/python3 with h5py is not available";
  }
  TempDir dir;
  const std::string path = dir.file("interop.h5");
  {
    ReportWriter w(path);
    w.write_provenance(sample_provenance());
    w.write("/geometry/layer_00/overlap", {0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 20, 21, 22, 23, 24}, {3, 5});
    w.write_scalar("/hessian/train/trace", 12.5);
    w.write_int("/train/step", {10, 20, 30}, {3});
    w.write_strings("/names", {"router", "expert_0 ✓"});
    w.set_attr("/hessian/train", "method", std::string("lanczos"));
    w.set_attr("/hessian/train", "tol", 1e-8);
    w.set_attr("/hessian/train", "probes", std::int64_t{64});
    w.set_attr("/geometry/layer_00/overlap", "grid", std::vector<double>{0.5, 1.5});
    w.commit();
  }
  const std::string script = dir.file("check.py");
  testing::write_text(script, R"PY(
import sys
import h5py
import numpy as np

with h5py.File(sys.argv[1], "r") as f:
    a = f.attrs
    for key in ["moescope_version", "command_line", "created_utc", "checkpoint", "checkpoint_sha256",
                "checkpoint_hash_scope", "device"]:
        assert isinstance(a[key], str), (key, type(a[key]))
    assert a["command_line"] == "moescope geometry --checkpoint 'a b.safetensors' -o out.h5"
    assert a["device"] == "cuda:0"
    assert isinstance(a["seed"], np.int64) and a["seed"] == 1234567890123, repr(a["seed"])
    assert a["threads"] == 8

    ov = f["/geometry/layer_00/overlap"]
    assert ov.shape == (3, 5), ov.shape
    assert ov.dtype == np.dtype("<f8"), ov.dtype
    m = ov[()]
    assert m[1, 2] == 12 and m[2, 4] == 24 and m[0, 4] == 4, m
    assert list(ov.attrs["grid"]) == [0.5, 1.5]

    t = f["/hessian/train/trace"][()]
    assert isinstance(t, float) and t == 12.5, repr(t)
    h = f["/hessian/train"].attrs
    assert isinstance(h["method"], str) and h["method"] == "lanczos"
    assert isinstance(h["tol"], float) and h["tol"] == 1e-8, repr(h["tol"])
    assert h["probes"] == 64

    assert f["/train/step"].dtype == np.dtype("<i8")
    assert list(f["/train/step"][()]) == [10, 20, 30]
    assert [s for s in f["/names"].asstr()[()]] == ["router", "expert_0 \u2713"]
print("ok")
)PY");
  const std::string cmd = "/usr/bin/python3 '" + script + "' '" + path + "' 2>&1";
  std::FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof(buf), pipe)) out += buf;
  const int status = pclose(pipe);
  EXPECT_EQ(status, 0) << out;
  EXPECT_EQ(out, "ok\n");
}

// A report opened while another process writes it (issue 15). The other process is a child holding a ReportWriter
// (and so its NAME.tmp, locked) until the parent has tried; pipes order the two.
class OtherWriter {
 public:
  explicit OtherWriter(const std::string& path) {
    if (::pipe(ready_) != 0 || ::pipe(go_) != 0) throw std::runtime_error("pipe");
    pid_ = ::fork();
    if (pid_ == 0) {
      int code = 0;
      try {
        ReportWriter w(path);
        w.write_scalar("/x", 42.0);
        char c = 1;
        if (::write(ready_[1], &c, 1) != 1 || ::read(go_[0], &c, 1) != 1) code = 3;
        w.write_scalar("/y", 43.0);
        w.commit();
      } catch (...) {
        code = 4;
      }
      ::_exit(code);
    }
    char c = 0;
    if (::read(ready_[0], &c, 1) != 1) throw std::runtime_error("child did not start");
  }
  /// Lets the child finish and returns its exit code.
  int finish() {
    char c = 1;
    if (::write(go_[1], &c, 1) != 1) return -1;
    int status = 0;
    ::waitpid(pid_, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  pid_t pid() const { return pid_; }

 private:
  int ready_[2], go_[2];
  pid_t pid_ = -1;
};

TEST(Report, SecondWriterOfTheSameReportIsRefusedAndTheFirstIsUnharmed) {
  TempDir dir;
  const std::string path = dir.file("r.h5");
  OtherWriter other(path);
  const std::string m = input_error_message([&] { ReportWriter w(path); });
  EXPECT_EQ(m, path + ": another process is writing this report (" + path + ".tmp); wait for it or choose another -o");
  ASSERT_EQ(other.finish(), 0);
  ReportReader r(path);  // the first writer's report is whole: the refused one neither truncated nor removed it
  EXPECT_EQ(r.read_scalar("/x"), 42.0);
  EXPECT_EQ(r.read_scalar("/y"), 43.0);
}

TEST(Report, ReadingAFileAnotherProcessHasOpenForWritingSaysSo) {
  TempDir dir;
  const std::string path = dir.file("r.h5");
  OtherWriter other(path);  // HDF5 holds its own lock on r.h5.tmp while the child writes it
  const std::string m = input_error_message([&] { ReportReader r(path + ".tmp"); });
  EXPECT_EQ(m.rfind(path + ".tmp: cannot open report: another process has it open for writing (", 0), 0u) << m;
  EXPECT_EQ(testing::line_count(m), 0) << m;
  ASSERT_EQ(other.finish(), 0);
}

// Regression (kill harness, issue 15): past `ulimit -f` (SIGXFSZ ignored, writes fail with EFBIG) libhdf5 1.10.8
// crashed closing the half-written file (SIGSEGV in H5F__close). The writer must refuse with one InputError naming
// the report, and leave no temporary file. Run in a child: the file size limit is the process's.
TEST(Report, AFullDiskIsAnInputErrorNotACrash) {
  TempDir dir;
  const std::string path = dir.file("r.h5");
  const pid_t pid = ::fork();
  if (pid == 0) {
    std::signal(SIGXFSZ, SIG_IGN);
    const rlimit lim{16384, 16384};
    if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) ::_exit(5);
    int code = 0;
    try {
      ReportWriter w(path);
      const std::vector<double> big(1 << 16, 1.5);  // 512 KiB: past the limit
      for (int i = 0; i < 4; ++i) w.write("/v" + std::to_string(i), big, {big.size()});
      w.commit();
      code = 3;  // accepted: wrong
    } catch (const InputError& e) {
      const std::string m = e.what();
      code = m.rfind(path + ": cannot ", 0) == 0 && m.find('\n') == std::string::npos ? 0 : 4;
    } catch (...) {
      code = 6;
    }
    ::_exit(code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_FALSE(file_exists(path));
  EXPECT_FALSE(file_exists(path + ".tmp"));
}

}  // namespace
}  // namespace moescope

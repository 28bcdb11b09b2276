// torch.save files without LibTorch: fixtures written by PyTorch (tests/data/torch_pickle/make_fixtures.py)
// compared byte for byte with the tensors PyTorch itself wrote next to them, and hand-built archives and
// pickles for every error path and limit.
#include "moescope/io/torch_pickle.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "moescope/io/safetensors.hpp"
#include "moescope/util/error.hpp"
#include "support/fixtures.hpp"
#include "support/zip_builder.hpp"

namespace moescope {
namespace {

using testing::build_zip;
using testing::ZipMember;

const std::string kFixtures = std::string(MOESCOPE_SOURCE_DIR) + "/tests/data/torch_pickle/";

// ---------------------------------------------------------------------------------------------------------
// Fixtures written by PyTorch 1.13.

// Every tensor of `pt` equals the one of the same name in `expected` (a safetensors file the script wrote from
// torch's .contiguous() bytes): same names, dtypes, shapes and bytes. Bitwise, so no tolerance.
void expect_same_tensors(const TensorSource& got, const TensorSource& want) {
  ASSERT_EQ(got.tensors().size(), want.tensors().size()) << got.path();
  for (std::size_t i = 0; i < want.tensors().size(); ++i) {
    const TensorInfo& w = want.tensors()[i];
    const TensorInfo& g = got.tensors()[i];
    EXPECT_EQ(g.name, w.name);
    EXPECT_EQ(g.dtype, w.dtype) << w.name;
    EXPECT_EQ(g.shape, w.shape) << w.name;
    const ByteView gb = got.raw(g.name), wb = want.raw(w.name);
    ASSERT_EQ(gb.size, wb.size) << w.name;
    EXPECT_TRUE(gb.size == 0 || std::memcmp(gb.data, wb.data, gb.size) == 0) << w.name << " differs";
  }
}

class TorchPickleFixture : public ::testing::TestWithParam<const char*> {};

TEST_P(TorchPickleFixture, MatchesWhatPyTorchWrote) {
  const std::string name = GetParam();
  const auto src = read_torch_pickle(kFixtures + name + ".pt");
  const SafetensorsFile want(kFixtures + name + ".expected.safetensors");
  expect_same_tensors(*src, want);
  // The bytes entry point reads the same.
  const auto bytes = testing::read_bytes(kFixtures + name + ".pt");
  const auto mem = read_torch_pickle_bytes(bytes.data(), bytes.size(), name + ".pt");
  EXPECT_EQ(mem->path(), name + ".pt");
  expect_same_tensors(*mem, want);
}

INSTANTIATE_TEST_SUITE_P(Files, TorchPickleFixture,
                         ::testing::Values("dtypes", "views", "nested", "module", "parameters", "protocol4", "protocol1",
                                           "deflated"),
                         [](const ::testing::TestParamInfo<const char*>& i) { return std::string(i.param); });

TEST(TorchPickle, ViewsComeOutInRowMajorOrder) {
  const auto src = read_torch_pickle(kFixtures + "views.pt");
  // Values known from how the script built them (torch.arange), independent of the expected file.
  EXPECT_EQ(src->read_all_f64("transposed"), (std::vector<double>{0, 3, 1, 4, 2, 5}));
  EXPECT_EQ(src->read_all_f64("slice"), (std::vector<double>{2, 3, 4}));
  EXPECT_EQ(src->read_all_f64("every_third"), (std::vector<double>{0, 3, 6, 9}));
  EXPECT_EQ(src->read_all_f64("column"), (std::vector<double>{1, 5, 9}));
  EXPECT_EQ(src->read_all_f64("block"), (std::vector<double>{5, 6, 9, 10}));
  EXPECT_EQ(src->read_all_f64("expanded"), (std::vector<double>{0, 1, 2, 0, 1, 2}));
  EXPECT_EQ(src->read_all_f64("scalar"), (std::vector<double>{3.5}));
  EXPECT_EQ(src->at("scalar").shape, (std::vector<std::int64_t>{}));
  EXPECT_EQ(src->at("empty").shape, (std::vector<std::int64_t>{0, 3}));
  EXPECT_TRUE(src->read_all_f64("empty").empty());
  // Contiguous views are not copied: "slice" points into the same storage as "base", two elements on.
  EXPECT_EQ(src->raw("slice").data, src->raw("base").data + 2 * 4);
  // A partial read of a copied view.
  double two[2];
  src->read_f64("transposed", 3, 2, two);
  EXPECT_EQ(two[0], 4);
  EXPECT_EQ(two[1], 2);
}

TEST(TorchPickle, NestedDictsAreFlattenedAndOtherValuesSkipped) {
  const auto src = read_torch_pickle(kFixtures + "nested.pt");
  std::vector<std::string> names;
  for (const auto& t : src->tensors()) names.push_back(t.name);
  // epoch, name, best, done, nothing, history (a list holding a tensor) and the optimizer's int-keyed state
  // are not weights.
  EXPECT_EQ(names, (std::vector<std::string>{"model.deeper.x", "model.fc.bias", "model.fc.weight"}));
}

TEST(TorchPickle, ModuleStateDict) {
  const auto src = read_torch_pickle(kFixtures + "module.pt");
  std::vector<std::string> names;
  for (const auto& t : src->tensors()) names.push_back(t.name);
  EXPECT_EQ(names, (std::vector<std::string>{"0.bias", "0.weight", "1.bias", "1.num_batches_tracked",
                                             "1.running_mean", "1.running_var", "1.weight", "3.bias", "3.weight"}));
  EXPECT_EQ(src->at("1.num_batches_tracked").dtype, DType::I64);
  EXPECT_EQ(src->at("1.num_batches_tracked").shape, (std::vector<std::int64_t>{}));
  EXPECT_EQ(src->read_all_f64("1.num_batches_tracked"), (std::vector<double>{1}));
  EXPECT_EQ(src->at("0.weight").shape, (std::vector<std::int64_t>{8, 4}));
  EXPECT_EQ(src->read_all_f64("1.weight"), std::vector<double>(8, 1.0));  // BatchNorm's initial scale
}

TEST(TorchPickle, BareTensorIsNamedEmpty) {
  const auto src = read_torch_pickle(kFixtures + "bare_tensor.pt");
  ASSERT_EQ(src->tensors().size(), 1u);
  EXPECT_EQ(src->tensors()[0].name, "");
  EXPECT_EQ(src->tensors()[0].dtype, DType::I32);
  EXPECT_EQ(src->read_all_f64(""), (std::vector<double>{0, 1, 2, 3, 4}));
}

TEST(TorchPickle, APickledObjectIsNotAStateDict) {
  try {
    read_torch_pickle(kFixtures + "counter.pt");
    ADD_FAILURE() << "opened";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("collections.Counter object, not a state dict"), std::string::npos) << e.what();
  }
}

TEST(TorchPickle, ConcurrentReadsShareOneCopyAndReleaseKeepsData) {
  const auto src = read_torch_pickle(kFixtures + "views.pt");
  const std::vector<double> want = src->read_all_f64("permuted");
  std::vector<const std::uint8_t*> seen(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back([&, i] { seen[static_cast<std::size_t>(i)] = src->raw("permuted").data; });
  for (auto& t : threads) t.join();
  for (const auto* p : seen) EXPECT_EQ(p, seen[0]);
  for (const auto& t : src->tensors()) src->release(t.name);
  EXPECT_EQ(src->read_all_f64("permuted"), want);
  EXPECT_EQ(src->read_all_f64("base"), (std::vector<double>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
}

// ---------------------------------------------------------------------------------------------------------
// Hand-built pickles.

// Pickle bytes, built opcode by opcode.
struct Pickle {
  std::string b = "\x80\x02";  // PROTO 2

  Pickle& op(char c) {
    b += c;
    return *this;
  }
  template <std::size_t N>
  Pickle& raw(const char (&s)[N]) {  // a literal, NUL bytes included
    b.append(s, N - 1);
    return *this;
  }
  Pickle& str(const std::string& s) {  // BINUNICODE
    b += 'X';
    testing::put32(b, static_cast<std::uint32_t>(s.size()));
    b += s;
    return *this;
  }
  Pickle& global(const std::string& module, const std::string& name) {
    b += 'c' + module + "\n" + name + "\n";
    return *this;
  }
  Pickle& num(std::int64_t v) {  // BININT for 32-bit values, else LONG1 with 8 bytes
    if (v >= INT32_MIN && v <= INT32_MAX) {
      b += 'J';
      testing::put32(b, static_cast<std::uint32_t>(static_cast<std::int32_t>(v)));
    } else {
      b += "\x8a\x08";
      testing::put64(b, static_cast<std::uint64_t>(v));
    }
    return *this;
  }
  Pickle& ints(const std::vector<std::int64_t>& v) {  // a tuple of ints
    b += '(';
    for (auto x : v) num(x);
    b += 't';
    return *this;
  }
  Pickle& storage(const std::string& type, const std::string& key, std::int64_t numel) {
    b += '(';
    str("storage");
    global("torch", type);
    str(key);
    str("cpu");
    num(numel);
    b += "tQ";  // TUPLE, BINPERSID
    return *this;
  }
  Pickle& empty_hooks() {
    global("collections", "OrderedDict");
    b += ")R";
    return *this;
  }
  // torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())
  Pickle& tensor(const std::string& type, const std::string& key, std::int64_t numel, std::int64_t offset,
                 const std::vector<std::int64_t>& size, const std::vector<std::int64_t>& stride) {
    global("torch._utils", "_rebuild_tensor_v2");
    b += '(';
    storage(type, key, numel);
    num(offset);
    ints(size);
    ints(stride);
    b += '\x89';  // NEWFALSE
    empty_hooks();
    b += "tR";
    return *this;
  }
  Pickle& stop() {
    b += '.';
    return *this;
  }
};

std::string f32(const std::vector<float>& v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), v.data(), s.size());
  return s;
}

// A torch.save-style archive: archive/data.pkl, archive/data/<key> for each storage, archive/version.
std::string torch_zip(const std::string& pickle, const std::vector<std::pair<std::string, std::string>>& storages,
                      bool zip64 = false, std::vector<ZipMember> extra = {}) {
  std::vector<ZipMember> m{{"archive/data.pkl", pickle, false}};
  for (const auto& [k, v] : storages) m.push_back({"archive/data/" + k, v, false});
  m.push_back({"archive/version", "3\n", false});
  for (auto& e : extra) m.push_back(std::move(e));
  return build_zip(m, zip64);
}

std::unique_ptr<TensorSource> open_bytes(const std::string& archive) {
  return read_torch_pickle_bytes(reinterpret_cast<const std::uint8_t*>(archive.data()), archive.size(), "t.pt");
}

std::string open_error(const std::string& archive) {
  try {
    const auto src = open_bytes(archive);
    for (const auto& t : src->tensors()) src->raw(t.name);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_ERROR(archive, text)                                                           \
  do {                                                                                        \
    const std::string err_ = open_error(archive);                                             \
    EXPECT_NE(err_.find(text), std::string::npos) << "'" << err_ << "' lacks '" << (text) << "'"; \
    EXPECT_EQ(err_.rfind("t.pt: ", 0), 0u) << err_;                                           \
  } while (0)

// {"w": a 2x2 float tensor over storage "0"}
Pickle one_tensor(const std::string& type = "FloatStorage", std::int64_t numel = 4, std::int64_t offset = 0,
                  std::vector<std::int64_t> size = {2, 2}, std::vector<std::int64_t> stride = {2, 1}) {
  Pickle p;
  p.op('}').op('(').str("w").tensor(type, "0", numel, offset, size, stride).op('u').stop();
  return p;
}

TEST(TorchPickleBuilt, MinimalStateDictAndZip64) {
  for (bool zip64 : {false, true}) {
    const auto src = open_bytes(torch_zip(one_tensor().b, {{"0", f32({1, 2, 3, 4})}}, zip64));
    ASSERT_EQ(src->tensors().size(), 1u);
    EXPECT_EQ(src->read_all_f64("w"), (std::vector<double>{1, 2, 3, 4}));
  }
}

TEST(TorchPickleBuilt, AllowListedGlobals) {
  const std::string s = f32({1, 2, 3, 4});
  {  // Parameter via _rebuild_parameter, _rebuild_from_type_v2 around a tensor with Python state,
     // TorchScript's restore_type_tag, OrderedDict from a list of pairs, torch.nn.Parameter via NEWOBJ
    Pickle p;
    p.global("torch.jit._pickle", "restore_type_tag");
    p.global("collections", "OrderedDict").op(']').op('(');
    p.op('(').str("param").global("torch._utils", "_rebuild_parameter").op('(');
    p.tensor("FloatStorage", "0", 4, 0, {4}, {1}).op('\x88').empty_hooks().op('t').op('R').op('t');
    p.op('(').str("typed").global("torch._tensor", "_rebuild_from_type_v2").op('(');
    p.global("torch._utils", "_rebuild_tensor_v2").global("torch", "Tensor");
    p.op('(').storage("FloatStorage", "0", 4).num(1).ints({2}).ints({1}).op('\x89').empty_hooks().op('t');
    p.op('}').op('t').op('R').op('t');
    p.op('(').str("newobj").global("torch.nn.parameter", "Parameter").op('(');
    p.tensor("FloatStorage", "0", 4, 3, {1}, {1}).op('t').op('\x81').op('t');
    p.op('e').op('\x85').op('R');  // APPENDS, TUPLE1 (the list of pairs), REDUCE
    p.str("Dict[str, Tensor]").op('\x86').op('R').stop();
    const auto src = open_bytes(torch_zip(p.b, {{"0", s}}));
    EXPECT_EQ(src->read_all_f64("param"), (std::vector<double>{1, 2, 3, 4}));
    EXPECT_EQ(src->read_all_f64("typed"), (std::vector<double>{2, 3}));
    EXPECT_EQ(src->read_all_f64("newobj"), (std::vector<double>{4}));
  }
  {  // _rebuild_tensor_v3 over an UntypedStorage (bytes) with a float8 dtype
    Pickle p;
    p.op('}').op('(').str("f8").global("torch._utils", "_rebuild_tensor_v3").op('(');
    p.storage("UntypedStorage", "0", 4).num(0).ints({4}).ints({1}).op('\x89').empty_hooks();
    p.global("torch", "float8_e4m3fn").op('t').op('R').op('u').stop();
    const std::string bytes("\x38\x40\xb8\x00", 4);  // e4m3: 1.0, 2.0, -1.0, 0.0
    const auto src = open_bytes(torch_zip(p.b, {{"0", bytes}}));
    EXPECT_EQ(src->at("f8").dtype, DType::F8_E4M3);
    EXPECT_EQ(src->read_all_f64("f8"), (std::vector<double>{1, 2, -1, 0}));
  }
  {  // protocol 0/1 text opcodes: DICT from a mark, INT, FLOAT, PUT/GET, and objects of other modules skipped
    Pickle p;
    p.op('(').str("n").raw("I42\n").str("x").raw("F0.5\n").str("args");
    p.global("argparse", "Namespace").op(')').op('R').raw("p7\n").str("w");
    p.tensor("FloatStorage", "0", 4, 0, {2, 2}, {1, 2}).str("again").raw("g7\n").op('d').stop();
    const auto src = open_bytes(torch_zip(p.b, {{"0", s}}));
    ASSERT_EQ(src->tensors().size(), 1u);
    EXPECT_EQ(src->read_all_f64("w"), (std::vector<double>{1, 3, 2, 4}));
  }
}

TEST(TorchPickleBuilt, TensorProblemsNameTheKey) {
  const std::string s = f32({1, 2, 3, 4});
  // The storage holds 4 floats; the view needs 5.
  EXPECT_ERROR(torch_zip(one_tensor("FloatStorage", 4, 0, {5}, {1}).b, {{"0", s}}),
               "tensor 'w': offset 0, size [5] and stride [1] reach element 4 of a storage of 4 F32 elements (16 bytes)");
  EXPECT_ERROR(torch_zip(one_tensor("FloatStorage", 4, 1, {2, 2}, {2, 1}).b, {{"0", s}}), "tensor 'w': offset 1");
  EXPECT_ERROR(torch_zip(one_tensor("FloatStorage", 4, 0, {2, 2}, {3, 1}).b, {{"0", s}}), "reach element 4");
  // The persistent id and the record disagree.
  EXPECT_ERROR(torch_zip(one_tensor("FloatStorage", 3).b, {{"0", s}}),
               "tensor 'w': storage '0' declares 3 elements of 4 bytes but 'archive/data/0' holds 16 bytes");
  EXPECT_ERROR(torch_zip(one_tensor("DoubleStorage").b, {{"0", s}}), "declares 4 elements of 8 bytes");
  EXPECT_ERROR(torch_zip(one_tensor().b, {}), "tensor 'w': storage '0' has no member 'archive/data/0'");
  // Types that are not read.
  EXPECT_ERROR(torch_zip(one_tensor("ComplexFloatStorage", 2).b, {{"0", s}}),
               "tensor 'w': complex64 tensors are not supported (torch.ComplexFloatStorage)");
  EXPECT_ERROR(torch_zip(one_tensor("QInt8Storage", 16).b, {{"0", s}}), "tensor 'w': quantized tensors are not supported");
  EXPECT_ERROR(torch_zip(one_tensor("EvilStorage").b, {{"0", s}}), "tensor 'w': unknown storage type torch.EvilStorage");
  {
    Pickle p;
    p.op('}').op('(').str("w").global("torch._utils", "_rebuild_tensor_v2").op('(');
    p.op('(').str("storage").global("os", "system").str("0").str("cpu").num(4).op('t').op('Q');
    p.num(0).ints({4}).ints({1}).op('\x89').empty_hooks().op('t').op('R').op('u').stop();
    EXPECT_ERROR(torch_zip(p.b, {{"0", s}}), "tensor 'w': unknown storage type os.system");
  }
  {  // quantized tensors are rebuilt by another function
    Pickle p;
    p.op('}').op('(').str("q").global("torch._utils", "_rebuild_qtensor").op('(').storage("QInt8Storage", "0", 16);
    p.op('t').op('R').op('u').stop();
    EXPECT_ERROR(torch_zip(p.b, {{"0", s}}), "tensor 'q': unsupported object torch._utils._rebuild_qtensor");
  }
  // Huge or overflowing sizes and strides.
  EXPECT_ERROR(torch_zip(one_tensor("FloatStorage", 4, 0, {1ll << 40, 1ll << 40}, {1, 1}).b, {{"0", s}}),
               "tensor 'w': size [1099511627776, 1099511627776] with stride [1, 1] overflows 64 bits");
  EXPECT_ERROR(torch_zip(one_tensor("FloatStorage", 4, 0, {3, 3}, {1ll << 62, 1ll << 62}).b, {{"0", s}}),
               "overflows 64 bits");
  EXPECT_ERROR(torch_zip(one_tensor("FloatStorage", 4, 0, {1ll << 61}, {0}).b, {{"0", s}}), "tensor 'w': size [2305843009213693952] is too large");
  EXPECT_ERROR(torch_zip(one_tensor("FloatStorage", 4, -1, {2}, {1}).b, {{"0", s}}), "storage offset is not a non-negative");
  EXPECT_ERROR(torch_zip(one_tensor("FloatStorage", 4, 0, {2, -2}, {1, 1}).b, {{"0", s}}), "size is not a tuple");
  EXPECT_ERROR(torch_zip(one_tensor("FloatStorage", 4, 0, {2, 2}, {1}).b, {{"0", s}}), "differ in length");
  // Stride 0 makes a large view of a small storage; within the copy allowance it reads (every element the first).
  {
    const auto src = open_bytes(torch_zip(one_tensor("FloatStorage", 4, 0, {1000, 1000}, {0, 0}).b, {{"0", s}}));
    const auto v = src->read_all_f64("w");
    EXPECT_EQ(v.size(), 1000000u);
    EXPECT_EQ(v.back(), 1.0);
  }
  // Beyond it, refused before anything is allocated.
  EXPECT_ERROR(torch_zip(one_tensor("FloatStorage", 4, 0, {1 << 16, 1 << 16}, {0, 0}).b, {{"0", s}}),
               "tensor 'w': non-contiguous views need 17179869184 bytes of copies");
}

TEST(TorchPickleBuilt, StructureErrors) {
  const std::string s = f32({1, 2, 3, 4});
  const std::vector<std::pair<std::string, std::string>> st{{"0", s}};
  EXPECT_ERROR(std::string(), "empty file");
  EXPECT_ERROR(std::string("\x80\x02}q\x00.", 6), "not a zip-format torch.save file");
  EXPECT_ERROR(build_zip({{"data.pkl", one_tensor().b}}), "member 'data.pkl' is not in a folder");
  EXPECT_ERROR(build_zip({{"a/data/0", s}}), "no 'a/data.pkl' in the archive");
  EXPECT_ERROR(torch_zip(one_tensor().b, st, false, {{"archive/byteorder", "big"}}), "big-endian");
  EXPECT_ERROR(torch_zip(one_tensor().b, st, false, {{"archive/byteorder", "middle"}}), "unknown byteorder 'middle'");
  // Text from the file is escaped: messages stay on one line.
  EXPECT_ERROR(torch_zip(one_tensor().b, st, false, {{"archive/byteorder", "lit\ntle"}}), "unknown byteorder 'lit\\x0atle'");
  EXPECT_NO_THROW(open_bytes(torch_zip(one_tensor().b, st, false, {{"archive/byteorder", "little"}})));
  // Empty state dicts and non-dicts.
  EXPECT_ERROR(torch_zip(Pickle().op('}').stop().b, st), "no tensors found");
  EXPECT_ERROR(torch_zip(Pickle().num(5).stop().b, st), "no tensors found");
  // Pickle VM errors carry the member and byte offset.
  EXPECT_ERROR(torch_zip(Pickle().stop().b, st), "archive/data.pkl: byte 2: stack underflow");
  EXPECT_ERROR(torch_zip(Pickle().op('}').b, st), "pickle ends without STOP");
  EXPECT_ERROR(torch_zip(Pickle().op('\xff').b, st), "byte 2: unknown opcode 0xff");
  EXPECT_ERROR(torch_zip(Pickle().op('S').b, st), "opcode 0x53 STRING (protocol 0 string) is not supported");
  EXPECT_ERROR(torch_zip(Pickle().raw("X\xff\xff\xff\xff").b, st), "a length of 4294967295 bytes runs past the end");
  EXPECT_ERROR(torch_zip(Pickle().raw("\x8d\xff\xff\xff\xff\xff\xff\xff\xff").b, st), "runs past the end of the pickle");
  EXPECT_ERROR(torch_zip(Pickle().raw("J\x01\x02").b, st), "pickle truncated");
  EXPECT_ERROR(torch_zip(Pickle().raw("h\x05").b, st), "memo key 5 is not defined");
  EXPECT_ERROR(torch_zip(Pickle().raw("\x80\x06").b, st), "pickle protocol 6");
  EXPECT_ERROR(torch_zip(Pickle().op('t').b, st), "no MARK to pop to");
  EXPECT_ERROR(torch_zip(Pickle().op('}').op('(').str("k").op('u').b, st), "SETITEMS with an odd number of items");
  EXPECT_ERROR(torch_zip(Pickle().op(')').str("k").num(1).op('s').b, st), "SETITEM on a tuple");
  EXPECT_ERROR(torch_zip(Pickle().str("\xc3\x28").b, st), "not valid UTF-8");
  EXPECT_ERROR(torch_zip(Pickle().op('}').num(1).op('R').b, st), "REDUCE arguments are a int, not a tuple");
  EXPECT_ERROR(torch_zip(Pickle().op('(').str("a").str("b").str("c").op('t').op('Q').b, st),
               "persistent id is not ('storage', type, key, location, size)");
  // Two tensors flattening to one name.
  {
    Pickle p;
    p.op('}').op('(').str("a.b").tensor("FloatStorage", "0", 4, 0, {4}, {1});
    p.str("a").op('}').op('(').str("b").tensor("FloatStorage", "0", 4, 0, {4}, {1}).op('u').op('u').stop();
    EXPECT_ERROR(torch_zip(p.b, st), "two tensors flatten to the name 'a.b'");
  }
  // A CRC mismatch in a storage shows when the tensor is read.
  {
    std::string a = torch_zip(one_tensor().b, st);
    const auto at = a.find(s);
    a[at] ^= 1;
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION  // fuzz builds compute CRC-32s without enforcing them
    const auto src = open_bytes(a);
    EXPECT_THROW(src->raw("w"), InputError);
    EXPECT_ERROR(a, "member 'archive/data/0': CRC-32 mismatch");
#endif
  }
  // A data.pkl over the limit is refused from its declared size, before inflating anything.
  {
    // Declared deflated, with a size within deflate's ratio to its 300 KiB but over the pickle limit.
    const std::string junk(300 << 10, 'j');
    testing::ZipLayout l;
    std::string a = build_zip({{"archive/data.pkl", junk, false}}, false, &l);
    testing::patch(a, l.central[0] + 10, 8, 2);
    testing::patch(a, l.central[0] + 24, kMaxTorchPickleBytes + 1, 4);
    EXPECT_ERROR(a, "exceeds the limit of 268435456");
  }
}

TEST(TorchPickleBuilt, NestingAndSharingLimits) {
  const std::string s = f32({1, 2, 3, 4});
  const std::vector<std::pair<std::string, std::string>> st{{"0", s}};
  // Lists nested past the depth limit (Python's own unpickler would recurse to a stack overflow on destruction).
  {
    Pickle p;
    for (int i = 0; i < 5000; ++i) p.op(']');
    for (int i = 0; i < 4999; ++i) p.op('a');
    p.stop();
    EXPECT_ERROR(torch_zip(p.b, st), "containers nested deeper than 200 levels");
  }
  {  // 150 levels of dicts are fine; the tensor at the bottom gets a 150-part name
    Pickle p;
    for (int i = 0; i < 150; ++i) p.op('}').str("d");
    p.tensor("FloatStorage", "0", 4, 0, {4}, {1});
    for (int i = 0; i < 150; ++i) p.op('s');
    p.stop();
    const auto src = open_bytes(torch_zip(p.b, st));
    ASSERT_EQ(src->tensors().size(), 1u);
    EXPECT_EQ(src->tensors()[0].name.size(), 150u * 2 - 1);
  }
  // A list that holds itself.
  EXPECT_ERROR(torch_zip(Pickle().raw("]q\x00h\x00" "a.").b, st), "a container that holds itself");
  // A container changed after being nested (how longer cycles would be built).
  EXPECT_ERROR(torch_zip(Pickle().raw("]q\x00]q\x01h\x00" "a" "h\x00]a.").b, st), "a list changed after being placed");
  // Dicts shared along 2^40 paths: the flattened names would never end.
  {
    Pickle p;
    p.op('}').op('(').str("w").tensor("FloatStorage", "0", 4, 0, {4}, {1}).op('u');
    p.raw("r\x00\x00\x00\x00");  // LONG_BINPUT 0
    for (std::uint32_t i = 1; i <= 40; ++i) {
      p.op('}').op('(').str("a").raw("j");
      testing::put32(p.b, i - 1);
      p.str("b").raw("j");
      testing::put32(p.b, i - 1);
      p.op('u').raw("r");
      testing::put32(p.b, i);
    }
    p.stop();
    EXPECT_ERROR(torch_zip(p.b, st), "flattened names exceed the limit");
  }
  // A tensor shared under two names is read once, without a copy.
  {
    Pickle p;
    p.op('}').op('(').str("x").tensor("FloatStorage", "0", 4, 0, {4}, {1}).raw("q\x09").str("y").raw("h\x09").op('u').stop();
    const auto src = open_bytes(torch_zip(p.b, st));
    EXPECT_EQ(src->raw("x").data, src->raw("y").data);
  }
}

}  // namespace
}  // namespace moescope

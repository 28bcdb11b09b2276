// io/tensor: tensor descriptions and the in-memory TensorSource every reader's tests lean on.
#include "moescope/io/tensor.hpp"

#include <gtest/gtest.h>


#include "moescope/util/error.hpp"
#include "support/fixtures.hpp"

namespace moescope {
namespace {

using testing::f32_bytes;

TEST(Tensor, InfoSizesAndShapes) {
  const TensorInfo t{"w", DType::BF16, {3, 4, 5}};
  EXPECT_EQ(t.numel(), 60);
  EXPECT_EQ(t.nbytes(), 120u);
  EXPECT_EQ(TensorInfo({"s", DType::F64, {}}).numel(), 1);  // a scalar
  EXPECT_EQ(TensorInfo({"e", DType::F32, {0, 7}}).nbytes(), 0u);
  EXPECT_EQ(shape_string({8, 4096, 14336}), "[8, 4096, 14336]");
  EXPECT_EQ(shape_string({}), "[]");
  for (DType d : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64, DType::U8, DType::BOOL})
    EXPECT_EQ(parse_dtype(dtype_name(d)), d) << dtype_name(d);
  EXPECT_FALSE(parse_dtype("Q7").has_value());
}

TEST(Tensor, MemorySourceFindsReadsAndSlices) {
  MemoryTensorSource src("mem");
  src.add({"b", DType::F32, {2, 2}}, f32_bytes({1, 2, 3, 4}));
  src.add({"a", DType::F32, {3}}, f32_bytes({-1, 0.5f, 8}));
  ASSERT_EQ(src.tensors().size(), 2u);
  EXPECT_EQ(src.tensors()[0].name, "a");  // sorted by name for binary search
  EXPECT_EQ(src.find("b")->shape, (std::vector<std::int64_t>{2, 2}));
  EXPECT_EQ(src.find("c"), nullptr);
  EXPECT_EQ(src.read_all_f64("a"), (std::vector<double>{-1, 0.5, 8}));
  double two[2];
  src.read_f64("b", 1, 2, two);
  EXPECT_EQ(two[0], 2.0);
  EXPECT_EQ(two[1], 3.0);
  try {
    src.at("c");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("mem"), std::string::npos) << e.what();
  }
  EXPECT_THROW(src.add({"x", DType::F32, {3}}, f32_bytes({1, 2})), InputError);  // 8 bytes for 12
  EXPECT_THROW(src.add({"a", DType::F32, {1}}, f32_bytes({1})), InputError);     // a duplicate name
}

}  // namespace
}  // namespace moescope

#include "moescope/curvature/operator.hpp"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

namespace moescope {
namespace {

Eigen::MatrixXd small_symmetric() {
  Eigen::MatrixXd a(3, 3);
  a << 2, -1, 0, -1, 2, -1, 0, -1, 2;
  return a;
}

TEST(DenseOperator, AppliesAndCountsMatvecs) {
  DenseOperator op(small_symmetric());
  EXPECT_EQ(op.size(), 3);
  const Eigen::Vector3d x(1.0, 2.0, 3.0);
  EXPECT_EQ(op.apply(Eigen::VectorXd(x)), small_symmetric() * x);
  EXPECT_EQ(op.matvecs(), 1);
  const Eigen::MatrixXd block = Eigen::MatrixXd::Random(3, 4);
  // Integer-free products may differ in the last bit between GEMM and GEMV paths: compare to rounding.
  EXPECT_LE((op.apply_block(block) - small_symmetric() * block).cwiseAbs().maxCoeff(), 1e-15);
  EXPECT_EQ(op.matvecs(), 5);  // a block of 4 columns counts 4
  op.reset_matvecs();
  EXPECT_EQ(op.matvecs(), 0);
  EXPECT_THROW(op.apply(Eigen::VectorXd(4)), std::invalid_argument);
}

TEST(DenseOperator, RejectsNonSquareOrAsymmetric) {
  EXPECT_THROW(DenseOperator(Eigen::MatrixXd(2, 3)), std::invalid_argument);
  EXPECT_THROW(DenseOperator(Eigen::MatrixXd(0, 0)), std::invalid_argument);
  Eigen::MatrixXd a = small_symmetric();
  a(0, 2) = 0.5;
  try {
    DenseOperator op(a);
    ADD_FAILURE() << "accepted an asymmetric matrix";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("0.5"), std::string::npos) << e.what();
  }
  // Rounding-level asymmetry (as from Q D Q^T) passes.
  a = small_symmetric();
  a(0, 1) += 1e-14;
  EXPECT_NO_THROW(DenseOperator{a});
}

TEST(FunctionOperator, WrapsAFunctionAndItsBlockDefault) {
  // y = 3 x: the default apply_block calls the function once per column.
  int calls = 0;
  FunctionOperator op(4, [&](const double* x, double* y) {
    ++calls;
    for (int i = 0; i < 4; ++i) y[i] = 3.0 * x[i];
  });
  const Eigen::MatrixXd x = Eigen::MatrixXd::Ones(4, 2);
  EXPECT_EQ(op.apply_block(x), 3.0 * x);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(op.matvecs(), 2);
  EXPECT_THROW(FunctionOperator(0, [](const double*, double*) {}), std::invalid_argument);
  EXPECT_THROW(FunctionOperator(3, nullptr), std::invalid_argument);
}

TEST(SpectraAdapter, ExposesSpectrasOperatorConcept) {
  DenseOperator op(small_symmetric());
  const SpectraAdapter ad(op);
  EXPECT_EQ(ad.rows(), 3);
  EXPECT_EQ(ad.cols(), 3);
  const Eigen::Vector3d x(1.0, 0.0, -1.0);
  Eigen::Vector3d y;
  ad.perform_op(x.data(), y.data());
  EXPECT_EQ(y, small_symmetric() * x);
  EXPECT_EQ(ad.calls(), 1);
  EXPECT_EQ(op.matvecs(), 1);
}

TEST(SolverStatus, Names) {
  EXPECT_STREQ(status_name(SolverStatus::Converged), "converged");
  EXPECT_STREQ(status_name(SolverStatus::NotConverged), "not_converged");
  EXPECT_STREQ(status_name(SolverStatus::NumericalIssue), "numerical_issue");
}

}  // namespace
}  // namespace moescope

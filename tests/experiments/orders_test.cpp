// The orders table (`diffode orders`, results/orders.md) asserted row by row: every case of
// problems/order_cases.hpp shows its declared order, as the solver tests require of theirs.
#include "experiments/run/orders.hpp"
#include "problems/order_cases.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

namespace diffode {
namespace {

TEST(OrdersTable, EveryCaseShowsItsDeclaredOrder) {
  const OrdersOptions options;  // the command's defaults: the published table
  const std::vector<OrderRow> rows = measure_orders(options);
  std::size_t cases = 1;  // the weak row
  order_cases::for_each_ode_case([&](const auto&, const auto&, const auto&) { ++cases; });
  order_cases::for_each_strong_case(options.paths, [&](const auto&, const auto&, const auto&) { ++cases; });
  ASSERT_EQ(rows.size(), cases);
  for (const OrderRow& r : rows) {
    std::printf("  %-18s %-11s %-36s declared %.2f fitted %.3f\n", r.stepper.c_str(), r.kind.c_str(), r.problem.c_str(),
                r.declared, r.fitted);
    ASSERT_EQ(r.errors.size(), r.steps.size()) << r.stepper << " on " << r.problem;
    for (std::size_t i = 0; i < r.errors.size(); ++i) {
      EXPECT_TRUE(std::isfinite(r.errors[i]) && r.errors[i] > 0) << r.stepper << " on " << r.problem << " at " << r.steps[i];
      if (i > 0) {
        EXPECT_LT(r.errors[i], r.errors[i - 1]) << r.stepper << " on " << r.problem << " at " << r.steps[i];
      }
    }
    EXPECT_NEAR(r.fitted, r.declared, 0.2) << r.stepper << " (" << r.kind << ") on " << r.problem;
  }
}

}  // namespace
}  // namespace diffode

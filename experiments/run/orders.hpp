// The orders table: every stepper on the problems with known solutions, its declared order beside
// the least-squares slope of log(error) against log(h) measured here (core/slope_fit.hpp). The
// cases are problems/order_cases.hpp's, which tests/experiments/orders_test.cpp asserts.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace diffode {

struct OrderRow {
  std::string stepper;
  std::string kind;      // "ODE", "SDE strong", "SDE weak"
  std::string problem;
  double declared = 0;
  double fitted = 0;
  std::vector<int> steps;
  std::vector<double> errors;
  int paths = 0;         // SDE rows: Brownian paths averaged over
};

struct OrdersOptions {
  int paths = 200;       // Brownian paths for the strong-order rows
  unsigned long long seed = 0;
};

std::vector<OrderRow> measure_orders(const OrdersOptions& options);

// Adaptive Dopri5: error, steps and rejections as the tolerance tightens.
struct ToleranceRow {
  double tolerance;
  double error;
  long long steps, rejected, nfe;
};
std::vector<ToleranceRow> measure_adaptive(const OrdersOptions& options);
void print_adaptive(std::ostream& out, const std::vector<ToleranceRow>& rows);
void write_adaptive_markdown(std::ostream& out, const std::vector<ToleranceRow>& rows);

// A fixed-width table for the terminal, a Markdown table and a CSV file.
void print_orders(std::ostream& out, const std::vector<OrderRow>& rows);
void write_orders_markdown(std::ostream& out, const std::vector<OrderRow>& rows, const std::string& command);
void write_orders_csv(std::ostream& out, const std::vector<OrderRow>& rows);

}  // namespace diffode

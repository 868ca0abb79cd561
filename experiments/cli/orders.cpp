// `diffode orders`: fit every stepper's order on the known-solution problems; write the tables.
#include "experiments/cli/commands.hpp"
#include "experiments/run/orders.hpp"
#include "experiments/run/output.hpp"

#include <fmt/format.h>

#include <cmath>
#include <fstream>
#include <iostream>

namespace diffode {

int run_orders_command(const OrdersOptions& options, const std::filesystem::path& out_dir, const std::string& command) {
  // The folder is checked before the measurement, which takes minutes.
  try {
    check_output_folder("--out", out_dir);
  } catch (const ConfigError& e) {
    std::cerr << "diffode orders: " << e.what() << "\n";
    return 2;
  }
  const auto rows = measure_orders(options);
  const auto adaptive = measure_adaptive(options);
  print_orders(std::cout, rows);
  print_adaptive(std::cout, adaptive);
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  const auto md = out_dir / "orders.md";
  const auto csv = out_dir / "orders.csv";
  std::ofstream md_file(md), csv_file(csv);
  if (!md_file || !csv_file) {
    std::cerr << fmt::format("diffode orders: cannot write in {}\n", out_dir.string());
    return 2;
  }
  write_orders_markdown(md_file, rows, command);
  write_adaptive_markdown(md_file, adaptive);
  write_orders_csv(csv_file, rows);
  std::cout << fmt::format("\nwrote {} and {}\n", md.string(), csv.string()) << std::flush;
  for (const auto& r : rows)
    if (!(std::abs(r.fitted - r.declared) <= 0.25))
      std::cerr << fmt::format("warning: {} on {} fitted {:.2f}, declared {:.2f}\n", r.stepper, r.problem, r.fitted, r.declared);
  return 0;
}

}  // namespace diffode

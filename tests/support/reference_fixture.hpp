// Reference fixtures: what k-diffusion, DPM-Solver and UniPC compute on the exact-mixture problems,
// stored as small text files (tests/data/reference/*.txt, written by tools/reference/run_reference.py),
// and the case files those runs start from (tests/data/reference/cases/*.txt, written by this
// project's reference_test --gtest_also_run_disabled_tests, so Python never re-implements the
// mixtures' random construction nor the initial noise).
//
// One format for both, line oriented, numbers in %.17g (exact round trip of a double):
//   # comment
//   <key> <value...>                         a scalar entry: the rest of the line, as text
//   vector <name> <n>        then n lines, one number each
//   matrix <name> <rows> <cols>   then rows lines of cols numbers
// Keys and names are unique within a file.
//
// A case file (one per standard problem, e.g. cases/ring2d_vp.txt) carries `mixture`, `process`,
// the scale-free range `sigma_max`/`sigma_min` and `t_max`/`t_min`, the mixture (`vector weights`,
// `matrix means`, `matrix variances`), the scaled initial state `matrix x_T` (8 samples), and the
// stochastic samplers' grid `vector noise_sigmas` with diffode's standard normals for each of its
// steps (`noise_seed`, `matrix noise_0`, `noise_1`, ...).
// A fixture carries `reference` (the reference call it records), `case` (mixture and process),
// `sampler` (diffode's function that must reproduce it), `nfe` (the reference's model calls),
// `option <key> <value>` lines (diffode's option fields), `vector sigmas` (the scale-free grid
// sigma~ = sigma/alpha, as diffode's sampler is given it), `matrix x_out` (the reference's result,
// scaled: x~ = x / alpha at the grid's last point), and for stochastic runs `noise_seed`.
// Samplers that choose their own steps from a range (sample_dpm_solver_fast,
// sample_dpm_solver_adaptive) have no grid: their `vector sigmas` holds two values, the range
// [sigma~_start, sigma~_end] they are given, and the options carry the rest (`nfe` and `order`;
// `order`, `rtol`, `atol`, `h_init`, the controller and its coefficients). An adaptive fixture also
// carries the reference's accepted and rejected step counts, `accepted` and `rejected`. Entries the
// replay does not read (`timesteps`, `orders`, `quad_vs_exact`) record the reference's own grid or
// findings for whoever reads the file.
#pragma once

#include "core/state.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace diffode::testing {

// The folder of the committed fixtures: tests/data/reference beside this header's folder. __FILE__
// is absolute in CMake builds, so the tests find their data from any working directory.
inline std::filesystem::path reference_data_dir() {
  return std::filesystem::path(__FILE__).parent_path().parent_path() / "data" / "reference";
}

struct TextRecord {
  std::string path;
  std::map<std::string, std::string> entries;  // scalar entries, `option <k>` stored as "option.<k>"
  std::map<std::string, std::vector<double>> vectors;
  std::map<std::string, Batch> matrices;

  const std::string& entry(const std::string& key) const {
    const auto it = entries.find(key);
    if (it == entries.end()) throw std::runtime_error(fmt::format("{}: no entry '{}'", path, key));
    return it->second;
  }
  bool has(const std::string& key) const { return entries.count(key) > 0; }
  double number(const std::string& key) const { return std::stod(entry(key)); }
  std::string option(const std::string& key, const std::string& fallback) const {
    const auto it = entries.find("option." + key);
    return it == entries.end() ? fallback : it->second;
  }
  double option(const std::string& key, double fallback) const {
    const auto it = entries.find("option." + key);
    return it == entries.end() ? fallback : std::stod(it->second);
  }
  const std::vector<double>& vector(const std::string& name) const {
    const auto it = vectors.find(name);
    if (it == vectors.end()) throw std::runtime_error(fmt::format("{}: no vector '{}'", path, name));
    return it->second;
  }
  const Batch& matrix(const std::string& name) const {
    const auto it = matrices.find(name);
    if (it == matrices.end()) throw std::runtime_error(fmt::format("{}: no matrix '{}'", path, name));
    return it->second;
  }
};

inline TextRecord read_record(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error(fmt::format("cannot open {}", file.string()));
  TextRecord r;
  r.path = file.string();
  std::string line;
  int line_no = 0;
  auto next_numbers = [&](Index count, double* out) {
    Index got = 0;
    while (got < count && std::getline(in, line)) {
      ++line_no;
      std::istringstream row(line);
      std::string token;
      while (got < count && row >> token) out[got++] = std::stod(token);
    }
    if (got < count) throw std::runtime_error(fmt::format("{}:{}: expected {} more numbers", r.path, line_no, count - got));
  };
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream head(line);
    std::string key;
    head >> key;
    if (key == "vector") {
      std::string name;
      Index n = 0;
      head >> name >> n;
      std::vector<double> v(n);
      next_numbers(n, v.data());
      r.vectors[name] = std::move(v);
    } else if (key == "matrix") {
      std::string name;
      Index rows = 0, cols = 0;
      head >> name >> rows >> cols;
      Batch m(rows, cols);  // row-major: the file's order
      next_numbers(rows * cols, m.data());
      r.matrices[name] = std::move(m);
    } else {
      std::string rest;
      std::getline(head >> std::ws, rest);
      if (key == "option") {
        std::istringstream kv(rest);
        std::string k, v;
        kv >> k >> std::ws;
        std::getline(kv, v);
        key = "option." + k;
        rest = v;
      }
      if (!r.entries.emplace(key, rest).second)
        throw std::runtime_error(fmt::format("{}:{}: duplicate entry '{}'", r.path, line_no, key));
    }
  }
  return r;
}

// Writes numbers in %.17g, which reads back to the same double.
class RecordWriter {
 public:
  explicit RecordWriter(const std::filesystem::path& file) : out_(file) {
    if (!out_) throw std::runtime_error(fmt::format("cannot write {}", file.string()));
  }
  void comment(const std::string& text) { out_ << "# " << text << '\n'; }
  void entry(const std::string& key, const std::string& value) { out_ << key << ' ' << value << '\n'; }
  void vector(const std::string& name, const std::vector<double>& v) {
    out_ << "vector " << name << ' ' << v.size() << '\n';
    for (double x : v) out_ << fmt::format("{:.17g}\n", x);
  }
  void matrix(const std::string& name, const Batch& m) {
    out_ << "matrix " << name << ' ' << m.rows() << ' ' << m.cols() << '\n';
    for (Index i = 0; i < m.rows(); ++i) {
      for (Index j = 0; j < m.cols(); ++j) out_ << (j == 0 ? "" : " ") << fmt::format("{:.17g}", m(i, j));
      out_ << '\n';
    }
  }

 private:
  std::ofstream out_;
};

// Every fixture file (*.txt directly under `dir`), sorted by name.
inline std::vector<std::filesystem::path> list_fixtures(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> files;
  if (!std::filesystem::is_directory(dir)) return files;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ".txt") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

// Largest per-sample relative difference max_n |x_n - y_n| / max(|y_n|, floor) (Euclidean norms
// over dimensions): the agreement measure of reference_test.cpp, made scale-free.
inline double max_relative_difference(const Batch& x, const Batch& reference, double floor = 1e-300) {
  if (x.rows() != reference.rows() || x.cols() != reference.cols())
    throw std::invalid_argument("max_relative_difference: shapes differ");
  double worst = 0.0;
  for (Index n = 0; n < x.rows(); ++n) {
    const double diff = (x.row(n) - reference.row(n)).matrix().norm();
    const double size = std::max(reference.row(n).matrix().norm(), floor);
    worst = std::max(worst, diff / size);
  }
  return worst;
}

}  // namespace diffode::testing

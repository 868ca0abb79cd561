#include "experiments/sweep/store.hpp"

#include "experiments/run/hdf5_file.hpp"
#include "experiments/run/metrics.hpp"
#include "experiments/run/provenance.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <unistd.h>

namespace diffode {
namespace {

// Summary columns that are strings, stored as attributes of a run's group; their widths in the table.
struct TextColumn {
  const char* name;
  std::size_t width;
};
constexpr TextColumn kTextColumns[] = {{"id", 16},      {"task", 16},        {"problem", 32}, {"sampler", 32},
                                       {"variant", 96}, {"schedule", 24},    {"final_step", 16},
                                       {"status", 8},   {"failure", 128}};

std::string part_name(const std::string& id) { return id + ".h5"; }

// The attributes and datasets of a run, under `group` of `file`.
void write_run(Hdf5File& file, const std::string& group, const RunSpec& run, const RunOutcome& outcome) {
  file.create_group(group);
  file.write_attribute(group, "index", static_cast<double>(run.index));
  file.write_attribute(group, "config", run.canonical);
  const std::map<std::string, std::string> text{{"id", run.id},
                                                {"task", outcome.task},
                                                {"problem", run.problem},
                                                {"sampler", outcome.sampler},
                                                {"variant", run.variant},
                                                {"schedule", outcome.schedule},
                                                {"final_step", outcome.final_step},
                                                {"status", outcome.ok ? "ok" : "failed"},
                                                {"failure", outcome.failure}};
  for (const auto& [key, value] : text) file.write_attribute(group, key, value);
  file.write_attribute(group, "steps", static_cast<double>(outcome.steps));
  file.write_attribute(group, "seed", static_cast<double>(outcome.seed));
  file.write_attribute(group, "stochastic", outcome.stochastic ? 1.0 : 0.0);
  file.write_attribute(group, "noise", outcome.stochastic ? outcome.noise : std::string("none"));
  if (!outcome.model.empty()) write_model_provenance(file, group, outcome.model);
  for (std::size_t i = 0; i < kRunMetrics.size(); ++i) file.write_attribute(group, kRunMetrics[i], outcome.metrics[i]);
  // The metrics named by the config: each an attribute, their names listed in named_metrics.
  std::string names;
  for (const auto& [name, value] : outcome.named_metrics) {
    file.write_attribute(group, name, value);
    names += (names.empty() ? "" : ",") + name;
  }
  if (!names.empty()) file.write_attribute(group, "named_metrics", names);
  for (const auto& [key, value] : outcome.notes) file.write_attribute(group, key, value);
  if (outcome.samples.size() > 0) {
    file.write_matrix(group + "/samples", outcome.samples);
    file.write_matrix(group + "/initial", outcome.initial);
    if (!outcome.labels.empty()) file.write_int64_vector(group + "/labels", outcome.labels);
  }
}

void replace_atomically(const std::filesystem::path& temporary, const std::filesystem::path& target) {
  std::filesystem::rename(temporary, target);  // rename(2): atomic on one file system
}

}  // namespace

SweepStore::SweepStore(std::filesystem::path output) : output_(std::move(output)) {}

std::filesystem::path SweepStore::parts_folder() const { return output_.string() + ".parts"; }

std::set<std::string> SweepStore::finished(bool failed) const {
  std::set<std::string> ids;
  if (std::filesystem::exists(output_)) {
    const Hdf5File file(output_, Hdf5File::Mode::read);
    for (const auto& id : file.members("runs"))
      if (failed || file.read_string_attribute("runs/" + id, "status") == "ok") ids.insert(id);
  }
  if (std::filesystem::exists(parts_folder()))
    for (const auto& entry : std::filesystem::directory_iterator(parts_folder())) {
      if (entry.path().extension() != ".h5") continue;
      if (failed || Hdf5File(entry.path(), Hdf5File::Mode::read).read_string_attribute("run", "status") == "ok")
        ids.insert(entry.path().stem().string());
    }
  return ids;
}

void SweepStore::save(const RunSpec& run, const RunOutcome& outcome) const {
  std::filesystem::create_directories(parts_folder());
  const auto target = parts_folder() / part_name(run.id);
  // The temporary name carries the process id: ranks never share one.
  const auto temporary = parts_folder() / fmt::format("{}.{}.tmp", run.id, ::getpid());
  try {
    Hdf5File part(temporary, Hdf5File::Mode::create);
    write_run(part, "run", run, outcome);
    if (outcome.mixture_means.size() > 0) {
      part.write_matrix("mixture/weights", outcome.mixture_weights);
      part.write_matrix("mixture/means", outcome.mixture_means);
      part.write_matrix("mixture/variances", outcome.mixture_variances);
      part.write_attribute("mixture", "alpha_end", outcome.alpha_end);
      part.write_attribute("mixture", "sigma_end", outcome.sigma_end);
    }
    part.close();  // a part that could not be written out is never renamed into place
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(temporary, ec);
    throw;
  }
  replace_atomically(temporary, target);
}

namespace {

// The summary table's columns, one entry per finished run in the sweep's order.
struct SummaryColumns {
  std::map<std::string, std::vector<std::string>> text;
  std::vector<std::int64_t> index, steps, seed, stochastic;
  std::vector<std::vector<double>> metrics = std::vector<std::vector<double>>(kRunMetrics.size());
  // The config-named metrics (fd_pixels, ...), in order of first appearance; NaN where a run has none.
  std::vector<std::string> named;
  std::map<std::string, std::vector<double>> named_values;

  void add(const Hdf5File& out, const std::string& group, Index run_index) {
    for (const auto& column : kTextColumns) text[column.name].push_back(out.read_string_attribute(group, column.name));
    index.push_back(run_index);
    steps.push_back(static_cast<std::int64_t>(out.read_double_attribute(group, "steps")));
    seed.push_back(static_cast<std::int64_t>(out.read_double_attribute(group, "seed")));
    stochastic.push_back(static_cast<std::int64_t>(out.read_double_attribute(group, "stochastic")));
    // A metric added after a run was stored reads as not computed.
    for (std::size_t i = 0; i < kRunMetrics.size(); ++i)
      metrics[i].push_back(out.has_attribute(group, kRunMetrics[i]) ? out.read_double_attribute(group, kRunMetrics[i])
                                                                    : std::numeric_limits<double>::quiet_NaN());
    const std::size_t row = index.size() - 1;
    if (out.has_attribute(group, "named_metrics")) {
      const std::string list = out.read_string_attribute(group, "named_metrics");
      for (std::size_t begin = 0; begin <= list.size();) {
        const std::size_t end = std::min(list.find(',', begin), list.size());
        const std::string name = list.substr(begin, end - begin);
        begin = end + 1;
        if (name.empty()) continue;
        auto [it, fresh] = named_values.try_emplace(name);
        if (fresh) named.push_back(name);
        it->second.resize(row, std::numeric_limits<double>::quiet_NaN());
        it->second.push_back(out.read_double_attribute(group, name));
      }
    }
  }

  void write(Hdf5File& out) {
    std::vector<TableColumn> columns;
    columns.push_back({"index", index});
    for (const auto& column : kTextColumns) {
      columns.push_back({column.name, text[column.name], column.width});
      if (std::string_view(column.name) == "final_step") {
        columns.push_back({"steps", steps});
        columns.push_back({"seed", seed});
        columns.push_back({"stochastic", stochastic});
      }
    }
    for (std::size_t i = 0; i < kRunMetrics.size(); ++i) columns.push_back({kRunMetrics[i], metrics[i]});
    for (const auto& name : named) {
      named_values[name].resize(index.size(), std::numeric_limits<double>::quiet_NaN());
      columns.push_back({name, named_values[name]});
    }
    out.write_table("summary", columns);
  }
};

// Orders along the steps axis: per (problem, variant, metric), error against NFE over the finished
// ok runs, written as the /orders table.
void write_orders(Hdf5File& out, SummaryColumns& c) {
  struct Series {
    std::vector<double> nfe, error;
  };
  using Key = std::tuple<std::string, std::string, std::string>;
  std::map<Key, Series> series;
  std::vector<Key> order;  // first appearance
  for (std::size_t r = 0; r < c.index.size(); ++r) {
    if (c.text["status"][r] != "ok") continue;
    for (const char* metric : {"error_rms", "error_median", "strong_error", "strong_error_median", "ll_error"}) {
      std::size_t m = 0;
      while (std::string_view(kRunMetrics[m]) != metric) ++m;
      if (!std::isfinite(c.metrics[m][r])) continue;
      const Key key = std::make_tuple(c.text["problem"][r], c.text["variant"][r], std::string(metric));
      auto [it, fresh] = series.try_emplace(key);
      if (fresh) order.push_back(key);
      it->second.nfe.push_back(c.metrics[0][r]);
      it->second.error.push_back(c.metrics[m][r]);
    }
  }
  std::vector<std::string> problem, variant, metric;
  std::vector<double> value, nfe_min, nfe_max;
  std::vector<std::int64_t> points;
  for (const auto& key : order) {
    const Series& s = series[key];
    if (s.nfe.size() < 2) continue;
    const OrderFit fit = fit_order(s.nfe, s.error);
    problem.push_back(std::get<0>(key));
    variant.push_back(std::get<1>(key));
    metric.push_back(std::get<2>(key));
    value.push_back(fit.order);
    points.push_back(fit.points);
    nfe_min.push_back(*std::min_element(s.nfe.begin(), s.nfe.end()));
    nfe_max.push_back(*std::max_element(s.nfe.begin(), s.nfe.end()));
  }
  out.write_table("orders", {{"problem", problem, 32},
                             {"variant", variant, 96},
                             {"metric", metric, 24},
                             {"order", value},
                             {"points", points},
                             {"nfe_min", nfe_min},
                             {"nfe_max", nfe_max}});
}

}  // namespace

void SweepStore::assemble(const SweepPlan& plan, const Provenance& provenance, bool complete) const {
  const auto temporary = std::filesystem::path(output_.string() + ".tmp");
  std::optional<Hdf5File> previous;
  if (std::filesystem::exists(output_)) previous.emplace(output_, Hdf5File::Mode::read);
  try {
    Hdf5File out(temporary, Hdf5File::Mode::create);
    write_provenance(out, provenance);
    out.write_attribute("/", "schema", "diffode-sweep/1");
    out.write_attribute("/", "name", plan.name);
    out.write_attribute("/", "config", plan.text);
    out.write_attribute("/", "finished", complete ? "true" : "false");
    out.create_group("runs");
    SummaryColumns columns;
    for (const RunSpec& run : plan.runs) {
      const std::string group = "runs/" + run.id, mixture = "mixtures/" + run.problem;
      const auto part_path = parts_folder() / part_name(run.id);
      if (std::filesystem::exists(part_path)) {
        const Hdf5File part(part_path, Hdf5File::Mode::read);
        out.copy_from(part, "run", group);
        if (part.has("mixture") && !out.has(mixture)) out.copy_from(part, "mixture", mixture);
      } else if (previous && previous->has(group)) {
        out.copy_from(*previous, group, group);
        if (previous->has(mixture) && !out.has(mixture)) out.copy_from(*previous, mixture, mixture);
      } else {
        continue;  // not run yet
      }
      columns.add(out, group, run.index);
    }
    columns.write(out);
    write_orders(out, columns);
    out.close();  // written out whole, or the earlier file stays
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(temporary, ec);
    throw;
  }
  previous.reset();
  replace_atomically(temporary, output_);
}

void SweepStore::remove_parts() const { std::filesystem::remove_all(parts_folder()); }

}  // namespace diffode

#include "experiments/sweep/plan.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <sstream>

namespace diffode {
namespace {

std::string join_path(const std::string& prefix, std::string_view key) {
  return prefix.empty() ? std::string(key) : fmt::format("{}.{}", prefix, key);
}

int line_of(const toml::node& node) { return static_cast<int>(node.source().begin.line); }

// Records the line of every key under `table` (prefix is the table's own path).
void record_lines(const toml::table& table, const std::string& prefix, SourceLines& lines) {
  for (const auto& [key, node] : table) {
    const std::string path = join_path(prefix, key.str());
    lines[path] = line_of(node);
    if (const auto* sub = node.as_table()) record_lines(*sub, path, lines);
  }
}

// The axes under [sweep.product] or [sweep.zip]: every array, at any depth of dotted keys.
void collect_axes(const toml::table& table, const std::string& prefix, bool zipped, int block, const std::string& file,
                  std::vector<SweepAxis>& axes) {
  for (const auto& [key, node] : table) {
    const std::string path = join_path(prefix, key.str());
    if (const auto* sub = node.as_table()) {
      collect_axes(*sub, path, zipped, block, file, axes);
      continue;
    }
    const auto* array = node.as_array();
    const std::string where = fmt::format("{}:{}: sweep.{}.\"{}\"", file, line_of(node), zipped ? "zip" : "product", path);
    if (!array) throw ConfigError(where + ": expected an array of values for this axis");
    if (array->empty()) throw ConfigError(where + ": an axis needs at least one value");
    SweepAxis axis{.key = path, .values = {}, .line = line_of(node), .zipped = zipped, .block = block};
    for (const auto& value : *array) axis.values.push_back(&value);
    axes.push_back(std::move(axis));
  }
}

// Sets `value` at the dotted `path` of `root`, creating tables on the way; a table value replaces
// what was there. Keeps `lines` in step: the old subtree's lines go, the value's come.
void assign(toml::table& root, const std::string& path, const toml::node& value, SourceLines& lines, const std::string& file,
            int axis_line) {
  toml::table* table = &root;
  std::size_t start = 0;
  for (std::size_t dot; (dot = path.find('.', start)) != std::string::npos; start = dot + 1) {
    const std::string part = path.substr(start, dot - start);
    const std::string prefix = path.substr(0, dot);
    toml::node* next = table->get(part);
    if (!next) {
      next = &table->insert_or_assign(part, toml::table{}).first->second;
      lines[prefix] = line_of(value);  // a table the axis makes: its messages point at the axis
    }
    if (!next->is_table()) {
      // A run config's tables are one level deep: where a top-level name holds a value ("grid = 1")
      // that value is at fault, where it was given; a key inside a table ("run.samples") is no
      // table, and the axis reaches too deep.
      const auto given = lines.find(prefix);
      if (prefix.find('.') == std::string::npos && given != lines.end())
        throw ConfigError(fmt::format("{}:{}: {}: expected a table (the sweep axis \"{}\" at line {} sets a key in it)", file, given->second,
                                      prefix, path, axis_line));
      throw ConfigError(fmt::format("{}:{}: sweep axis \"{}\": {} is a value, not a table", file, axis_line, path, prefix));
    }
    table = next->as_table();
  }
  const std::string leaf = path.substr(start);
  std::erase_if(lines, [&](const auto& entry) { return entry.first.starts_with(path + "."); });
  value.visit([&](const auto& v) { table->insert_or_assign(leaf, v); });
  lines[path] = line_of(value);
  if (const auto* sub = value.as_table()) record_lines(*sub, path, lines);
}

// The keys along which a series converges (one line of a plot, an order fitted along it): they are
// left out of a run's variant.
bool is_convergence_axis(std::string_view key) {
  return key == "grid.steps" || key == "likelihood.steps" || key == "likelihood.rtol" || key == "likelihood.atol";
}

std::string format_value(const toml::node& node, std::string_view table_key = "") {
  if (const auto* s = node.as_string()) return s->get();
  std::ostringstream out;
  if (const auto* t = node.as_table()) {
    // A table axis value: its name first, then its other keys but those along which runs converge.
    std::string text;
    if (const auto* name = t->get_as<std::string>("name")) text = name->get();
    if (const auto* solver = t->get_as<std::string>("solver")) text = solver->get();
    if (const auto* schedule = t->get_as<std::string>("schedule")) text = schedule->get();
    for (const auto& [key, value] : *t) {
      if (key.str() == "name" || key.str() == "solver" || key.str() == "schedule" || is_convergence_axis(fmt::format("{}.{}", table_key, key.str()))) continue;
      text += fmt::format("{}{}={}", text.empty() ? "" : " ", key.str(), format_value(value));
    }
    return text;
  }
  if (const auto* f = node.as_floating_point()) return fmt::format("{}", f->get());  // shortest round trip
  node.visit([&](const auto& v) { out << toml::toml_formatter(v, toml::format_flags::none); });
  return out.str();
}

std::string string_at(const toml::table& root, std::string_view path, std::string fallback) {
  const auto view = root.at_path(path);
  if (const auto* s = view.as_string()) return s->get();
  return fallback;
}

std::string problem_label(const toml::table& root) {
  std::string model = string_at(root, "model.preset", "");
  if (model.empty()) {
    if (root.at_path("model.file")) model = std::filesystem::path(string_at(root, "model.file", "")).stem().string();
    else if (root.at_path("model.weights")) model = "custom";
    else model = "ring2d";
  }
  return fmt::format("{}/{}", string_at(root, "process.name", "edm"), model);
}

}  // namespace

std::string content_id(std::string_view text) {
  std::uint64_t hash = 14695981039346656037ull;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return fmt::format("{:016x}", hash);
}

const TableSchema& sweep_schema() {
  static const TableSchema s{
      "sweep",
      "what a sweep varies: lists of values for any key of the run config (dotted paths, e.g. \"grid.steps\")",
      {string_key("name", "the sweep's name").optional("the config file's stem"),
       string_key("output", "the results file").optional("[run] output, else results/<name>.h5"),
       table_key("product", "axes crossed into every combination, the first axis outermost; [[sweep.product]]: blocks one after the other")
           .optional("none"),
       table_key("zip", "axes advanced together (equal lengths), one factor of every block").optional("none")}};
  return s;
}

namespace {

// [sweep]: name and output, and the axes of [sweep.product] (one block, or [[sweep.product]]
// several, whose runs follow each other) and [sweep.zip] (joining every block). Returns the number
// of blocks.
int read_sweep_table(const Config& config, SweepPlan& plan) {
  ConfigTable sweep = config.root().table("sweep", sweep_schema());
  if (const auto found = sweep.undeclared(sweep_schema().key_names()); !found.empty()) throw ConfigError(found.front().second);
  plan.name = sweep.string("name", std::filesystem::path(plan.file).stem().string());
  if (plan.name.empty() || plan.name.size() > 200 || plan.name.find('/') != std::string::npos)
    sweep.fail("name", "must be 1 to 200 characters without '/' (it names the results file)");
  const auto run_output = config.table().at_path("run.output").value<std::string>();
  plan.output = sweep.string("output", run_output ? *run_output : fmt::format("results/{}.h5", plan.name));
  if (plan.output.empty()) {
    if (sweep.has("output")) sweep.fail("output", "must name a file");
    config.root().table("run").fail("output", "must name a file (it is the sweep's output: [sweep] has none)");
  }
  int blocks = 1;
  if (sweep.has("product")) {
    const toml::node* node = sweep.node("product");
    if (const auto* array = node->as_array()) {
      blocks = static_cast<int>(array->size());
      for (int b = 0; b < blocks; ++b) {
        const auto* block = array->get(b)->as_table();
        if (!block) sweep.fail("product", "expected a table or an array of tables");
        collect_axes(*block, "", false, b, plan.file, plan.axes);
      }
    } else {
      sweep.table("product");  // type-checks it and marks it read
      collect_axes(*node->as_table(), "", false, 0, plan.file, plan.axes);
    }
  }
  if (sweep.has("zip")) {
    sweep.table("zip");
    collect_axes(*config.table().at_path("sweep.zip").as_table(), "", true, -1, plan.file, plan.axes);
  }
  sweep.finish();
  return blocks;
}

// "file:line: sweep.product."key"" for messages about an axis.
std::string axis_where(const SweepPlan& plan, const SweepAxis& axis) {
  return fmt::format("{}:{}: sweep.{}.\"{}\"", plan.file, axis.line, axis.zipped ? "zip" : "product", axis.key);
}

// Axes in file order; none under [sweep], none given twice in a block, zipped ones of equal length.
void check_axes(SweepPlan& plan) {
  std::stable_sort(plan.axes.begin(), plan.axes.end(), [](const SweepAxis& a, const SweepAxis& b) { return a.line < b.line; });
  for (const auto& axis : plan.axes) {
    const std::string where = axis_where(plan, axis);
    if (axis.key == "sweep" || axis.key.starts_with("sweep.")) throw ConfigError(where + ": the [sweep] table cannot be swept");
    if (axis.values.empty()) throw ConfigError(where + ": lists no values: the sweep would have no runs");
    for (const auto& other : plan.axes) {
      if (&other == &axis || (axis.block != other.block && axis.block >= 0 && other.block >= 0)) continue;
      // A table axis and axes under it may meet (the table is set first, then its keys).
      if (axis.key == other.key) throw ConfigError(fmt::format("{}: also given at line {}", where, other.line));
    }
    // A value given twice would make two runs of the same config (a zipped axis may repeat a value
    // beside different values of the others).
    std::set<std::string> seen;
    for (const toml::node* value : axis.zipped ? std::vector<const toml::node*>{} : axis.values) {
      std::ostringstream text;
      value->visit([&](const auto& v) { text << toml::toml_formatter(v, toml::format_flags::none); });
      if (!seen.insert(text.str()).second)
        throw ConfigError(fmt::format("{}: the value {} is given twice (two runs would be the same)", where, text.str()));
    }
  }
  const SweepAxis* first_zipped = nullptr;
  for (const auto& axis : plan.axes) {
    if (!axis.zipped) continue;
    if (!first_zipped) first_zipped = &axis;
    if (axis.values.size() != first_zipped->values.size())
      throw ConfigError(fmt::format("{}:{}: sweep.zip.\"{}\" has {} values, sweep.zip.\"{}\" {}: zipped axes need equal lengths", plan.file,
                                    axis.line, axis.key, axis.values.size(), first_zipped->key, first_zipped->values.size()));
  }
}

using Factors = std::vector<std::vector<const SweepAxis*>>;

// Per block, the factors of its product: each product axis alone, and the zipped axes together at
// the place of the first of them. Refuses more than 10^6 runs.
std::vector<Factors> block_factors(const SweepPlan& plan, int blocks) {
  std::vector<Factors> all(blocks);
  std::size_t total = 0;
  for (int b = 0; b < blocks; ++b) {
    auto& factors = all[b];
    bool zip_placed = false;
    for (const auto& axis : plan.axes) {
      if (!axis.zipped && axis.block == b) {
        factors.push_back({&axis});
      } else if (axis.zipped && !zip_placed) {
        zip_placed = true;
        factors.emplace_back();
        for (const auto& z : plan.axes)
          if (z.zipped) factors.back().push_back(&z);
      }
    }
    std::size_t count = 1;
    for (const auto& f : factors) {
      count *= f.front()->values.size();
      if (count > 1000000 || total + count > 1000000)
        throw ConfigError(axis_where(plan, *f.front()) + ": with this axis the sweep expands to more than 10^6 runs");
    }
    total += count;
    if (total > 1000000) throw ConfigError(fmt::format("{}: sweep.product: the sweep expands to more than 10^6 runs", plan.file));
  }
  return all;
}

// What an axis value adds to the run's variant label ("" for none).
std::string variant_text(const SweepAxis& axis, const toml::node& value) {
  // The process's name and the model make the problem; other process settings (sigma_min, ...) are
  // part of the variant. Seeds are replicates of one variant (plots average them, orders fit
  // through them all).
  const bool problem_axis = axis.key == "process.name" || axis.key == "model" || axis.key.starts_with("model.");
  // An axis of grid files (e.g. tuned grids, one per NFE budget) is the listed grids' steps axis:
  // the grids of one family make one line.
  if (problem_axis || is_convergence_axis(axis.key) || axis.key == "grid.file" || axis.key == "run.seed" || axis.key == "sampler.name" ||
      axis.key == "likelihood.solver")
    return "";
  std::string text = format_value(value, axis.key);
  if (axis.key == "sampler" || axis.key == "likelihood") {
    // The name leads the variant anyway (make_run); keep the options.
    const auto* t = value.as_table();
    const auto* name = t ? t->get_as<std::string>(axis.key == "sampler" ? "name" : "solver") : nullptr;
    if (name && text.starts_with(name->get())) text = text.substr(name->get().size());
    if (!text.empty() && text.front() == ' ') text.erase(0, 1);
  } else if (!value.is_table() && !axis.key.ends_with(".schedule") && !axis.key.ends_with(".final_step")) {
    text = fmt::format("{}={}", axis.key.substr(axis.key.rfind('.') + 1), text);
  }
  return text;
}

// The run for one choice of every factor's value.
RunSpec make_run(const SweepPlan& plan, const toml::table& base, const SourceLines& base_lines, const Factors& factors,
                 const std::vector<std::size_t>& choice) {
  auto resolved = std::make_shared<toml::table>(base);
  auto lines = std::make_shared<SourceLines>(base_lines);
  // Shallower keys first: a table axis ("likelihood") before the axes under it ("likelihood.time").
  std::vector<std::pair<const SweepAxis*, std::size_t>> settings;
  for (std::size_t k = 0; k < factors.size(); ++k)
    for (const SweepAxis* axis : factors[k]) settings.emplace_back(axis, choice[k]);
  std::stable_sort(settings.begin(), settings.end(), [](const auto& a, const auto& b) {
    return std::count(a.first->key.begin(), a.first->key.end(), '.') < std::count(b.first->key.begin(), b.first->key.end(), '.');
  });
  std::vector<std::string> variant;
  for (const auto& [axis, chosen] : settings) {
    const toml::node& value = *axis->values[chosen];
    assign(*resolved, axis->key, value, *lines, plan.file, axis->line);
    if (std::string text = variant_text(*axis, value); !text.empty()) variant.push_back(std::move(text));
  }
  RunSpec run;
  run.index = static_cast<Index>(plan.runs.size());
  const bool likelihood = string_at(*resolved, "run.task", "sample") == "likelihood";
  run.variant = likelihood ? string_at(*resolved, "likelihood.solver", "dopri5") : string_at(*resolved, "sampler.name", "?");
  for (auto& v : variant) run.variant += " " + v;
  run.problem = problem_label(*resolved);
  std::ostringstream canonical;
  canonical << toml::toml_formatter(*resolved, toml::format_flags::none);
  run.canonical = canonical.str();
  run.id = content_id(run.canonical);
  run.config = std::move(resolved);
  run.lines = std::move(lines);
  return run;
}

}  // namespace

SweepPlan plan_sweep(const Config& config) {
  SweepPlan plan;
  plan.file = config.name();
  plan.text = config.text();
  const int blocks = read_sweep_table(config, plan);
  check_axes(plan);
  const std::vector<Factors> factors_of = block_factors(plan, blocks);
  toml::table base = config.table();
  base.erase("sweep");
  SourceLines base_lines;
  record_lines(config.table(), "", base_lines);  // the copy `base` has no source regions
  std::map<std::string, Index> ids;
  for (const Factors& factors : factors_of) {
    std::size_t count = 1;
    for (const auto& f : factors) count *= f.front()->values.size();
    std::vector<std::size_t> choice(factors.size(), 0);
    for (std::size_t n = 0; n < count; ++n) {
      // Mixed-radix count, the last factor fastest.
      for (std::size_t k = factors.size(), rest = n; k-- > 0;) {
        choice[k] = rest % factors[k].front()->values.size();
        rest /= factors[k].front()->values.size();
      }
      RunSpec run = make_run(plan, base, base_lines, factors, choice);
      if (auto [it, fresh] = ids.emplace(run.id, run.index); !fresh)
        throw ConfigError(fmt::format("{}: runs {} and {} of the sweep resolve to the same config (a repeated axis value?)", plan.file,
                                      it->second, run.index));
      plan.runs.push_back(std::move(run));
    }
  }
  return plan;
}

}  // namespace diffode
